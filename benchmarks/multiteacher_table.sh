#!/usr/bin/env bash
# CPU-scale comparison of multi-teacher weightings (MTKD-RL paper, Table 1 style) on CIFAR-10-JPEG with the pool
# resnet20 + wrn_16_2 + resnet14 (committed teachers): student from scratch, AVER (KD), AVER (KD+FitNet), EB-KD,
# CA-MKD, AEKD and MTKD-RL, seeds 0..2, for one student. Each run logs epoch_time and peak_memory_mb per epoch.
# CPU budget: a fixed stratified 5,000-image training subset (subset_seed 0) and 3 epochs; full test set; fp32
# (bf16 autocast is emulated, ~9x slower, on CPUs without AVX-512).
#   bash benchmarks/multiteacher_table.sh resnet8          # then: socratic report runs/mt_table
#   bash benchmarks/multiteacher_table.sh wrn_16_1
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
student=$1
shift
dir=configs/cifar10_jpeg/multiteacher
common=(output_dir=runs/mt_table optim.epochs=3 data.train_subset=5000 runtime.num_threads=1 runtime.precision=fp32
        runtime.progress=false
        "student.name=$student")
for seed in ${SEEDS:-0 1 2}; do  # SEEDS="2" runs one seed (e.g. in a second process)
  $PY -m socratic train "configs/cifar10_jpeg/students/$student.yaml" "seed=$seed" "${common[@]}" "$@"
  $PY -m socratic distill "$dir/aver_pool3_resnet8.yaml" "seed=$seed" "${common[@]}" \
      "name=aver_kd_pool3_$student" method.feature_loss=false "$@"
  for method in aver ebkd camkd aekd mtkd_rl; do
    $PY -m socratic distill "$dir/${method}_pool3_resnet8.yaml" "seed=$seed" "${common[@]}" \
        "name=${method}_pool3_$student" "$@"
  done
done
