#!/usr/bin/env bash
# Dual policy distillation (Lai et al. 2020) with DDPG and PPO peers against the same two learners trained alone,
# MuJoCo Hopper-v5 and HalfCheetah-v5 (TASKS=hopper runs one), seeds 0..2; table and learning curves:
#   bash benchmarks/rl_dpd_continuous.sh
#   python benchmarks/rl_dpd_continuous_table.py runs/rl_dpd_continuous --png-dir benchmarks/results/rl_continuous
# Reductions from configs/rl/mujoco_<task>_dpd_<learner>.yaml (the authors' settings), for the CPU budget of one
# session on a shared 2-core machine; the same for DPD and alone:
#   DDPG: ${DDPG_STEPS} (30,000) steps per learner instead of 500,000, rounds of 2,000 instead of 10,000;
#   PPO:  ${PPO_STEPS} (61,440) steps per learner instead of 10,000,000 (the paper: 20M for the pair), updates of
#         1,024 steps in minibatches of 64 instead of 2,048 in 32 (half the gradient steps per environment step,
#         twice the updates: 60 per learner, so 12 distillation steps at one per 5 updates), rounds of 5,120
#         (5 updates), learning rate 3e-4 (PPO's and so the distillation's) instead of the authors' 5e-5, which
#         barely moves a policy in 60 updates;
#   final score: each learner's best-round policy over 20 deterministic episodes instead of 100.
# SEEDS="2" LEARNERS=ppo runs a part (e.g. in a second process).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/rl_dpd_continuous}
DDPG_STEPS=${DDPG_STEPS:-30000}
PPO_STEPS=${PPO_STEPS:-61440}
common=(output_dir=$OUT eval.episodes_per_round=5 eval.final_episodes=20 runtime.progress=false runtime.num_threads=1)
ddpg=(ddpg.n_timesteps=$DDPG_STEPS dpd.round_steps=2000)
ppo=(ppo.n_timesteps=$PPO_STEPS ppo.n_steps=1024 ppo.batch_size=64 dpd.round_steps=5120 ppo.learning_rate=3e-4
     dpd.lr=3e-4)
for seed in ${SEEDS:-0 1 2}; do
  for task in ${TASKS:-hopper halfcheetah}; do
    for learner in ${LEARNERS:-ddpg ppo}; do
      config=configs/rl/mujoco_${task}_dpd_${learner}.yaml
      declare -n extra=$learner
      $PY -m socratic rl dpd "$config" "seed=$seed" "${common[@]}" "${extra[@]}" "$@"
      $PY -m socratic rl dpd "$config" "seed=$seed" "${common[@]}" "${extra[@]}" dpd.enabled=false \
          "name=mujoco_${task}_dpd_${learner}_alone" "$@"
    done
  done
done
