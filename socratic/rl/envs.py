"""Environments for policy distillation: MinAtar's five games and Atari (ALE), through gymnasium.

Every environment made here returns uint8 observations shaped (C, H, W), ready for `QNetwork`:

* MinAtar (Young & Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible
  Reinforcement Learning Experiments"): gymnasium id `MinAtar/<Game>-v1` (minimal action set, the library's
  defaults: sticky actions 0.1, difficulty ramping on); the 10x10xC boolean frame is transposed to
  (C, 10, 10) uint8 in {0, 1}.
* Atari, as in the DA paper's policy-distillation code: `<Game>NoFrameskip-v4` + `AtariPreprocessing`
  (noop_max 30, frame_skip 4, 84x84 grayscale, terminal_on_life_loss False, no scaling) +
  `FrameStackObservation(4)` -> (4, 84, 84) uint8 in 0..255. `AtariPreprocessing` resizes with OpenCV.

Both get a `TimeLimit` (agent steps; defaults in `DEFAULT_MAX_EPISODE_STEPS`) so a greedy policy that
stalls cannot make an evaluation endless. Vectorised environments use gymnasium's same-step autoreset: the
observation returned with `terminated or truncated` is already the first one of the next episode.

The optional packages are imported only here, and their absence is a `MissingExtraError` that names the
`pip install "socratic-kd[...]"` line to run.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from socratic.rl.errors import MissingExtraError, UnknownGameError

SUITES = ("minatar", "atari")
MINATAR_GAMES = {  # canonical (gymnasium) name -> MinAtar module name
    "Asterix": "asterix",
    "Breakout": "breakout",
    "Freeway": "freeway",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}
DEFAULT_MAX_EPISODE_STEPS = {"minatar": 10_000, "atari": 27_000}  # Atari: 108,000 frames at frame skip 4
INPUT_SCALE = {"minatar": 1.0, "atari": 255.0}  # what the network divides uint8 inputs by
DEFAULT_ARCH = {"minatar": "minatar", "atari": "nature"}
ATARI_FRAME_STACK = 4


def _import(module: str, extra: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(extra, what, module.split(".")[0]) from err


def gymnasium(what: str = "RL environments") -> ModuleType:
    """The gymnasium module, or a `MissingExtraError` pointing at the `rl` extra."""
    gym = _import("gymnasium", "rl", what)
    if not hasattr(gym.vector, "AutoresetMode"):
        raise MissingExtraError("rl", f"{what} (gymnasium >= 1.1, found {gym.__version__})", "gymnasium>=1.1")
    return gym


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def check_suite(suite: str) -> None:
    if suite not in SUITES:
        raise UnknownGameError(f"env.suite: '{suite}' is not one of {', '.join(SUITES)}")


def _register_minatar() -> None:
    gym = gymnasium("MinAtar")
    minatar_gym = _import("minatar.gym", "minatar", "MinAtar games")
    if "MinAtar/Breakout-v1" not in gym.registry:
        minatar_gym.register_envs()


def _register_atari() -> list[str]:
    gym = gymnasium("Atari games")
    ale_py = _import("ale_py", "atari", "Atari games")
    _import("cv2", "atari", "Atari preprocessing (frame resizing)")
    if not any(k.endswith("NoFrameskip-v4") for k in gym.registry):
        gym.register_envs(ale_py)
    return sorted(k[: -len("NoFrameskip-v4")] for k in gym.registry if k.endswith("NoFrameskip-v4"))


def atari_games() -> list[str]:
    """The Atari games that have a `<Game>NoFrameskip-v4` id (needs the `atari` extra)."""
    return _register_atari()


def canonical_game(suite: str, game: str) -> str:
    """`breakout`, `Breakout`, `space_invaders`, `SpaceInvaders` ... -> the gymnasium spelling, or an
    `UnknownGameError` listing the suite's games. Checks that the suite's extra is installed."""
    check_suite(suite)
    if suite == "minatar":
        _register_minatar()
        games = list(MINATAR_GAMES)
    else:
        games = _register_atari()
    by_key = {_key(g): g for g in games}
    if _key(game) not in by_key:
        raise UnknownGameError(f"env.game: unknown {suite} game '{game}'; available: {', '.join(games)}")
    return by_key[_key(game)]


def env_id(suite: str, game: str) -> str:
    name = canonical_game(suite, game)
    return f"MinAtar/{name}-v1" if suite == "minatar" else f"{name}NoFrameskip-v4"


@functools.lru_cache(maxsize=None)
def _minatar_wrapper_class() -> type:
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


def make_env(suite: str, game: str, max_episode_steps: int | None = None, render_mode: str | None = None) -> Any:
    """One environment with (C, H, W) uint8 observations and a time limit (None = the suite's default)."""
    gym = gymnasium()
    env_name = env_id(suite, game)
    limit = DEFAULT_MAX_EPISODE_STEPS[suite] if max_episode_steps is None else max_episode_steps
    if suite == "minatar":
        env = gym.make(env_name, render_mode=render_mode)
        env = _minatar_wrapper_class()(env)
    else:
        env = gym.make(env_name, render_mode=render_mode)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84,
                                              terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
        env = gym.wrappers.FrameStackObservation(env, ATARI_FRAME_STACK)
    if limit:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=limit)
    return env


def make_vec_env(suite: str, game: str, num_envs: int, max_episode_steps: int | None = None,
                 asynchronous: bool = False) -> Any:
    """`num_envs` copies in a gymnasium vector env (same-step autoreset); `asynchronous` = one process each."""
    gym = gymnasium()
    env_id(suite, game)  # fail here, in this process, on an unknown game or a missing extra
    fns = [functools.partial(make_env, suite, game, max_episode_steps) for _ in range(num_envs)]
    cls = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
    return cls(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


@dataclass(frozen=True)
class EnvInfo:
    """What the networks need to know about an environment."""

    suite: str
    game: str  # canonical spelling
    env_id: str
    obs_shape: tuple[int, ...]  # (C, H, W)
    num_actions: int
    input_scale: float
    arch: str  # the network shape that fits: "minatar" (3x3 convs) or "nature" (Nature-DQN)


def env_info(suite: str, game: str) -> EnvInfo:
    """Observation shape, number of actions and input scale of a game (builds one environment once)."""
    return _env_info(suite, canonical_game(suite, game))  # canonical_game checks the extras every time


@functools.lru_cache(maxsize=None)
def _env_info(suite: str, name: str) -> EnvInfo:
    env = make_env(suite, name)
    try:
        obs_shape = tuple(int(v) for v in env.observation_space.shape)
        num_actions = int(env.action_space.n)
    finally:
        env.close()
    return EnvInfo(suite, name, env_id(suite, name), obs_shape, num_actions, INPUT_SCALE[suite], DEFAULT_ARCH[suite])


__all__ = [
    "DEFAULT_MAX_EPISODE_STEPS", "EnvInfo", "INPUT_SCALE", "MINATAR_GAMES", "SUITES", "atari_games", "canonical_game",
    "env_id", "env_info", "gymnasium", "make_env", "make_vec_env",
]
