#!/usr/bin/env bash
# The DA paper's Figure 4 at CPU scale: top-1 of the KD and KD+DA students of benchmarks/da_table1.sh (seeds 0..2)
# and of their teacher on 1,000 CIFAR-10-JPEG test images (stratified, seed 0) perturbed by 0..10 DA steps
# (fresh Adam, lr 0.01778, l1_mse against each student in turn).
#   bash benchmarks/da_robustness.sh resnet20 resnet8     # -> benchmarks/results/da_robustness_resnet20_resnet8/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
teacher=$1 student=$2
students=()
for method in kd da; do
  for seed in 0 1 2; do
    students+=("runs/da_table1/${method}_${teacher}_$student/seed$seed/checkpoints/best.pt")
  done
done
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PY -m socratic robustness --teacher "teachers/cifar10_jpeg/$teacher/model.pt" \
    --students "${students[@]}" --steps 10 --limit 1000 --root ../shared/data/cifar10-jpeg \
    --out "benchmarks/results/da_robustness_${teacher}_$student"
