"""MuJoCo continuous control (Todorov et al. 2012, through gymnasium's `<Task>-v5` environments): the tasks of
the Dual Policy Distillation paper (Lai et al. 2020) and of most continuous-control distillation work. Observations
are float32 vectors, actions a `Box`; episodes end at 1,000 steps (gymnasium's own limit). Needs the extras `rl`
and `mujoco` (`pip install "socratic-kd[mujoco]"`; MuJoCo is Apache-2.0)."""

from __future__ import annotations

from typing import Any

from socratic.registry import ENV_SUITES
from socratic.rl.envs import EnvSuite, float32_observations, gymnasium, import_extra

TASKS = ["Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedDoublePendulum",
         "InvertedPendulum", "Pusher", "Reacher", "Swimmer", "Walker2d"]


@ENV_SUITES.register("mujoco", max_episode_steps=1000, input_scale=1.0, arch="mlp")
class MuJoCoSuite(EnvSuite):
    def games(self) -> list[str]:
        gymnasium("MuJoCo tasks")
        import_extra("mujoco", "mujoco", "MuJoCo tasks")
        return list(TASKS)

    def env_id(self, game: str) -> str:
        return f"{game}-v5"

    def make(self, game: str, render_mode: str | None = None) -> Any:
        return float32_observations(gymnasium().make(self.env_id(game), render_mode=render_mode))
