"""Environments for policy distillation, through gymnasium: the generic part of every environment suite.

A suite (MinAtar, Atari, ...) is one module of `socratic.rl.suites` that registers itself with
`socratic.registry.ENV_SUITES`: its factory builds an `EnvSuite` (which games exist, their gymnasium ids, how one
environment is made and wrapped: image suites return uint8 observations shaped (C, H, W), ready for `QNetwork`;
continuous-control suites float32 vectors and a `Box` action) and its metadata gives the default time limit
(`max_episode_steps`, agent steps; 0 = the environment's own), the input scale the networks divide by
(`input_scale`) and the network shape that fits (`arch`: "minatar", "nature" or "mlp"). Every environment gets a
`TimeLimit` so a greedy policy that stalls cannot make an evaluation endless. Vectorised environments use
gymnasium's same-step autoreset: the observation returned with `terminated or truncated` is already the first one
of the next episode.

The optional packages are imported only when an environment is made, and their absence is a `MissingExtraError`
that names the `pip install "socratic-kd[...]"` line to run.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any


from socratic.registry import ENV_SUITES
from socratic.rl.errors import MissingExtraError, UnknownGameError

class EnvSuite:
    """What a registered suite provides (subclass it in a module of `socratic.rl.suites`)."""

    def games(self) -> list[str]:
        """The canonical game names (imports the suite's extra: a MissingExtraError names it)."""
        raise NotImplementedError

    def env_id(self, game: str) -> str:
        """The gymnasium id of a canonical game name."""
        raise NotImplementedError

    def make(self, game: str, render_mode: str | None = None) -> Any:
        """One environment (without the time limit): (C, H, W) uint8 or float32 vector observations."""
        raise NotImplementedError


def float32_observations(env: Any) -> Any:
    """Cast a float observation space (MuJoCo's float64) to float32, the dtype the networks take."""
    import numpy as np

    gym = gymnasium()
    space = env.observation_space
    if space.dtype == np.float32:
        return env
    return gym.wrappers.TransformObservation(
        env, lambda obs: np.asarray(obs, dtype=np.float32),
        gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32))


def import_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional package, or raise a MissingExtraError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(extra, what, module.split(".")[0]) from err


def gymnasium(what: str = "RL environments") -> ModuleType:
    """The gymnasium module, or a `MissingExtraError` pointing at the `rl` extra."""
    gym = import_extra("gymnasium", "rl", what)
    if not hasattr(gym.vector, "AutoresetMode"):
        raise MissingExtraError("rl", f"{what} (gymnasium >= 1.1, found {gym.__version__})", "gymnasium>=1.1")
    return gym


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def suites() -> list[str]:
    """The registered suite names."""
    return ENV_SUITES.names()


def check_suite(suite: str) -> None:
    if suite not in ENV_SUITES:
        raise UnknownGameError(f"env.suite: '{suite}' is not one of {', '.join(suites())}")


def _suite(suite: str) -> EnvSuite:
    check_suite(suite)
    return ENV_SUITES.create(suite)


def suite_meta(suite: str, key: str) -> Any:
    """A registered suite's metadata: max_episode_steps, input_scale or arch."""
    check_suite(suite)
    return ENV_SUITES.get(suite).meta[key]


def canonical_game(suite: str, game: str) -> str:
    """`breakout`, `Breakout`, `space_invaders`, `SpaceInvaders` ... -> the gymnasium spelling, or an
    `UnknownGameError` listing the suite's games. Checks that the suite's extra is installed."""
    games = _suite(suite).games()
    by_key = {_key(g): g for g in games}
    if _key(game) not in by_key:
        raise UnknownGameError(f"env.game: unknown {suite} game '{game}'; available: {', '.join(games)}")
    return by_key[_key(game)]


def env_id(suite: str, game: str) -> str:
    return _suite(suite).env_id(canonical_game(suite, game))


def make_env(suite: str, game: str, max_episode_steps: int | None = None, render_mode: str | None = None) -> Any:
    """One environment with (C, H, W) uint8 observations and a time limit (None = the suite's default)."""
    gym = gymnasium()
    env = _suite(suite).make(canonical_game(suite, game), render_mode=render_mode)
    limit = suite_meta(suite, "max_episode_steps") if max_episode_steps is None else max_episode_steps
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
    obs_shape: tuple[int, ...]  # (C, H, W) for image suites, (D,) for continuous control
    num_actions: int  # discrete actions; 0 for a continuous (Box) action space
    input_scale: float
    arch: str  # the network shape that fits: "minatar" (3x3 convs), "nature" (Nature-DQN) or "mlp"
    action_shape: tuple[int, ...] = ()  # a Box action's shape; () for discrete actions
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    obs_low: tuple[float, ...] | None = None  # finite observation bounds (flattened), None where unbounded
    obs_high: tuple[float, ...] | None = None

    @property
    def continuous(self) -> bool:
        """Whether the action space is a continuous `Box` (else `Discrete` with `num_actions`)."""
        return bool(self.action_shape)


def env_info(suite: str, game: str) -> EnvInfo:
    """Observation shape, number of actions and input scale of a game (builds one environment once)."""
    return _env_info(suite, canonical_game(suite, game))  # canonical_game checks the extras every time


@functools.lru_cache(maxsize=None)
def _env_info(suite: str, name: str) -> EnvInfo:
    import numpy as np

    env = make_env(suite, name)
    try:
        obs_space, action_space = env.observation_space, env.action_space
    finally:
        env.close()
    obs_shape = tuple(int(v) for v in obs_space.shape)
    common = dict(suite=suite, game=name, env_id=env_id(suite, name), obs_shape=obs_shape,
                  input_scale=float(suite_meta(suite, "input_scale")), arch=suite_meta(suite, "arch"))
    if hasattr(action_space, "n"):
        return EnvInfo(num_actions=int(action_space.n), **common)
    low, high = (np.asarray(obs_space.low, dtype=np.float64).ravel(),
                 np.asarray(obs_space.high, dtype=np.float64).ravel())
    bounded = bool(np.isfinite(low).all() and np.isfinite(high).all())
    return EnvInfo(num_actions=0, action_shape=tuple(int(v) for v in action_space.shape),
                   action_low=tuple(float(v) for v in np.ravel(action_space.low)),
                   action_high=tuple(float(v) for v in np.ravel(action_space.high)),
                   obs_low=tuple(low.tolist()) if bounded else None, obs_high=tuple(high.tolist()) if bounded else None,
                   **common)


__all__ = ["EnvInfo", "EnvSuite", "canonical_game", "check_suite", "env_id", "env_info", "float32_observations",
           "gymnasium", "import_extra", "make_env", "make_vec_env", "suite_meta", "suites"]
