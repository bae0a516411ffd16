"""gymnasium's continuous-action classic-control tasks (Pendulum-v1, MountainCarContinuous-v0): float32
observation vectors and a `Box` action, no extra beyond `rl`. Small enough to train a teacher in a minute on a
CPU, so the continuous-action paths (PD, PD + DA, DPD) are tested on them."""

from __future__ import annotations

from typing import Any

from socratic.registry import ENV_SUITES
from socratic.rl.envs import EnvSuite, float32_observations, gymnasium

TASKS = {"Pendulum": "Pendulum-v1", "MountainCarContinuous": "MountainCarContinuous-v0"}


@ENV_SUITES.register("classic_control", max_episode_steps=0, input_scale=1.0, arch="mlp")
class ClassicControlSuite(EnvSuite):
    """`max_episode_steps=0`: gymnasium's own limits (Pendulum 200, MountainCarContinuous 999) apply."""

    def games(self) -> list[str]:
        gymnasium("classic-control tasks")
        return list(TASKS)

    def env_id(self, game: str) -> str:
        return TASKS[game]

    def make(self, game: str, render_mode: str | None = None) -> Any:
        return float32_observations(gymnasium().make(self.env_id(game), render_mode=render_mode))
