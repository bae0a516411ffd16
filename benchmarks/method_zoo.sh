#!/usr/bin/env bash
# The single-teacher method zoo at CPU scale: CIFAR-10-JPEG, the committed resnet20 teacher -> resnet8, the budget
# of benchmarks/da_table1.sh (the same stratified 10,000-image training subset, data.subset_seed 0, 8 epochs, fp32,
# one torch thread per run; evaluation on the full 10,000-image test set). Each method runs its shipped
# configs/cifar10_jpeg/<method>/resnet20_resnet8.yaml; warm-ups and ramps written for those configs' 15 epochs are
# scaled to 8 (DKD warm-up 5 -> 3 epochs, CTKD lambda ramp 3 -> 2 epochs); CRD takes 4096 negatives (its 16384
# exceed the 9,000 images of the other classes in the subset). DML has no teacher, so no DA variant.
#   bash benchmarks/method_zoo.sh dkd dist kd_ls ctkd mlkd          # seeds 0..2; SEEDS="1" runs one seed
#   DA=1 bash benchmarks/method_zoo.sh dkd                          # the same with the DA paper's values (+da)
#   CACHE=1 bash benchmarks/method_zoo.sh dkd                       # teacher outputs replayed from runs/teacher_cache
#                                     (exact: the same numbers as without; the first run of a seed records them)
#   EXTRA="name=kd_again" ...                                        # more overrides for every run
#   SEEDS=0 bash benchmarks/method_zoo.sh kd                         # KD seed 0: must reproduce da_table1.md's
#   python benchmarks/method_zoo_table.py --collect runs/method_zoo --session S --commit C   # the table
#   python benchmarks/method_zoo_speed.py [--da]                     # s / step of every method, side by side
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/method_zoo}
common=(output_dir=$OUT optim.epochs=8 data.train_subset=10000 runtime.num_threads=1 runtime.precision=fp32
        runtime.progress=false)
# the paper's DA values, as configs/cifar10_jpeg/da/resnet20_resnet8.yaml
da=(da.enabled=true da.steps=1 da.lr=0.01778 da.prob=0.7374 da.objective=l1_mse da.optimizer=adam)
for method in "$@"; do
  extra=()
  case $method in
    dkd|dkd_ls) extra=(method.warmup_epochs=3) ;;
    ctkd) extra=(method.decay_loops=2) ;;
    crd) extra=(method.num_negatives=4096) ;;  # K = 16384 exceeds the 9,000 other-class images of the subset
  esac
  name=${method}_resnet20_resnet8
  if [[ -n ${DA:-} ]]; then extra+=("${da[@]}" "name=${name}_da"); fi
  if [[ -n ${CACHE:-} ]]; then extra+=(teacher_cache.enabled=true "teacher_cache.dir=${CACHE_DIR:-runs/teacher_cache}"); fi
  for seed in ${SEEDS:-0 1 2}; do
    $PY -m socratic distill "configs/cifar10_jpeg/$method/resnet20_resnet8.yaml" "seed=$seed" "${common[@]}" \
        ${extra[@]+"${extra[@]}"} ${EXTRA:-}
  done
done
