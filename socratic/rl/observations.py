"""What a teacher saw: its observation layout and normalisation, adapted from socratic's, and the RL-Zoo folder.

A teacher trained elsewhere saw the environment's observations as *its* training set-up made them, which is not
always socratic's layout (image suites give (C, H, W), continuous-control suites float vectors):

* channels last: MinAtar's native (10, 10, C) or SB3's Atari wrappers' (84, 84, 4) against socratic's (C, H, W):
  the teacher gets the socratic state permuted back (`ToChannelsLast`);
* flattened: a `FlattenObservation` of the native (channels-last) frame, (H * W * C,): permuted, then flattened;
* frame-stacked: SB3's `VecFrameStack` stacks on the last axis, so an Atari teacher's (84, 84, 4) is socratic's
  (4, 84, 84) frame stack channels-last; a stack socratic's suite does not make (another number of frames) has
  another size and is refused;
* normalised: a `VecNormalize` file (`vecnormalize.pkl` / `vec_normalize.pkl`): the teacher gets
  clip((obs - mean) / sqrt(var + eps), -clip_obs, clip_obs) with the saved statistics (`NormalizeObservations`).

Anything else (another number of values) is refused by the caller, naming both shapes.

`vecnormalize.pkl` is a pickle; it is read with an unpickler that only rebuilds numpy arrays and dtypes and turns
the few SB3 / gymnasium classes it names into inert attribute holders, so reading it runs no code of the file
(`read_vecnormalize`). The RL-Zoo / Hugging Face layout (`find_zoo_files`): the model `.zip` and, beside it or in
a folder named after it, `config.yml`, `env_kwargs.yml` and the VecNormalize file.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from socratic.engine.checkpoint import CheckpointError

VECNORMALIZE_NAMES = ("vecnormalize.pkl", "vec_normalize.pkl")


class ToChannelsLast(nn.Module):
    """(B, C, H, W) -> (B, H, W, C), optionally flattened to (B, H * W * C)."""

    def __init__(self, flatten: bool = False) -> None:
        super().__init__()
        self.flatten = flatten

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        return x.reshape(x.shape[0], -1) if self.flatten else x


class Flatten(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


class NormalizeObservations(nn.Module):
    """VecNormalize's observation transform with frozen statistics: clip((x - mean) / sqrt(var + eps), +-clip)."""

    def __init__(self, mean: np.ndarray, var: np.ndarray, clip: float, epsilon: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("std", torch.sqrt(torch.as_tensor(np.asarray(var, dtype=np.float32)) + float(epsilon)))
        self.clip = float(clip)

    def forward(self, x: Tensor) -> Tensor:
        return ((x.float() - self.mean) / self.std).clamp(-self.clip, self.clip)


def layout_adapter(teacher_shape: tuple[int, ...], env_shape: tuple[int, ...]) -> tuple[nn.Module | None, str]:
    """The module that turns socratic's states (`env_shape`) into the teacher's (`teacher_shape`), and its name;
    (None, reason) when no layout fits (another observation size)."""
    if teacher_shape == env_shape:
        return nn.Identity(), "as socratic's"
    if len(env_shape) == 3:
        c, h, w = env_shape
        if teacher_shape == (h, w, c):
            return ToChannelsLast(), "channels-last"
        if teacher_shape == (h * w * c,):
            return ToChannelsLast(flatten=True), "flattened (channels-last)"
    if len(teacher_shape) == 1 and math.prod(env_shape) == teacher_shape[0] and len(env_shape) != 3:
        return Flatten(), "flattened"
    return None, f"another observation size ({math.prod(teacher_shape)} values against {math.prod(env_shape)})"


# ------------------------------------------------------------------------------------------- VecNormalize
class _Inert:
    """Stands in for a class named by a VecNormalize pickle: takes its state as attributes, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


_INERT = {
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
    ("gymnasium.spaces.box", "Box"),
    ("gymnasium.spaces.discrete", "Discrete"),
    ("gym.spaces.box", "Box"),
}
_NUMPY = {
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy.random._pickle", "__generator_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"), ("collections", "OrderedDict"),
    ("numpy.random._generator", "Generator"), ("numpy.random._pcg64", "PCG64"), ("numpy.random._pcg64", "PCG64DXSM"),
    ("numpy.random._mt19937", "MT19937"), ("numpy.random._philox", "Philox"), ("numpy.random._sfc64", "SFC64"),
    ("numpy.random.bit_generator", "SeedSequence"), ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _INERT:
            return type(name, (_Inert,), {})
        if (module, name) in _NUMPY:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a VecNormalize file does not hold")


@dataclass(frozen=True)
class VecNormalizeStats:
    mean: np.ndarray
    var: np.ndarray
    clip_obs: float
    epsilon: float

    def module(self) -> NormalizeObservations:
        return NormalizeObservations(self.mean, self.var, self.clip_obs, self.epsilon)


def read_vecnormalize(path: Path) -> VecNormalizeStats | None:
    """The observation statistics of an SB3 `VecNormalize.save` file, read without running code from it;
    None when it did not normalise observations."""
    try:
        with open(path, "rb") as file:
            saved = _SafeUnpickler(file).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError) as err:
        raise CheckpointError(f"{path} is not a VecNormalize file that can be read safely ({err})") from err
    if not saved.__dict__.get("norm_obs", True):
        return None
    rms = saved.__dict__.get("obs_rms")
    if rms is None or not hasattr(rms, "mean") or not hasattr(rms, "var"):
        raise CheckpointError(f"{path}: no observation statistics (obs_rms with mean and var); dictionary "
                              "observations are not supported")
    mean, var = np.asarray(rms.mean, dtype=np.float64), np.asarray(rms.var, dtype=np.float64)
    if mean.shape != var.shape or not (np.isfinite(mean).all() and np.isfinite(var).all()) or (var < 0).any():
        raise CheckpointError(f"{path}: observation statistics are not finite, non-negative arrays of one shape")
    return VecNormalizeStats(mean, var, float(saved.__dict__.get("clip_obs", 10.0)),
                             float(saved.__dict__.get("epsilon", 1e-8)))


# ------------------------------------------------------------------------------------- RL-Zoo / HF layout
class _ZooLoader(yaml.SafeLoader):
    """RL-Zoo writes config.yml with `yaml.dump` of an OrderedDict: read that tag as a plain mapping."""


_ZooLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict",
                           lambda loader, node: dict(loader.construct_sequence(node, deep=True)[0]))


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=_ZooLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise CheckpointError(f"{path} is not readable YAML ({str(err).splitlines()[0]})") from err


@dataclass(frozen=True)
class ZooFiles:
    """A teacher's model file and what RL-Zoo / the Hugging Face hub put beside it."""

    model: Path
    config: dict[str, Any]
    env_kwargs: dict[str, Any]
    vecnormalize: Path | None
    config_path: Path | None = None


def find_zoo_files(path: Path) -> ZooFiles:
    """`path` is a model .zip or a folder holding exactly one; config.yml, env_kwargs.yml and the VecNormalize
    file are looked for beside the .zip and in the folder named after it (RL-Zoo: `<Env>_1/<Env>.zip` and
    `<Env>_1/<Env>/config.yml`; the hub: all in one folder)."""
    if path.is_dir():
        zips = sorted(path.glob("*.zip"))
        if len(zips) != 1:
            raise CheckpointError(f"teacher folder {path} must hold exactly one SB3 model .zip, found "
                                  f"{len(zips)}{': ' + ', '.join(z.name for z in zips) if zips else ''}")
        path = zips[0]
    places = [path.parent, path.parent / path.stem]

    def find(*names: str) -> Path | None:
        for place in places:
            for name in names:
                if (place / name).is_file():
                    return place / name
        return None

    config_path, kwargs_path = find("config.yml"), find("env_kwargs.yml")
    config = _read_yaml(config_path) if config_path else {}
    if isinstance(config, list):  # RL-Zoo's list of [key, value] pairs
        config = dict(config)
    env_kwargs = (_read_yaml(kwargs_path) or {}) if kwargs_path else {}
    if not isinstance(config, dict) or not isinstance(env_kwargs, dict):
        raise CheckpointError(f"{config_path or kwargs_path}: expected a mapping")
    return ZooFiles(path, config, env_kwargs, find(*VECNORMALIZE_NAMES), config_path)


def check_zoo_config(files: ZooFiles, env_shape: tuple[int, ...]) -> None:
    """Refuse what socratic's environment cannot reproduce: env kwargs, a frame stack its suite does not make,
    `normalize` without its statistics file."""
    if files.env_kwargs:
        raise CheckpointError(f"teacher {files.model} was trained with env_kwargs {files.env_kwargs}; socratic's "
                              "environments use gymnasium's defaults, so the teacher would see another task")
    normalize = files.config.get("normalize", False)
    if normalize not in (False, None, "false", "False") and files.vecnormalize is None:
        raise CheckpointError(f"teacher {files.model}: {files.config_path} says normalize: {normalize}, but there "
                              f"is no {' or '.join(VECNORMALIZE_NAMES)} beside it; without the statistics the teacher "
                              "would not see what it was trained on")
    stack = files.config.get("frame_stack")
    if stack and len(env_shape) != 3:
        raise CheckpointError(f"teacher {files.model} was trained with frame_stack: {stack}; socratic's "
                              f"{len(env_shape)}-d observations are not stacked")


__all__ = ["Flatten", "NormalizeObservations", "ToChannelsLast", "VECNORMALIZE_NAMES", "VecNormalizeStats",
           "ZooFiles", "check_zoo_config", "find_zoo_files", "layout_adapter", "read_vecnormalize"]
