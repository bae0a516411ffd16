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

Every loader refuses weights holding NaN or inf. A teacher is an `nn.Module` mapping states (B, C, H, W) on
their own scale to Q-values (B, A); it is returned in eval mode with frozen parameters (gradients still flow
to its *input*, which DA needs).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from socratic.engine.checkpoint import CheckpointError, check_finite, load_checkpoint, load_weights, model_state
from socratic.rl.envs import EnvInfo
from socratic.rl.errors import MissingExtraError
from socratic.rl.networks import QNetwork
from socratic.rl.sb3_zip import (UnreadableZipError, build_q_module, read_zip, resolve_algo, zip_algo, zip_spaces,
                                zip_spec)


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


def _spaces(info: EnvInfo) -> dict[str, Any]:
    """The environment's observation and action spaces, which both loaders give the network (not the file's)."""
    from socratic.rl.envs import gymnasium

    gym = gymnasium("loading an SB3 teacher")
    return {"observation_space": gym.spaces.Box(0, 255 if info.input_scale == 255 else 1, info.obs_shape, "uint8"),
            "action_space": gym.spaces.Discrete(info.num_actions)}


def _sb3_classes(algo: str) -> None:
    try:
        if algo == "qrdqn":
            import sb3_contrib  # noqa: F401
        else:
            import stable_baselines3  # noqa: F401
    except ImportError as err:
        extra_pkg = "sb3-contrib" if algo == "qrdqn" else "stable-baselines3"
        raise MissingExtraError("rl", f"loading a {algo.upper()} teacher", extra_pkg) from err


def _check_fits(path: Path, data: dict[str, Any], info: EnvInfo) -> None:
    shape, dtype, n = zip_spaces(path, data)
    if n is not None and n != info.num_actions:
        raise _mismatch(path, "number of actions", n, info.num_actions, info)
    if shape is not None and shape != info.obs_shape:
        raise _mismatch(path, "observation shape", shape, info.obs_shape, info)
    if dtype is not None and dtype != "uint8":
        raise _mismatch(path, "observation dtype", dtype, "uint8", info)


def _unpickling_load(path: Path, info: EnvInfo, algo: str, device: str | torch.device) -> nn.Module:
    """Today's SB3 `Algorithm.load`: unpickles every object stored in the zip (runs any code in it)."""
    print(f"warning: unpickling {path} with Stable-Baselines3's loader (trust_pickle is set): any code stored "
          "in this file runs now", file=sys.stderr, flush=True)
    if algo == "qrdqn":
        from sb3_contrib import QRDQN as Algorithm
    else:
        from stable_baselines3 import DQN as Algorithm
    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "exploration_schedule": lambda _: 0.0,
              "buffer_size": 1, "optimize_memory_usage": False, "replay_buffer_class": None,
              "replay_buffer_kwargs": {}, **_spaces(info)}
    try:
        model = Algorithm.load(path, device=device, custom_objects=custom)
        return model.policy.quantile_net if algo == "qrdqn" else model.policy.q_net
    except Exception as err:  # a file we were told to trust may still be broken in any way
        raise UnreadableZipError(f"cannot load teacher {path} as {algo.upper()} even by unpickling: "
                                 f"{type(err).__name__}: {err}") from err


def load_sb3_teacher(path: str | Path, info: EnvInfo, algo: str = "auto", device: str | torch.device = "cpu",
                     trust_pickle: bool = False) -> SB3QTeacher:
    """Load an SB3 DQN or QR-DQN .zip and check it fits the environment.

    By default nothing in the file is unpickled: the network is rebuilt from the zip's JSON fields and the
    weights of `policy.pth` read with `weights_only=True` (see `socratic.rl.sb3_zip`). Only `trust_pickle`
    takes SB3's own `load`, which unpickles (runs) whatever the file holds, and says so on stderr. A file
    that cannot be read is a `CheckpointError` naming it and what is missing (exit code 2 in the CLI).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    data, weights = read_zip(path)
    algo = resolve_algo(path, data, algo)
    _check_fits(path, data, info)  # a teacher for another game is refused before anything else
    _sb3_classes(algo)
    if trust_pickle:
        net = _unpickling_load(path, info, algo, device)
    else:
        try:
            net = build_q_module(path, zip_spec(path, data, weights, algo), weights, **_spaces(info))
        except UnreadableZipError as err:
            raise UnreadableZipError(f"{err}. Nothing was unpickled; if you trust this file, --trust-pickle (or "
                                     "teacher.trust_pickle: true) loads it with Stable-Baselines3's unpickling "
                                     "loader") from err
    check_finite(net.state_dict(), path, role="teacher")
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
                 device: str | torch.device = "cpu", trust_pickle: bool = False) -> nn.Module:
    """A frozen teacher for `info`'s environment from a .zip (SB3, read without unpickling unless
    `trust_pickle`), a .pt/.pth (weights only), or `scripted:<name>` (a hand-written Q-function, see
    `SCRIPTED_TEACHERS`). Weights holding NaN or inf are refused."""
    if str(path).startswith("scripted:"):
        return load_scripted_teacher(str(path)[len("scripted:"):], info).to(device)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    if path.suffix == ".zip":
        return load_sb3_teacher(path, info, algo, device, trust_pickle=trust_pickle)
    net, _ = load_qnetwork(path, info, net_spec, role="teacher")
    return freeze(net.to(device))


__all__ = ["SCRIPTED_TEACHERS", "SB3QTeacher", "freeze", "load_qnetwork", "load_sb3_teacher", "load_teacher",
           "qnetwork_checkpoint", "sb3_to_qnetwork", "zip_algo"]
