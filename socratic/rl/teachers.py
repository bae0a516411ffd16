"""Teachers for policy distillation: Stable-Baselines3 DQN / QR-DQN .zip files and plain Q-network weights.

* `.zip` (a model saved by Stable-Baselines3, e.g. RL-Zoo's pre-trained Atari DQNs, which the DA paper uses,
  or `socratic rl train-teacher`'s `checkpoints/best.zip`): loaded with SB3's own `DQN.load` /
  `sb3_contrib.QRDQN.load`. **This unpickles Python objects stored in the file: load only files you trust.**
  The algorithm, action count and observation shape are read from the zip's JSON first (no unpickling), so
  a teacher for another game is refused before anything is unpickled. A QR-DQN teacher's Q-values are the
  means of its quantiles.
* anything else (`.pt`, `.pth`): `torch.load(weights_only=True)`, either a socratic Q-network checkpoint
  (`{"model": state_dict, "meta": {"net": QNetwork.spec(), ...}}`, as written by train-teacher and distill)
  or a plain `QNetwork` state dict, whose architecture then comes from the config (`teacher.net`).

A teacher is an `nn.Module` mapping states (B, C, H, W) on their own scale to Q-values (B, A); it is returned
in eval mode with frozen parameters (gradients still flow to its *input*, which DA needs).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from socratic.engine.checkpoint import CheckpointError, load_checkpoint, load_weights, model_state
from socratic.rl.envs import EnvInfo
from socratic.rl.errors import MissingExtraError
from socratic.rl.networks import QNetwork


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


def _mismatch(path: Path, what: str, theirs: Any, ours: Any, info: EnvInfo) -> CheckpointError:
    return CheckpointError(
        f"teacher {path} does not fit {info.env_id}: the teacher has {what} {theirs}, the environment has {ours} "
        f"(was it trained for another game, or with other preprocessing?)"
    )


def _zip_data(path: Path) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not a Stable-Baselines3 model file (.zip with a 'data' entry): {err}") from err


def zip_algo(data: dict[str, Any]) -> str:
    """'dqn' or 'qrdqn' from the policy class' module name stored in the zip's JSON."""
    module = str(data.get("policy_class", {}).get("__module__", ""))
    if "qrdqn" in module:
        return "qrdqn"
    if "dqn" in module:
        return "dqn"
    raise ValueError(module or "unknown policy class")


def load_sb3_teacher(path: str | Path, info: EnvInfo, algo: str = "auto", device: str | torch.device = "cpu"
                     ) -> SB3QTeacher:
    """Load an SB3 DQN or QR-DQN .zip (unpickles: trusted files only) and check it fits the environment."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    data = _zip_data(path)
    if algo == "auto":
        try:
            algo = zip_algo(data)
        except ValueError as err:
            raise CheckpointError(f"{path}: cannot tell DQN from QR-DQN ({err}); set teacher.algo to dqn or qrdqn") from err
    n = data.get("action_space", {}).get("n")
    if n is not None and int(n) != info.num_actions:
        raise _mismatch(path, "number of actions", int(n), info.num_actions, info)
    shape = data.get("observation_space", {}).get("_shape")
    if shape is not None and tuple(shape) != info.obs_shape:
        raise _mismatch(path, "observation shape", tuple(shape), info.obs_shape, info)
    try:
        if algo == "qrdqn":
            from sb3_contrib import QRDQN as Algorithm
        else:
            from stable_baselines3 import DQN as Algorithm
    except ImportError as err:
        extra_pkg = "sb3-contrib" if algo == "qrdqn" else "stable-baselines3"
        raise MissingExtraError("rl", f"loading a {algo.upper()} teacher", extra_pkg) from err
    from socratic.rl.envs import gymnasium

    gym = gymnasium("loading an SB3 teacher")
    spaces = {"observation_space": gym.spaces.Box(0, 255 if info.input_scale == 255 else 1, info.obs_shape, "uint8"),
              "action_space": gym.spaces.Discrete(info.num_actions)}
    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "exploration_schedule": lambda _: 0.0,
              "buffer_size": 1, "optimize_memory_usage": False, "replay_buffer_class": None,
              "replay_buffer_kwargs": {}, **spaces}
    try:
        model = Algorithm.load(path, device=device, custom_objects=custom)
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"cannot load teacher {path} as {algo.upper()}: {err}") from err
    net = model.policy.quantile_net if algo == "qrdqn" else model.policy.q_net
    return freeze(SB3QTeacher(net, quantiles=algo == "qrdqn").to(device))


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


def qnetwork_checkpoint(net: QNetwork, info: EnvInfo, **meta: Any) -> dict[str, Any]:
    """A socratic Q-network checkpoint: loads with weights_only=True, as a teacher or for `rl evaluate`."""
    return {"model": net.state_dict(),
            "meta": {"kind": "rl_qnetwork", "net": net.spec(), "suite": info.suite, "game": info.game,
                     "env_id": info.env_id, **meta}}


def load_qnetwork(path: str | Path, info: EnvInfo | None = None, net_spec: dict[str, Any] | None = None,
                  role: str = "teacher") -> tuple[QNetwork, dict[str, Any]]:
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
                 device: str | torch.device = "cpu") -> nn.Module:
    """A frozen teacher for `info`'s environment from a .zip (SB3), a .pt/.pth (weights only), or
    `scripted:<name>` (a hand-written Q-function, see `SCRIPTED_TEACHERS`)."""
    if str(path).startswith("scripted:"):
        return load_scripted_teacher(str(path)[len("scripted:"):], info).to(device)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    if path.suffix == ".zip":
        return load_sb3_teacher(path, info, algo, device)
    net, _ = load_qnetwork(path, info, net_spec, role="teacher")
    return freeze(net.to(device))


__all__ = ["SCRIPTED_TEACHERS", "SB3QTeacher", "freeze", "load_qnetwork", "load_sb3_teacher", "load_teacher",
           "qnetwork_checkpoint", "sb3_to_qnetwork", "zip_algo"]
