#!/usr/bin/env bash
# Adaptive DA (da.select: only that fraction of a perturbed batch is moved, the samples of largest disagreement
# on the clean batch) on the CPU budget of benchmarks/da_table1.sh: resnet20 -> resnet8 on CIFAR-10-JPEG, the
# committed teacher, a fixed stratified 10,000-image subset, 8 epochs, fp32, one torch thread per run.
# The runs land next to da_table1.sh's (runs/da_table1), so one `socratic report` compares them with KD and full DA.
#   bash benchmarks/da_select.sh                        # select 0.25 and 0.5, seeds 0..2
#   SEEDS="0" SELECTS="0.5" bash benchmarks/da_select.sh
#   CHECK_KD=0 bash benchmarks/da_select.sh             # also re-run KD at seed 0 (does the code reproduce the table?)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
common=(output_dir=runs/da_table1 optim.epochs=8 data.train_subset=10000 runtime.num_threads=1 runtime.precision=fp32
        runtime.progress=false)
for seed in ${SEEDS:-0 1 2}; do
  if [[ "${CHECK_KD:-}" == "$seed" ]]; then
    $PY -m socratic distill configs/cifar10_jpeg/kd/resnet20_resnet8.yaml "seed=$seed" name=kd_check_resnet20_resnet8 \
        "${common[@]}" "$@"
  fi
  for select in ${SELECTS:-0.25 0.5}; do
    $PY -m socratic distill configs/cifar10_jpeg/da/resnet20_resnet8.yaml "seed=$seed" "da.select=$select" \
        "name=da_select${select}_resnet20_resnet8" "${common[@]}" "$@"
  done
done
