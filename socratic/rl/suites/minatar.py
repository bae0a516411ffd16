"""MinAtar (Young & Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible Reinforcement
Learning Experiments"): gymnasium id `MinAtar/<Game>-v1` (minimal action set, the library's defaults: sticky
actions 0.1, difficulty ramping on); the 10x10xC boolean frame is transposed to (C, 10, 10) uint8 in {0, 1}.
Needs the extras `rl` and `minatar` (GPL)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from socratic.registry import ENV_SUITES
from socratic.rl.envs import EnvSuite, gymnasium, import_extra

GAMES = {  # canonical (gymnasium) name -> MinAtar module name
    "Asterix": "asterix",
    "Breakout": "breakout",
    "Freeway": "freeway",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}


@functools.lru_cache(maxsize=None)
def _channels_first_wrapper() -> type:
    gym = gymnasium("MinAtar")

    class MinAtarChannelsFirst(gym.ObservationWrapper):
        """(10, 10, C) bool -> (C, 10, 10) uint8 in {0, 1}."""

        def __init__(self, env: Any) -> None:
            super().__init__(env)
            h, w, c = env.observation_space.shape
            self.observation_space = gym.spaces.Box(0, 1, shape=(c, h, w), dtype=np.uint8)

        def observation(self, observation: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)), dtype=np.uint8)

    return MinAtarChannelsFirst


@ENV_SUITES.register("minatar", max_episode_steps=10_000, input_scale=1.0, arch="minatar")
class MinAtarSuite(EnvSuite):
    def games(self) -> list[str]:
        gym = gymnasium("MinAtar")
        minatar_gym = import_extra("minatar.gym", "minatar", "MinAtar games")
        if "MinAtar/Breakout-v1" not in gym.registry:
            minatar_gym.register_envs()
        return list(GAMES)

    def env_id(self, game: str) -> str:
        return f"MinAtar/{game}-v1"

    def make(self, game: str, render_mode: str | None = None) -> Any:
        env = gymnasium().make(self.env_id(game), render_mode=render_mode)
        return _channels_first_wrapper()(env)
