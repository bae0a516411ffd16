"""The full training state of a Stable-Baselines3 learner as weights-only-safe plain data, and rounds.

`learner_state(model)` returns tensors, numbers, strings, lists and dicts only, so it goes into a run's
`last.pt` and comes back with `torch.load(weights_only=True)`; `load_learner_state(model, state)` puts it into
a freshly built learner of the same config. One state serves every learner socratic trains (DQN teachers and
DPD peers, PPO / SAC / TD3 teachers, DDPG and PPO DPD peers); it holds what SB3's `learn()` reads after a round:

* `policy`: every network's weights; `optimizers`: the optimisers `train()` steps, by name
  (`learner_optimizers`); SAC's entropy coefficient; `dpd_optimizer`, `dpd_stats` and the state memory of a
  dual-policy-distillation learner (`socratic.rl.dqn.DPDDQN`, `socratic.rl.dpd`);
* the replay buffer's filled part (observations, actions, next observations, rewards, dones, timeouts) with
  `pos` and `full`, where the learner has one;
* the counters: `num_timesteps`, `_n_calls` (DQN's target-network period), `_n_updates`, `_episode_num`, DQN's
  exploration rate and the progress of the learning-rate / exploration schedules;
* the action space's RNG (the random actions of the warm-up and of epsilon-greedy exploration), and the
  `VecNormalize` statistics of a normalised environment.

Not in it: the environment. A learner trains in *rounds* (`begin_round`): each one starts by resetting its
environment with a seed derived from (run seed, learner, round), so a run resumed at a round boundary needs no
environment state. The global NumPy / torch RNGs (SB3 samples minibatches and epsilon decisions with
`np.random`) are the run's, checkpointed by the run skeleton with every other RNG.

Observations are stored losslessly but small: 0/1 frames (MinAtar) as packed bits, integral 0..255 numbers
(actions, rewards, dones) as uint8, and a next observation only where it is not simply the following row's
observation (it is, inside an episode).
"""

from __future__ import annotations

import io
import os
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from socratic.engine.checkpoint import CheckpointError

STATE_VERSION = 2  # 2: one state for every SB3 algorithm (optimisers by name, counters)
_COUNTERS = ("num_timesteps", "_n_calls", "_n_updates", "_episode_num")


class LearnerStateError(CheckpointError):
    """A saved learner state that does not fit the learner it is loaded into."""


# ------------------------------------------------------------------------------------------------ arrays
def encode_array(array: np.ndarray) -> dict[str, Any]:
    """A NumPy array as a tensor plus what is needed to rebuild it exactly (packed bits for 0/1 bytes or bools,
    uint8 for other numbers that are integers in 0..255, e.g. actions, rewards, dones)."""
    array = np.ascontiguousarray(array)
    meta = {"dtype": array.dtype.str, "shape": list(array.shape)}
    if array.size and array.dtype in (np.uint8, np.bool_) and int(array.max()) <= 1:
        return {**meta, "encoding": "bits", "data": torch.from_numpy(np.packbits(array.astype(np.uint8).ravel()))}
    if array.size and array.dtype.kind in "fiu" and np.all((array >= 0) & (array <= 255)):
        as_uint8 = array.astype(np.uint8)
        if as_uint8.astype(array.dtype).tobytes() == array.tobytes():  # bit for bit (-0.0 stays raw)
            return {**meta, "encoding": "uint8", "data": torch.from_numpy(as_uint8)}
    return {**meta, "encoding": "raw", "data": torch.from_numpy(array.copy())}


def decode_array(encoded: dict[str, Any]) -> np.ndarray:
    """The array `encode_array` was given, bit for bit."""
    dtype, shape = np.dtype(encoded["dtype"]), tuple(encoded["shape"])
    data = encoded["data"].cpu().numpy()  # a checkpoint may have been loaded onto the GPU
    if encoded["encoding"] == "bits":
        count = int(np.prod(shape, dtype=np.int64))
        return np.unpackbits(data, count=count).astype(dtype).reshape(shape)
    return data.astype(dtype, copy=False).reshape(shape)


# ----------------------------------------------------------------------------------------- replay buffer
def replay_buffer_state(buffer: Any) -> dict[str, Any]:
    """The filled part of an SB3 `ReplayBuffer` as plain data."""
    filled = buffer.buffer_size if buffer.full else buffer.pos
    state: dict[str, Any] = {"buffer_size": int(buffer.buffer_size), "n_envs": int(buffer.n_envs),
                             "pos": int(buffer.pos), "full": bool(buffer.full), "filled": int(filled)}
    for name in ("observations", "actions", "rewards", "dones", "timeouts"):
        state[name] = encode_array(getattr(buffer, name)[:filled])
    next_obs = getattr(buffer, "next_observations", None)
    if next_obs is not None:
        obs = buffer.observations[:filled]
        following = obs[(np.arange(filled) + 1) % max(filled, 1)]  # row i + 1's observation (ring order when full)
        same = (next_obs[:filled] == following).reshape(filled, -1).all(axis=1) if filled else np.zeros(0, bool)
        rows = np.flatnonzero(~same)
        state["next_observations"] = {"rows": torch.from_numpy(rows.astype(np.int64)),
                                      "values": encode_array(next_obs[:filled][rows])}
    return state


def load_replay_buffer_state(buffer: Any, state: dict[str, Any]) -> None:
    """Fill an SB3 `ReplayBuffer` of the same size and spaces from `replay_buffer_state`'s output."""
    if (state["buffer_size"], state["n_envs"]) != (buffer.buffer_size, buffer.n_envs):
        raise LearnerStateError(f"the saved replay buffer holds {state['buffer_size']} x {state['n_envs']} "
                                f"transitions, this learner's {buffer.buffer_size} x {buffer.n_envs} "
                                "(dqn.buffer_size changed?)")
    filled = state["filled"]
    for name in ("observations", "actions", "rewards", "dones", "timeouts"):
        values = decode_array(state[name])
        target = getattr(buffer, name)
        if values.dtype != target.dtype or values.shape[1:] != target.shape[1:]:
            raise LearnerStateError(f"replay buffer {name}: saved {values.dtype} {values.shape[1:]}, this learner "
                                    f"has {target.dtype} {target.shape[1:]} (another game or network?)")
        target[:filled] = values
    if "next_observations" in state:
        if getattr(buffer, "next_observations", None) is None:
            raise LearnerStateError("the saved replay buffer has next observations, this one does not "
                                    "(optimize_memory_usage changed?)")
        obs = buffer.observations[:filled]
        next_obs = obs[(np.arange(filled) + 1) % max(filled, 1)]
        rows = state["next_observations"]["rows"].cpu().numpy()
        next_obs[rows] = decode_array(state["next_observations"]["values"])
        buffer.next_observations[:filled] = next_obs
    buffer.pos, buffer.full = state["pos"], state["full"]


# ----------------------------------------------------------------------------------------------- learner
def _space_rng_state(space: Any) -> dict[str, Any]:
    return space.np_random.bit_generator.state


def _set_space_rng_state(space: Any, state: dict[str, Any]) -> None:
    if space.np_random.bit_generator.state["bit_generator"] != state["bit_generator"]:
        raise LearnerStateError(f"the action space's RNG is {space.np_random.bit_generator.state['bit_generator']}, "
                                f"the saved one {state['bit_generator']}")
    space.np_random.bit_generator.state = state


def _plain(value: Any) -> Any:
    """NumPy scalars (which weights-only loading refuses) as Python numbers."""
    return value.item() if isinstance(value, np.generic) else value


def cpu_copy(value: Any) -> Any:
    """A detached CPU copy of nested tensors (a state must not change when training goes on)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


def learner_optimizers(model: Any) -> dict[str, torch.optim.Optimizer]:
    """The optimisers SB3's `train()` steps, by name: actor and critic (and SAC's entropy coefficient's) for
    DDPG, TD3 and SAC; the policy's for DQN, PPO and A2C."""
    actor = getattr(model, "actor", None)
    if actor is not None and hasattr(actor, "optimizer"):
        found = {"actor": actor.optimizer, "critic": model.critic.optimizer}
        if getattr(model, "ent_coef_optimizer", None) is not None:
            found["ent_coef"] = model.ent_coef_optimizer
        return found
    return {"policy": model.policy.optimizer}


def vecnormalize_of(model: Any) -> Any:
    """The learner's environment when it is SB3's `VecNormalize` (its statistics are part of the state), else None."""
    from stable_baselines3.common.vec_env import VecNormalize

    return model.env if isinstance(model.env, VecNormalize) else None


def _optional_parts(model: Any) -> dict[str, Any]:
    """The parts only some learners have, by their key in the state: present here or None."""
    norm = vecnormalize_of(model)
    return {"replay_buffer": getattr(model, "replay_buffer", None),
            "exploration_rate": getattr(model, "exploration_rate", None),  # DQN
            "log_ent_coef": getattr(model, "log_ent_coef", None),  # SAC's learned entropy coefficient
            "dpd_optimizer": getattr(model, "dpd_optimizer", None),  # a dual-policy-distillation learner
            "memory": getattr(model, "memory", None),  # DPD's state memory (socratic.rl.dpd)
            "vecnormalize": norm}


def learner_state(model: Any) -> dict[str, Any]:
    """Everything SB3's `learn()` needs to go on from here, except the environment (see the module doc), for
    any learner socratic trains: DQN, PPO, SAC, TD3, DDPG, and their dual-policy-distillation peers."""
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "policy": cpu_copy(model.policy.state_dict()),
        "optimizers": {name: cpu_copy(o.state_dict()) for name, o in learner_optimizers(model).items()},
        "counters": {name: int(getattr(model, name)) for name in _COUNTERS if hasattr(model, name)},
        "progress_remaining": float(model._current_progress_remaining),
        "action_space_rng": _space_rng_state(model.action_space),
        "ep_info_buffer": [{k: _plain(v) for k, v in info.items()} for info in (model.ep_info_buffer or [])],
        "ep_success_buffer": [_plain(v) for v in (model.ep_success_buffer or [])],
    }
    parts = _optional_parts(model)
    if parts["replay_buffer"] is not None:
        state["replay_buffer"] = replay_buffer_state(model.replay_buffer)
    if parts["exploration_rate"] is not None:
        state["exploration_rate"] = float(model.exploration_rate)
    if parts["log_ent_coef"] is not None:
        state["log_ent_coef"] = cpu_copy(model.log_ent_coef)
    if parts["dpd_optimizer"] is not None:
        state["dpd_optimizer"] = cpu_copy(model.dpd_optimizer.state_dict())
        state["dpd_stats"] = dict(model.dpd_stats)
        state["dpd_updates"] = int(getattr(model, "dpd_updates", 0))
    if parts["memory"] is not None:
        state["memory"] = model.memory.state_dict()
    if parts["vecnormalize"] is not None:
        state["vecnormalize"] = {name: {"mean": encode_array(rms.mean), "var": encode_array(rms.var),
                                        "count": float(rms.count)}
                                 for name, rms in (("obs", parts["vecnormalize"].obs_rms),
                                                   ("ret", parts["vecnormalize"].ret_rms))}
    return state


def load_learner_state(model: Any, state: dict[str, Any]) -> None:
    """Restore `learner_state`'s output into a learner built from the same config; its environment is reset
    (with the round's seed) by the next `begin_round`."""
    if state.get("version") != STATE_VERSION:
        raise LearnerStateError(f"learner state version {state.get('version')}, this socratic reads {STATE_VERSION}")
    parts = _optional_parts(model)
    for key, part in parts.items():
        if (key in state) != (part is not None):
            raise LearnerStateError(f"the saved learner and this one differ in having {key} (the algorithm or "
                                    "its options changed since the checkpoint?)")
    try:
        model.policy.load_state_dict(state["policy"])
    except RuntimeError as err:
        raise LearnerStateError(f"the saved networks do not fit this learner (its network options changed?): "
                                f"{str(err).splitlines()[0]}") from err
    optimizers = learner_optimizers(model)
    if set(optimizers) != set(state["optimizers"]):
        raise LearnerStateError(f"the saved learner has optimisers {sorted(state['optimizers'])}, this one "
                                f"{sorted(optimizers)} (the algorithm changed?)")
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][name])
    if "replay_buffer" in state:
        load_replay_buffer_state(model.replay_buffer, state["replay_buffer"])
    if "exploration_rate" in state:
        model.exploration_rate = float(state["exploration_rate"])
    if "log_ent_coef" in state:
        with torch.no_grad():
            model.log_ent_coef.copy_(state["log_ent_coef"].to(model.log_ent_coef.device))
    if "dpd_optimizer" in state:
        model.dpd_optimizer.load_state_dict(state["dpd_optimizer"])
        model.dpd_stats = dict(state["dpd_stats"])
        if hasattr(model, "dpd_updates"):
            model.dpd_updates = int(state["dpd_updates"])
    if "memory" in state:
        model.memory.load_state_dict(state["memory"])
    if "vecnormalize" in state:
        norm = parts["vecnormalize"]
        for name, rms in (("obs", norm.obs_rms), ("ret", norm.ret_rms)):
            saved = state["vecnormalize"][name]
            rms.mean, rms.var, rms.count = decode_array(saved["mean"]), decode_array(saved["var"]), saved["count"]
    for name, value in state["counters"].items():
        setattr(model, name, int(value))
    model._current_progress_remaining = float(state["progress_remaining"])
    _set_space_rng_state(model.action_space, state["action_space_rng"])
    window = model._stats_window_size
    model.ep_info_buffer = deque((dict(info) for info in state["ep_info_buffer"]), maxlen=window)
    model.ep_success_buffer = deque(state["ep_success_buffer"], maxlen=window)
    model._last_obs = None  # the next learn() resets the environment


# ------------------------------------------------------------------------------------------------ rounds
def round_seed(run_seed: int, learner: int, round_: int) -> int:
    """The environment seed of one learner's round, a function of (run seed, learner, round) only."""
    return int(np.random.SeedSequence([run_seed, learner, round_]).generate_state(1)[0])


def begin_round(model: Any, seed: int) -> None:
    """Make the next `learn(reset_num_timesteps=False)` start from `env.reset(seed=seed)`: episodes are cut at
    round boundaries, and a round depends on the learner's state and the global RNGs only, never on where the
    environment was left."""
    model.env.seed(seed)
    model._last_obs = None



def save_sb3_zip(model: Any, path: Path) -> None:
    """SB3's `.zip` written atomically (a temporary file renamed into place)."""
    data = io.BytesIO()
    model.save(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data.getvalue())
    os.replace(tmp, path)

__all__ = ["LearnerStateError", "begin_round", "cpu_copy", "decode_array", "encode_array", "learner_optimizers",
           "learner_state", "load_learner_state", "load_replay_buffer_state", "replay_buffer_state", "round_seed",
           "save_sb3_zip", "vecnormalize_of"]
