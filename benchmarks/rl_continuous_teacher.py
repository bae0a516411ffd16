"""Train the PPO teacher of the continuous-control PD benchmark with Stable-Baselines3 directly and save it in the
RL-Zoo layout (so `socratic rl distill` loads it as it would load any RL-Zoo / Hugging Face SB3 teacher):

    <out>/<Env>.zip                      the model (SB3's own .zip)
    <out>/<Env>/config.yml               the hyperparameters (RL-Zoo's format: a list of [key, value] pairs)
    <out>/<Env>/env_kwargs.yml           {} (gymnasium's defaults)
    <out>/<Env>/vecnormalize.pkl         the VecNormalize observation statistics the policy was trained with

Reduction from RL-Zoo's Hopper PPO budget (1M steps, net 256-256): `--steps` steps (default 160,000), net 128-128,
one environment, to fit this 2-core machine (benchmarks/results/rl_continuous.md).

    nohup nice -n 5 .venv/bin/python benchmarks/rl_continuous_teacher.py --env Hopper-v5 \
        --out teachers/rl/mujoco/ppo/Hopper-v5_1 &
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

HYPER = {"policy": "MlpPolicy", "n_steps": 2048, "batch_size": 64, "n_epochs": 10, "learning_rate": 3e-4,
         "gamma": 0.99, "gae_lambda": 0.95, "clip_range": 0.2, "ent_coef": 0.0, "max_grad_norm": 0.5,
         "policy_kwargs": {"net_arch": {"pi": [128, 128], "vf": [128, 128]}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--steps", type=int, default=160_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--eval-episodes", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    (out / args.env).mkdir(parents=True, exist_ok=True)
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(args.env)]), norm_obs=True, norm_reward=True, gamma=0.99)
    kwargs = {k: v for k, v in HYPER.items() if k != "policy"}
    model = PPO(HYPER["policy"], venv, seed=args.seed, device="cpu", verbose=0, **kwargs)
    start = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    train_time = time.perf_counter() - start
    model.save(out / f"{args.env}.zip")
    venv.save(str(out / args.env / "vecnormalize.pkl"))
    config = [[k, v] for k, v in {**HYPER, "n_timesteps": args.steps, "normalize": True, "n_envs": 1}.items()]
    (out / args.env / "config.yml").write_text(yaml.safe_dump(config))
    (out / args.env / "env_kwargs.yml").write_text("{}\n")
    # greedy (mean-action) score with frozen statistics, on raw episode returns
    venv.training, venv.norm_reward = False, False
    env = gym.make(args.env)
    scores = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=1_000 + episode)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(venv.normalize_obs(obs[None]), deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action[0])
            total += float(reward)
            done = terminated or truncated
        scores.append(total)
    summary = {"env": args.env, "algo": "ppo", "steps": args.steps, "seed": args.seed, "train_time_s": train_time,
               "score_mean": float(np.mean(scores)), "score_std": float(np.std(scores)),
               "episodes": args.eval_episodes, "hyperparameters": HYPER}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for path in (out / f"{args.env}.zip", out / args.env / "vecnormalize.pkl"):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
