"""`socratic rl evaluate`: greedy (argmax Q, or mean-action) scores of a student or teacher checkpoint over N
episodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any


from socratic.config import ConfigError
from socratic.engine.checkpoint import load_checkpoint
from socratic.engine.runtime import select_device
from socratic.rl.envs import env_info, make_vec_env
from socratic.rl.rollout import play_episodes, score_summary
from socratic.rl.teachers import load_teacher


def evaluate_rl_checkpoint(path: str | Path, *, suite: str | None = None, game: str | None = None,
                           episodes: int = 100, num_envs: int = 8, seed: int = 1, epsilon: float = 0.0,
                           max_episode_steps: int | None = None, device: str = "cpu",
                           trust_pickle: bool = False) -> dict[str, Any]:
    """Mean ± std of the greedy (or epsilon-greedy) score of a Q-network checkpoint.

    A socratic checkpoint (.pt written by `rl distill` / `rl train-teacher`) knows its game; a Stable-Baselines3
    .zip (or an RL-Zoo / Hugging Face folder) needs `suite` and `game`; it is read without unpickling unless
    `trust_pickle` (trusted files only).
    """
    path = Path(path)
    if episodes <= 0 or num_envs <= 0:
        raise ConfigError(f"--episodes and --num-envs must be > 0, got {episodes} and {num_envs}")
    if path.suffix != ".zip" and path.is_file():
        meta = load_checkpoint(path).get("meta", {})
        suite = suite or meta.get("suite")
        game = game or meta.get("game")
    if not suite or not game:
        raise ConfigError(f"{path}: give --suite and --game (the file does not say which game it plays)")
    torch_device = select_device(device)
    info = env_info(suite, game)
    policy = load_teacher(path, info, device=torch_device, trust_pickle=trust_pickle)
    envs = make_vec_env(info.suite, info.game, num_envs, max_episode_steps)
    try:
        scores = play_episodes(policy, envs, episodes, seed=seed, device=torch_device, epsilon=epsilon)
    finally:
        envs.close()
    return {"checkpoint": str(path), "suite": info.suite, "game": info.game, "seed": seed, "epsilon": epsilon,
            **score_summary(scores)}


__all__ = ["evaluate_rl_checkpoint"]
