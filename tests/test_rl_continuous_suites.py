"""The continuous-control suites: registered, float32 vector observations, Box actions, bounds and time limits."""

import numpy as np
import pytest

from socratic.registry import ENV_SUITES
from socratic.rl.envs import canonical_game, env_info, make_env, make_vec_env
from socratic.rl.errors import UnknownGameError


def test_suites_are_registered_with_the_mlp_network():
    for suite in ("classic_control", "mujoco"):
        assert suite in ENV_SUITES.names()
        assert ENV_SUITES.get(suite).meta["arch"] == "mlp"


def test_pendulum_info_and_steps():
    info = env_info("classic_control", "pendulum")
    assert (info.env_id, info.obs_shape, info.action_shape, info.num_actions) == ("Pendulum-v1", (3,), (1,), 0)
    assert info.continuous and info.action_low == (-2.0,) and info.action_high == (2.0,)
    assert info.obs_low == (-1.0, -1.0, -8.0) and info.obs_high == (1.0, 1.0, 8.0)
    env = make_env("classic_control", "Pendulum")
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (3,)
    steps = 0
    while True:
        steps += 1
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert steps == 200  # gymnasium's own limit applies (the suite's max_episode_steps is 0)


def test_mujoco_halfcheetah_is_float32_and_unbounded():
    info = env_info("mujoco", "half_cheetah")
    assert info.env_id == "HalfCheetah-v5" and info.obs_shape == (17,) and info.action_shape == (6,)
    assert info.obs_low is None  # MuJoCo observations are unbounded: DA has nothing to clamp to
    envs = make_vec_env("mujoco", "HalfCheetah", 2)
    obs, _ = envs.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (2, 17)
    envs.close()


def test_discrete_suite_info_is_unchanged():
    info = env_info("minatar", "breakout")
    assert not info.continuous and info.num_actions == 3 and info.action_shape == ()


def test_unknown_task_lists_the_suite():
    with pytest.raises(UnknownGameError, match="unknown mujoco game 'Cartpole'.*HalfCheetah"):
        canonical_game("mujoco", "Cartpole")
