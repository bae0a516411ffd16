#!/usr/bin/env bash
# PD vs PD + DA on Hopper-v5 from the committed PPO teacher (teachers/rl/mujoco/ppo/Hopper-v5_1, trained by
# benchmarks/rl_continuous_teacher.py): ~1 % (hidden 8) and ~10 % (hidden 34) MLP students, 3 seeds each,
# relative score to the teacher, mean ± std, Welch t (benchmarks/results/rl_continuous.md, "PD vs PD + DA").
# The teacher is measured once (30 episodes, seed 1, the students' final-evaluation seeds) and its score given to
# every run. JOBS runs at a time, one torch thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/bench_rl_continuous}
JOBS=${JOBS:-3}
SEEDS=${SEEDS:-"0 1 2"}
mkdir -p "$OUT"
$PY -m socratic rl evaluate teachers/rl/mujoco/ppo/Hopper-v5_1 --suite mujoco --game Hopper --episodes 30 \
    --seed 1 --json "$OUT/teacher.json" > /dev/null
TEACHER=$($PY -c "import json; print(json.load(open('$OUT/teacher.json'))['mean'])")
echo "teacher score (30 episodes): $TEACHER"
run() {  # config hidden seed
  $PY -m socratic rl distill "configs/rl/mujoco_hopper_$1.yaml" "name=hopper_$1_h$2" "student.hidden=$2" "seed=$3" \
      "output_dir=$OUT" "eval.teacher_score=$TEACHER" eval.teacher_episodes=0 runtime.num_threads=1 \
      runtime.progress=false runtime.tensorboard=false --overwrite > "$OUT/hopper_$1_h$2_seed$3.log" 2>&1
}
for hidden in 8 34; do
  for seed in $SEEDS; do
    for method in pd pd_da; do
      while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
      run "$method" "$hidden" "$seed" &
    done
  done
done
wait
for hidden in 8 34; do
  $PY -m socratic rl report "$OUT"/hopper_pd_h"$hidden" "$OUT"/hopper_pd_da_h"$hidden" --baseline "hopper_pd_h$hidden" \
      --csv "$OUT/table_h$hidden.csv"
done
