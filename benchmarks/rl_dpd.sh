#!/usr/bin/env bash
# Dual policy distillation (Lai et al. 2020) against the same two DQN learners trained alone, MinAtar Breakout,
# seeds 0..2, at the config's distillation lr (1e-5) and at the authors' (1e-4); each learner's best network is
# scored over 100 greedy episodes.
# CPU budget: 50,000 environment steps per learner in rounds of 5,000 (configs/rl/minatar_breakout_dpd*.yaml:
# 500,000 in rounds of 10,000); exploration decays over the first 10% of the budget either way.
#   bash benchmarks/rl_dpd.sh          # then: socratic rl report runs/rl_dpd
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
common=(output_dir=runs/rl_dpd dqn.n_timesteps=50000 dpd.round_steps=5000 eval.final_episodes=100 runtime.progress=false)
for seed in ${SEEDS:-0 1 2}; do  # SEEDS="2" runs one seed (e.g. in a second process)
  for config in minatar_breakout_dpd minatar_breakout_dpd_alone; do
    $PY -m socratic rl dpd "configs/rl/$config.yaml" "seed=$seed" "${common[@]}" "$@"
  done
  # the authors' distillation lr (their DDPG actors), 10x the config's
  $PY -m socratic rl dpd configs/rl/minatar_breakout_dpd.yaml "seed=$seed" "${common[@]}" \
      name=minatar_breakout_dpd_lr1e-4 dpd.lr=1e-4 "$@"
done
