"""Teachers for policy distillation: Stable-Baselines3 DQN / QR-DQN .zip files and plain Q-network weights.

* `.zip` (a model saved by Stable-Baselines3, e.g. RL-Zoo's pre-trained Atari DQNs, which the DA paper uses,
  or `socratic rl train-teacher`'s `checkpoints/best.zip`): **read without unpickling** by default. The
  algorithm, action count, observation shape and the network's architecture come from the zip's JSON fields,
  the weights from its `policy.pth` with `weights_only=True`, and the Q-network is built from SB3's own classes
  (`socratic.rl.sb3_zip`), so it computes what SB3's `load` would. Only `trust_pickle` (CLI `--trust-pickle`,
  config `teacher.trust_pickle: true`) takes SB3's `DQN.load` / `QRDQN.load`, which unpickles, i.e. runs, the
  Python objects stored in the file; it says so on stderr. A QR-DQN teacher's Q-values are the means of its
  quantiles.
* anything else (`.pt`, `.pth`): `torch.load(weights_only=True)`, either a socratic Q-network checkpoint
  (`{"model": state_dict, "meta": {"net": QNetwork.spec(), ...}}`, as written by train-teacher and distill)
  or a plain `QNetwork` state dict, whose architecture then comes from the config (`teacher.net`).

* any other Stable-Baselines3 algorithm's `.zip`, read the same way: PPO and A2C (`ActorCriticPolicy`), SAC, TD3
  and DDPG, rebuilt from SB3's own policy classes with every tensor of `policy.pth` loaded strictly. Box-action
  teachers are `SB3PolicyTeacher`s (a Gaussian's [mean, log std], or a deterministic actor's action; see
  `socratic.rl.continuous`); a discrete PPO/A2C teacher gives its action logits in place of Q-values.
* a folder in the RL-Zoo / Hugging Face layout (the model `.zip` with `config.yml`, `env_kwargs.yml` and a
  `VecNormalize` file; `socratic.rl.observations.find_zoo_files`), or a `.zip` with those files beside it.

The observation layout a `.zip` was trained on is read from its `observation_space` and adapted
(`socratic.rl.observations`): channels-last and flattened frames are permuted back from socratic's (C, H, W),
VecNormalize statistics are applied, so the teacher sees what it was trained on while the student gets socratic's
layout. Refused with a `CheckpointError` naming both sides: another game (a zoo file named after another
environment id), another action space (Discrete against Box, another count, shape or bounds), another observation
size.

Every loader refuses weights holding NaN or inf. A teacher is an `nn.Module` mapping states (B, C, H, W) on
their own scale to Q-values (B, A); it is returned in eval mode with frozen parameters (gradients still flow
to its *input*, which DA needs).
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from socratic.engine.checkpoint import CheckpointError, check_finite, load_checkpoint, load_weights, model_state
from socratic.rl.envs import EnvInfo
from socratic.rl.errors import MissingExtraError
from socratic.rl.networks import MLPPolicy, QNetwork
from socratic.rl.observations import ZooFiles, check_zoo_config, find_zoo_files, layout_adapter, read_vecnormalize
from socratic.rl.sb3_zip import (UnreadableZipError, build_policy, build_q_module, policy_family, policy_kwargs_for,
                                read_zip, resolve_algo, zip_algo, zip_box_action, zip_spaces, zip_spec)


class SB3QTeacher(nn.Module):
    """Q-values of an SB3 DQN q_net, or the quantile means of a QR-DQN quantile_net (SB3 does the input
    preprocessing its policy was trained with, e.g. /255 for images)."""

    def __init__(self, net: nn.Module, quantiles: bool) -> None:
        super().__init__()
        self.net = net
        self.quantiles = quantiles

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x.float())
        return out.mean(dim=1) if self.quantiles else out


def freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _mismatch(path: Path, what: str, theirs: Any, ours: Any, info: EnvInfo, detail: str = "") -> CheckpointError:
    why = f": {detail}" if detail else ""
    return CheckpointError(
        f"teacher {path} does not fit {info.env_id}: the teacher has {what} {theirs}, the environment has {ours}"
        f"{why} (was it trained for another game, or with other preprocessing?)"
    )


def _teacher_spaces(info: EnvInfo, obs_shape: tuple[int, ...], obs_dtype: str | None) -> dict[str, Any]:
    """The observation space the teacher was trained on (its own shape and dtype, socratic's bounds) and the
    environment's action space, which both loaders give the network."""
    import numpy as np

    from socratic.rl.envs import gymnasium

    gym = gymnasium("loading an SB3 teacher")
    if info.continuous:
        obs = gym.spaces.Box(-np.inf, np.inf, obs_shape, np.float32)
        action = gym.spaces.Box(np.array(info.action_low, np.float32), np.array(info.action_high, np.float32),
                                dtype=np.float32)
    else:
        dtype = "bool" if obs_dtype == "bool" else "uint8"
        high = 1 if (info.input_scale != 255 or dtype == "bool") else 255
        obs = gym.spaces.Box(0, high, obs_shape, dtype)
        action = gym.spaces.Discrete(info.num_actions)
    return {"observation_space": obs, "action_space": action}


def _spaces(info: EnvInfo) -> dict[str, Any]:
    """The environment's own observation and action spaces."""
    return _teacher_spaces(info, info.obs_shape, None)


def _sb3_classes(algo: str) -> None:  # algo: a policy family
    try:
        if algo == "qrdqn":
            import sb3_contrib  # noqa: F401
        else:
            import stable_baselines3  # noqa: F401
    except ImportError as err:
        extra_pkg = "sb3-contrib" if algo == "qrdqn" else "stable-baselines3"
        raise MissingExtraError("rl", f"loading a {algo.upper()} teacher", extra_pkg) from err


_ENV_ID = re.compile(r"([A-Z][A-Za-z0-9]*(?:NoFrameskip)?-v\d+)")


def _check_fits(path: Path, data: dict[str, Any], info: EnvInfo) -> tuple[nn.Module, str]:
    """Refuse a teacher for another game, action space or observation size (from the zip's JSON only); return
    the adapter from socratic's states to the teacher's observations and its name."""
    named = _ENV_ID.search(path.stem) or _ENV_ID.search(path.parent.name)
    own = info.env_id.split("/")[-1]
    if named and named.group(1) != own:
        raise CheckpointError(f"teacher {path} does not fit {info.env_id}: it is named after {named.group(1)}, "
                              "another game; pass a teacher trained on this game")
    shape, dtype, n = zip_spaces(path, data)
    box = zip_box_action(path, data)
    if info.continuous:
        if box is None:
            raise _mismatch(path, "action space", f"Discrete({n})", f"Box{info.action_shape}", info)
        action_shape, low, high = box
        if action_shape != info.action_shape:
            raise _mismatch(path, "action shape", action_shape, info.action_shape, info)
        for name, theirs, ours in (("action low bound", low, info.action_low),
                                   ("action high bound", high, info.action_high)):
            if theirs is not None and len(theirs) == len(ours) and any(abs(a - b) > 1e-5 for a, b in zip(theirs, ours)):
                raise _mismatch(path, name, theirs, list(ours), info)
    else:
        if box is not None:
            raise _mismatch(path, "action space", f"Box{box[0]}", f"Discrete({info.num_actions})", info)
        if n is not None and n != info.num_actions:
            raise _mismatch(path, "number of actions", n, info.num_actions, info)
    if shape is None:
        return nn.Identity(), "as socratic's"
    adapter, layout = layout_adapter(shape, info.obs_shape)
    if adapter is None:
        raise _mismatch(path, "observation shape", shape, info.obs_shape, info, detail=layout)
    allowed = ("float32", "float64") if info.continuous else ("uint8", "bool")
    if dtype is not None and dtype not in allowed:
        raise _mismatch(path, "observation dtype", dtype, " or ".join(allowed), info)
    return adapter, layout


class SB3PolicyTeacher(nn.Module):
    """A PPO / A2C / SAC / TD3 / DDPG policy as a teacher: socratic's states -> `adapter` (layout, VecNormalize)
    -> the policy's outputs. Box actions: [mean, log std] (Gaussian: PPO, A2C, SAC) or the action (TD3, DDPG)
    in the policy's own parametrisation `action_map`; Discrete actions (PPO, A2C): the action logits."""

    def __init__(self, policy: nn.Module, family: str, adapter: nn.Module, info: EnvInfo) -> None:
        super().__init__()
        self.policy, self.family, self.adapter = policy, family, adapter
        self.continuous = info.continuous
        self.gaussian = info.continuous and family in ("actor_critic", "sac")
        self.action_map = {"actor_critic": "clip", "sac": "tanh", "td3": "scaled"}[family]
        self.action_dim = int(math.prod(info.action_shape)) if info.continuous else info.num_actions
        self.register_buffer("action_low", torch.tensor(info.action_low or (), dtype=torch.float32), persistent=False)
        self.register_buffer("action_high", torch.tensor(info.action_high or (), dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        obs = self.adapter(x.float())
        if self.family == "actor_critic":
            features = self.policy.extract_features(obs, self.policy.pi_features_extractor)
            mean = self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))
            if not self.continuous:
                return mean
            return torch.cat([mean, self.policy.log_std.expand_as(mean)], dim=1)
        if self.family == "sac":
            mean, log_std, _ = self.policy.actor.get_action_dist_params(obs)
            return torch.cat([mean, log_std], dim=1)
        return self.policy.actor(obs)

    @torch.no_grad()
    def act(self, x: Tensor) -> Tensor:
        """The greedy (mean) environment action."""
        from socratic.rl.continuous import to_env_action

        return to_env_action(self(x)[:, :self.action_dim], self.action_map, self.action_low, self.action_high)

    def policy_modules(self) -> list[nn.Module]:
        """The modules that compute the actions (not the critics), whose size a student is compared with."""
        p = self.policy
        if self.family == "actor_critic":
            return [p.pi_features_extractor, p.mlp_extractor.policy_net, p.action_net]
        return [p.actor]


def policy_parameters(teacher: nn.Module) -> int:
    """Parameters of what a teacher acts with: an SB3 actor-critic's or SAC/TD3's actor (and PPO's log std), not its
    critics; every parameter of any other teacher."""
    if isinstance(teacher, SB3PolicyTeacher):
        seen = {id(q): q for m in teacher.policy_modules() for q in m.parameters()}
        extra = teacher.policy.log_std.numel() if teacher.family == "actor_critic" and teacher.continuous else 0
        return sum(q.numel() for q in seen.values()) + extra
    return sum(q.numel() for q in teacher.parameters())


class AdaptedQTeacher(nn.Module):
    """A Q-network teacher behind an observation adapter (channels-last, flattened)."""

    def __init__(self, teacher: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.teacher, self.adapter = teacher, adapter

    def forward(self, x: Tensor) -> Tensor:
        return self.teacher(self.adapter(x))


_ALGORITHM_CLASSES = {"dqn": ("stable_baselines3", "DQN"), "qrdqn": ("sb3_contrib", "QRDQN"),
                      "ppo": ("stable_baselines3", "PPO"), "a2c": ("stable_baselines3", "A2C"),
                      "sac": ("stable_baselines3", "SAC"), "td3": ("stable_baselines3", "TD3")}


def _algorithm_name(family: str, data: dict[str, Any]) -> str:
    if family == "actor_critic":
        return "ppo" if "clip_range" in data else "a2c"
    return family


def _unpickling_load(path: Path, spaces: dict[str, Any], family: str, data: dict[str, Any],
                     device: str | torch.device) -> nn.Module:
    """Today's SB3 `Algorithm.load`: unpickles every object stored in the zip (runs any code in it); returns the
    policy (actor-critic / SAC / TD3) or the Q-network (DQN / QR-DQN)."""
    import importlib

    name = _algorithm_name(family, data)
    print(f"warning: unpickling {path} with Stable-Baselines3's {name.upper()}.load (trust_pickle is set): any "
          "code stored in this file runs now", file=sys.stderr, flush=True)
    module, cls = _ALGORITHM_CLASSES[name]
    Algorithm = getattr(importlib.import_module(module), cls)
    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "exploration_schedule": lambda _: 0.0,
              "clip_range": lambda _: 0.0, "buffer_size": 1, "optimize_memory_usage": False,
              "replay_buffer_class": None, "replay_buffer_kwargs": {}, **spaces}
    try:
        model = Algorithm.load(path, device=device, custom_objects=custom)
    except Exception as err:  # a file we were told to trust may still be broken in any way
        raise UnreadableZipError(f"cannot load teacher {path} as {name.upper()} even by unpickling: "
                                 f"{type(err).__name__}: {err}") from err
    if family == "qrdqn":
        return model.policy.quantile_net
    if family == "dqn":
        return model.policy.q_net
    return model.policy


def _vecnormalize_adapter(path: Path, info: EnvInfo,
                          teacher_shape: tuple[int, ...] | None) -> tuple[nn.Module | None, ZooFiles]:
    files = find_zoo_files(path)
    check_zoo_config(files, info.obs_shape)
    if files.vecnormalize is None:
        return None, files
    stats = read_vecnormalize(files.vecnormalize)
    if stats is None:
        return None, files
    expected = teacher_shape or info.obs_shape
    if tuple(stats.mean.shape) != tuple(expected):
        raise CheckpointError(f"{files.vecnormalize}: its statistics have shape {tuple(stats.mean.shape)}, the "
                              f"teacher's observations {tuple(expected)}: it belongs to another model")
    print(f"teacher {files.model}: observations normalised with the VecNormalize statistics of "
          f"{files.vecnormalize} (read without unpickling code)", file=sys.stderr, flush=True)
    return stats.module(), files


def load_sb3_teacher(path: str | Path, info: EnvInfo, algo: str = "auto", device: str | torch.device = "cpu",
                     trust_pickle: bool = False) -> nn.Module:
    """Load any SB3 model .zip (or an RL-Zoo / Hugging Face folder) and check it fits the environment.

    By default nothing in the file is unpickled: the network is rebuilt from the zip's JSON fields and the
    weights of `policy.pth` read with `weights_only=True` (see `socratic.rl.sb3_zip`). Only `trust_pickle`
    takes SB3's own `load`, which unpickles (runs) whatever the file holds, and says so on stderr. The JSON
    is checked against the environment first in both cases. A file that cannot be read is a `CheckpointError`
    naming it and what is missing (exit code 2 in the CLI).
    """
    path = Path(path)
    if path.is_dir():
        path = find_zoo_files(path).model
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    data, weights = read_zip(path)
    family = policy_family(path, data) if algo == "auto" else algo
    if family in ("dqn", "qrdqn"):
        family = resolve_algo(path, data, algo)
    layout, layout_name = _check_fits(path, data, info)  # another game / action space / size: refused here
    shape, dtype, _ = zip_spaces(path, data)
    normalize, _ = _vecnormalize_adapter(path, info, shape)
    adapter = nn.Sequential(layout, normalize) if normalize is not None else layout
    if layout_name != "as socratic's":
        print(f"teacher {path}: trained on {layout_name} observations {shape}; socratic's {info.obs_shape} are "
              "adapted for it", file=sys.stderr, flush=True)
    spaces = _teacher_spaces(info, shape or info.obs_shape, dtype)
    _sb3_classes(family)
    if trust_pickle:
        net = _unpickling_load(path, spaces, family, data, device)
    else:
        try:
            if family in ("dqn", "qrdqn"):
                net = build_q_module(path, zip_spec(path, data, weights, family), weights, **spaces)
            else:
                net = build_policy(path, family, policy_kwargs_for(path, data, family), weights, **spaces)
        except UnreadableZipError as err:
            raise UnreadableZipError(f"{err}. Nothing was unpickled; if you trust this file, --trust-pickle (or "
                                     "teacher.trust_pickle: true) loads it with Stable-Baselines3's unpickling "
                                     "loader") from err
    check_finite(net.state_dict(), path, role="teacher")
    if family in ("dqn", "qrdqn"):
        teacher: nn.Module = SB3QTeacher(net, quantiles=family == "qrdqn")
        if not isinstance(adapter, nn.Identity):
            teacher = AdaptedQTeacher(teacher, adapter)
    else:
        teacher = SB3PolicyTeacher(net, family, adapter, info)
    return freeze(teacher.to(device))


def sb3_to_qnetwork(q_net: nn.Module, spec: dict[str, Any]) -> QNetwork:
    """A socratic `QNetwork` with the weights of an SB3 DQN q_net built on `QTrunkExtractor` (net_arch=[])."""
    net = QNetwork.from_spec(spec)
    state = {}
    for key, value in q_net.state_dict().items():
        if key.startswith("features_extractor.trunk."):
            state["trunk." + key[len("features_extractor.trunk."):]] = value
        elif key.startswith("q_net.0."):
            state["head." + key[len("q_net.0."):]] = value
    net.load_state_dict(state)
    return net


def qnetwork_checkpoint(net: QNetwork | MLPPolicy, info: EnvInfo, **meta: Any) -> dict[str, Any]:
    """A socratic Q-network (or continuous MLP policy) checkpoint: loads with weights_only=True, as a teacher or
    for `rl evaluate`."""
    kind = "rl_policy" if isinstance(net, MLPPolicy) else "rl_qnetwork"
    return {"model": net.state_dict(),
            "meta": {"kind": kind, "net": net.spec(), "suite": info.suite, "game": info.game,
                     "env_id": info.env_id, **meta}}


def load_qnetwork(path: str | Path, info: EnvInfo | None = None, net_spec: dict[str, Any] | None = None,
                  role: str = "teacher") -> tuple[QNetwork | MLPPolicy, dict[str, Any]]:
    """A `QNetwork` from a socratic checkpoint (architecture from its metadata) or a plain state dict
    (architecture from `net_spec`), checked against the environment `info` when given."""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    meta = checkpoint.get("meta", {}) if isinstance(checkpoint.get("model"), dict) else {}
    spec = meta.get("net") or net_spec
    if spec is None:
        raise CheckpointError(f"{role}: {path} is a plain state dict without metadata: give its architecture "
                              f"({role}.net: arch, convs, hidden)")
    weights = model_state(checkpoint)
    if spec.get("arch") == "mlp":
        return _load_mlp_policy(path, spec, meta, info, role), meta
    head = weights.get("head.weight")
    if info is not None:
        actions = int(head.shape[0]) if isinstance(head, torch.Tensor) else int(spec["num_actions"])
        if actions != info.num_actions:
            raise _mismatch(path, "number of actions", actions, info.num_actions, info)
        if tuple(spec["input_shape"]) != info.obs_shape:
            raise _mismatch(path, "observation shape", tuple(spec["input_shape"]), info.obs_shape, info)
        if meta.get("game") not in (None, info.game) or meta.get("suite") not in (None, info.suite):
            raise CheckpointError(f"{role}: {path} was made for {meta.get('suite')} {meta.get('game')}, "
                                  f"not {info.suite} {info.game}")
    try:
        net = QNetwork.from_spec(spec)
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{role}: {path} has incomplete network metadata ({err})") from err
    load_weights(net, path, role=role)
    return net, meta


def _load_mlp_policy(path: Path, spec: dict[str, Any], meta: dict[str, Any], info: EnvInfo | None,
                     role: str) -> MLPPolicy:
    """A continuous-action `MLPPolicy` checkpoint (written by `rl distill`), checked against the environment."""
    if info is not None:
        if not info.continuous:
            raise _mismatch(path, "action space", "Box (continuous)", f"Discrete({info.num_actions})", info)
        if int(spec["obs_dim"]) != math.prod(info.obs_shape):
            raise _mismatch(path, "observation size", spec["obs_dim"], math.prod(info.obs_shape), info)
        if int(spec["action_dim"]) != math.prod(info.action_shape):
            raise _mismatch(path, "action size", spec["action_dim"], math.prod(info.action_shape), info)
        if meta.get("game") not in (None, info.game) or meta.get("suite") not in (None, info.suite):
            raise CheckpointError(f"{role}: {path} was made for {meta.get('suite')} {meta.get('game')}, "
                                  f"not {info.suite} {info.game}")
    try:
        net = MLPPolicy.from_spec(spec)
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{role}: {path} has incomplete network metadata ({err})") from err
    load_weights(net, path, role=role)
    return net


SCRIPTED_TEACHERS = {"breakout_tracker": ("minatar", "Breakout")}


def load_scripted_teacher(name: str, info: EnvInfo) -> nn.Module:
    """`scripted:breakout_tracker`: the fixed ball-following Q-function of `socratic.rl.scripted` (no file)."""
    if name not in SCRIPTED_TEACHERS:
        raise CheckpointError(f"unknown scripted teacher '{name}'; available: "
                              f"{', '.join('scripted:' + k for k in SCRIPTED_TEACHERS)}")
    if SCRIPTED_TEACHERS[name] != (info.suite, info.game):
        suite, game = SCRIPTED_TEACHERS[name]
        raise CheckpointError(f"scripted teacher '{name}' plays {suite} {game}, not {info.suite} {info.game}")
    from socratic.rl.scripted import BreakoutTracker

    return freeze(BreakoutTracker())


def load_teacher(path: str | Path, info: EnvInfo, algo: str = "auto", net_spec: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu", trust_pickle: bool = False) -> nn.Module:
    """A frozen teacher for `info`'s environment from a .zip (SB3, read without unpickling unless
    `trust_pickle`), a .pt/.pth (weights only), or `scripted:<name>` (a hand-written Q-function, see
    `SCRIPTED_TEACHERS`). Weights holding NaN or inf are refused."""
    if str(path).startswith("scripted:"):
        return load_scripted_teacher(str(path)[len("scripted:"):], info).to(device)
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    if path.suffix == ".zip" or path.is_dir():
        return load_sb3_teacher(path, info, algo, device, trust_pickle=trust_pickle)
    net, _ = load_qnetwork(path, info, net_spec, role="teacher")
    return freeze(net.to(device))


__all__ = ["AdaptedQTeacher", "SB3PolicyTeacher", "SCRIPTED_TEACHERS", "SB3QTeacher", "freeze", "load_qnetwork",
           "policy_parameters", "load_sb3_teacher", "load_teacher",
           "qnetwork_checkpoint", "sb3_to_qnetwork", "zip_algo"]
