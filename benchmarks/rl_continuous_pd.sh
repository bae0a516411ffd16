#!/usr/bin/env bash
# PD vs PD + DA for continuous actions (benchmarks/results/rl_continuous.md, "PD vs PD + DA"), 3 seeds each, with a
# ~1 % and a ~10 % MLP student of a committed teacher:
#   bash benchmarks/rl_continuous_pd.sh pendulum   # SAC teacher teachers/rl/classic_control/sac/Pendulum-v1_1; hidden 4 / 18
#   bash benchmarks/rl_continuous_pd.sh hopper     # PPO teacher teachers/rl/mujoco/ppo/Hopper-v5_1;            hidden 8 / 34
# The teacher (and, for the table's normalised score, uniformly random play) is measured once on the students'
# final-evaluation seeds and its score given to every run. JOBS runs at a time, one torch thread each; then
# benchmarks/rl_continuous_table.py prints the table (relative and normalised scores, Welch t).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TASK=${1:?usage: rl_continuous_pd.sh pendulum|hopper}
OUT=${OUT:-runs/bench_rl_continuous}
JOBS=${JOBS:-3}
SEEDS=${SEEDS:-"0 1 2"}
EXTRA=${EXTRA:-}  # more overrides for every run, e.g. "optim.epochs=3"
case "$TASK" in
  pendulum) SUITE=classic_control GAME=Pendulum TEACHER=teachers/rl/classic_control/sac/Pendulum-v1_1
            CONFIG=pendulum SIZES="4 18" EPISODES=100 ;;
  hopper)   SUITE=mujoco GAME=Hopper TEACHER=teachers/rl/mujoco/ppo/Hopper-v5_1
            CONFIG=mujoco_hopper SIZES="8 34" EPISODES=30 ;;
  *) echo "unknown task $TASK (pendulum or hopper)" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
for eps in 0 1; do  # the teacher, and uniformly random actions (epsilon 1) for the normalised score
  $PY -m socratic rl evaluate "$TEACHER" --suite "$SUITE" --game "$GAME" --episodes "$EPISODES" --seed 1 \
      --epsilon "$eps" --json "$OUT/${TASK}_eval_eps$eps.json" > /dev/null
done
SCORE=$($PY -c "import json; print(json.load(open('$OUT/${TASK}_eval_eps0.json'))['mean'])")
echo "teacher score ($EPISODES episodes): $SCORE"
run() {  # method hidden seed
  $PY -m socratic rl distill "configs/rl/${CONFIG}_$1.yaml" "name=${TASK}_$1_h$2" "student.hidden=$2" "seed=$3" \
      "teacher.checkpoint=$TEACHER" "output_dir=$OUT" "eval.teacher_score=$SCORE" eval.teacher_episodes=0 \
      runtime.num_threads=1 runtime.progress=false runtime.tensorboard=false $EXTRA --overwrite \
      > "$OUT/${TASK}_$1_h$2_seed$3.log" 2>&1
}
for seed in $SEEDS; do
  for hidden in $SIZES; do
    for method in pd pd_da; do
      while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
      run "$method" "$hidden" "$seed" &
    done
  done
done
wait
$PY benchmarks/rl_continuous_table.py "$OUT" "$TASK"
