#!/usr/bin/env bash
# The whole RL pipeline on real Atari frames (Space Invaders, NoFrameskip-v4 + the standard preprocessing:
# 30 no-ops, frame skip 4, 84x84 grayscale, 4-frame stack), in minutes: a briefly trained local Nature-DQN
# teacher (no pre-trained RL-Zoo teacher can be downloaded here), then PD and PD + DA into the ~1% student for
# 2 epochs each. It shows the mechanics on Atari, not a result: the teacher is far from trained.
#   bash benchmarks/rl_atari_pipeline.sh          # then: socratic rl report runs/rl_atari
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
$PY -m socratic rl train-teacher configs/rl/minatar_breakout_teacher.yaml output_dir=runs/rl_atari \
    name=atari_space_invaders_teacher env.suite=atari env.game=SpaceInvaders net.arch=nature env.eval_num_envs=4 \
    dqn.n_timesteps=30000 dqn.buffer_size=30000 dqn.learning_starts=2000 dqn.exploration_fraction=0.5 \
    eval.every_steps=10000 eval.episodes=4 eval.final_episodes=8 runtime.progress=false "$@"
teacher=runs/rl_atari/atari_space_invaders_teacher/seed0/checkpoints/best.pt
for config in atari_space_invaders_pd atari_space_invaders_pd_da; do
  $PY -m socratic rl distill "configs/rl/$config.yaml" output_dir=runs/rl_atari "teacher.checkpoint=$teacher" \
      env.num_envs=4 env.eval_num_envs=4 optim.epochs=2 collect.states_per_epoch=3000 collect.buffer_size=30000 \
      eval.episodes_per_epoch=4 eval.final_episodes=8 eval.teacher_episodes=8 runtime.device=cpu \
      runtime.progress=false "$@"
done
