#!/usr/bin/env bash
# Optuna search over DA's steps, lr and prob (configs/search/da_paper.yaml: the paper's ranges, TPE + Hyperband)
# for KD + DA resnet20 -> resnet8 on CIFAR-10-JPEG, and the KD baseline of the same setting (seeds 0..2).
# CPU budget: a 5,000-image training subset, 6 epochs per trial, 8 trials. This study ran with min_resource 0.4 x 6 rounded to 2 epochs
# (the rounding is now upwards: 3).
#   bash benchmarks/search_da.sh          # results: runs/search_da/<study>/results.md and *.png
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
common=(output_dir=runs/search_da optim.epochs=6 data.train_subset=5000 runtime.num_threads=1 runtime.progress=false)
# The study ran with the configs' bf16 autocast (session 2's machine); the baselines below ran in fp32 on an AVX2 one.
baseline=(runtime.precision=fp32)
$PY -m socratic search configs/cifar10_jpeg/da/resnet20_resnet8.yaml configs/search/da_paper.yaml \
    --n-trials 8 --sampler-seed 0 "${common[@]}" "$@"
for seed in 0 1 2; do
  $PY -m socratic distill configs/cifar10_jpeg/kd/resnet20_resnet8.yaml "seed=$seed" "${common[@]}" "${baseline[@]}" "$@"
  $PY -m socratic distill configs/cifar10_jpeg/da/resnet20_resnet8.yaml "seed=$seed" "${common[@]}" "${baseline[@]}" "$@"
done
