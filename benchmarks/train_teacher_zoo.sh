#!/usr/bin/env bash
# Trains the CPU-scale teacher zoo with the project's own command, one teacher after the other.
# Each run lands in runs/zoo/<dataset>/<name>/seed0; tools/publish_teacher.py then copies it to teachers/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for config in configs/fashion_mnist/teachers/resnet20.yaml \
              configs/cifar10_jpeg/teachers/resnet20.yaml \
              configs/cifar10_jpeg/teachers/wrn_16_2.yaml; do
  dataset=$(basename "$(dirname "$(dirname "$config")")")
  $PY -m socratic train "$config" "output_dir=runs/zoo/$dataset" runtime.progress=false "$@"
done
