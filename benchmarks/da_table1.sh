#!/usr/bin/env bash
# CPU-scale version of the DA paper's Table 1 (Wong et al.) on CIFAR-10-JPEG with the committed teachers:
# student from scratch, KD and KD+DA (the paper's DA values) for one teacher->student pair, seeds 0..2.
# CPU budget: a fixed stratified 10,000-image training subset (data.subset_seed 0, the same for every run)
# and 8 epochs instead of 50,000 images and 240 epochs; evaluation on the full 10,000-image test set. fp32: bf16
# autocast is emulated (~9x slower) on CPUs without AVX-512, such as the AVX2 machine these results come from.
#   bash benchmarks/da_table1.sh resnet20 resnet8        # then: socratic report runs/da_table1
#   bash benchmarks/da_table1.sh wrn_16_2 wrn_16_1
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
teacher=$1 student=$2
shift 2
common=(output_dir=runs/da_table1 optim.epochs=8 data.train_subset=10000 runtime.num_threads=1 runtime.precision=fp32
        runtime.progress=false)
for seed in ${SEEDS:-0 1 2}; do  # SEEDS="2" runs one seed (e.g. in a second process)
  $PY -m socratic train "configs/cifar10_jpeg/students/$student.yaml" "seed=$seed" "${common[@]}" "$@"
  $PY -m socratic distill "configs/cifar10_jpeg/kd/${teacher}_$student.yaml" "seed=$seed" "${common[@]}" "$@"
  $PY -m socratic distill "configs/cifar10_jpeg/da/${teacher}_$student.yaml" "seed=$seed" "${common[@]}" "$@"
done
