"""Read a Stable-Baselines3 DQN / QR-DQN `.zip` without unpickling anything.

An SB3 model file is a zip with a JSON `data` entry and `policy.pth` (a state dict). Objects that JSON cannot
hold (spaces, classes, schedules, `policy_kwargs` with a class in it) are stored as base64 *cloudpickles*, and
SB3's own `load` unpickles them all: a crafted file runs code on load. Next to each pickle SB3 also writes the
object's first-level attributes as plain JSON (or their `str()`), which is all a Q-network needs:

* the algorithm from `policy_class.__module__` (`...dqn.policies` or `...qrdqn.policies`);
* observation shape and dtype (`observation_space._shape`, `.dtype`) and the action count (`action_space.n`),
  checked against the environment;
* `policy_kwargs`: `net_arch`, `activation_fn` (a `torch.nn` activation, read from its class name),
  `features_extractor_class` (one of `KNOWN_EXTRACTORS`, read from its class name, never imported by name from
  the file), `features_extractor_kwargs` (plain JSON), `normalize_images`, `n_quantiles`.

The network is then built from SB3's own classes (`QNetwork`, `QuantileNetwork`, the features extractors), so it
computes exactly what `DQN.load(...).policy.q_net` computes, and the weights come from `policy.pth` read with
`torch.load(weights_only=True)` and loaded strictly (every tensor must fit). The observation space given to
those classes is the environment's, as in the unpickling path (`custom_objects`).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from socratic.engine.checkpoint import CheckpointError

# full class path in the file -> how we build it (the class is looked up here, never from the file's string)
KNOWN_EXTRACTORS = {
    "stable_baselines3.common.torch_layers.NatureCNN": "NatureCNN",
    "stable_baselines3.common.torch_layers.FlattenExtractor": "FlattenExtractor",
    "socratic.rl.sb3_extractor.QTrunkExtractor": "QTrunkExtractor",
}
# policy_kwargs that change the Q-network; the optimiser ones do not matter for a frozen teacher
ARCHITECTURE_KWARGS = ("net_arch", "activation_fn", "features_extractor_class", "features_extractor_kwargs",
                       "normalize_images", "n_quantiles")
IGNORED_KWARGS = ("optimizer_class", "optimizer_kwargs")

_CLASS = re.compile(r"^<class '([A-Za-z_][\w.]*)'>$")


class UnreadableZipError(CheckpointError):
    """An SB3 .zip whose network cannot be rebuilt from its readable (JSON) fields and `policy.pth`."""


@dataclass(frozen=True)
class SB3ZipSpec:
    """What the zip says about its Q-network, from JSON fields only."""

    algo: str  # dqn | qrdqn
    extractor: str  # a value of KNOWN_EXTRACTORS
    extractor_kwargs: dict[str, Any] = field(default_factory=dict)
    net_arch: tuple[int, ...] = ()
    activation: str = "ReLU"  # a torch.nn activation class name
    normalize_images: bool = True
    n_quantiles: int | None = None  # qrdqn only


def readable(item: Any) -> Any:
    """The plain-JSON view of one `data` entry: for a cloudpickled object, its readable attributes (the keys
    that do not start with ':'); anything else as it is."""
    if isinstance(item, dict) and ":serialized:" in item:
        return {k: v for k, v in item.items() if not str(k).startswith(":")}
    return item


def class_path(text: Any) -> str | None:
    """'pkg.mod.Name' from SB3's `str()` of a class, "<class 'pkg.mod.Name'>"; None for anything else."""
    match = _CLASS.match(text) if isinstance(text, str) else None
    return match.group(1) if match else None


def read_zip(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The JSON `data` entry (not deserialised) and the `policy.pth` state dict (weights_only=True)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [name for name in ("data", "policy.pth") if name not in names]
            if missing:
                raise UnreadableZipError(f"{path} is not a Stable-Baselines3 model file: it has no "
                                         f"{' and no '.join(repr(m) for m in missing)} entry")
            data = json.loads(archive.read("data"))
            weights = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise UnreadableZipError(f"{path} is not a readable zip file ({err})") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UnreadableZipError(f"{path}: the 'data' entry is not JSON ({err})") from err
    except Exception as err:  # torch.load(weights_only=True) refuses anything but tensors and plain data
        raise UnreadableZipError(f"{path}: 'policy.pth' is not a weights-only state dict "
                                 f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from err
    if not isinstance(data, dict):
        raise UnreadableZipError(f"{path}: the 'data' entry is not a JSON object")
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        raise UnreadableZipError(f"{path}: 'policy.pth' is not a state dict of tensors")
    return data, weights


def zip_algo(data: dict[str, Any]) -> str:
    """'dqn' or 'qrdqn' from the policy class' module name stored in the zip's JSON."""
    policy = readable(data.get("policy_class", {}))
    module = str(policy.get("__module__", "")) if isinstance(policy, dict) else ""
    if "qrdqn" in module:
        return "qrdqn"
    if "dqn" in module:
        return "dqn"
    raise ValueError(module or "unknown policy class")


def _int_list(path: Path, key: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UnreadableZipError(f"{path}: {key} must be a list of layer widths, got {value!r}")
    return tuple(value)


def zip_spaces(path: Path, data: dict[str, Any]) -> tuple[tuple[int, ...] | None, str | None, int | None]:
    """Observation shape and dtype and the action count from the readable fields (None where absent)."""
    obs, act = readable(data.get("observation_space")), readable(data.get("action_space"))
    shape = dtype = n = None
    if isinstance(obs, dict):
        raw = obs.get("_shape", obs.get("shape"))
        if raw is not None:
            if not isinstance(raw, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
                raise UnreadableZipError(f"{path}: observation_space._shape is not a list of sizes: {raw!r}")
            shape = tuple(raw)
        dtype = str(obs["dtype"]) if "dtype" in obs else None
    if isinstance(act, dict) and act.get("n") is not None:
        try:
            n = int(act["n"])
        except (TypeError, ValueError) as err:
            raise UnreadableZipError(f"{path}: action_space.n is not a number: {act['n']!r}") from err
    return shape, dtype, n


def resolve_algo(path: Path, data: dict[str, Any], algo: str = "auto") -> str:
    """`algo`, or for 'auto' the one the zip's JSON names."""
    if algo != "auto":
        return algo
    try:
        return zip_algo(data)
    except ValueError as err:
        raise UnreadableZipError(f"{path}: cannot tell DQN from QR-DQN ({err}); set teacher.algo to dqn or "
                                 "qrdqn") from err


def zip_spec(path: Path, data: dict[str, Any], weights: dict[str, Tensor], algo: str = "auto") -> SB3ZipSpec:
    """The Q-network's architecture from the zip's readable fields (and, where the file leaves the extractor to
    the policy's default, from the names of the weights)."""
    algo = resolve_algo(path, data, algo)
    kwargs = readable(data.get("policy_kwargs") or {})
    if not isinstance(kwargs, dict):
        raise UnreadableZipError(f"{path}: policy_kwargs is not readable: {kwargs!r}")
    unknown = sorted(set(kwargs) - set(ARCHITECTURE_KWARGS) - set(IGNORED_KWARGS))
    if unknown:
        raise UnreadableZipError(f"{path}: policy_kwargs {', '.join(unknown)} cannot be rebuilt without unpickling "
                                 f"(understood: {', '.join(ARCHITECTURE_KWARGS)})")
    prefix = "quantile_net." if algo == "qrdqn" else "q_net."
    extractor_class = kwargs.get("features_extractor_class")
    if extractor_class is None:  # the policy's default: NatureCNN for CnnPolicy, a flatten for MlpPolicy
        extractor = "NatureCNN" if any(k.startswith(prefix + "features_extractor.cnn.") for k in weights) \
            else "FlattenExtractor"
    else:
        full = class_path(extractor_class)
        if full not in KNOWN_EXTRACTORS:
            raise UnreadableZipError(f"{path}: features extractor {extractor_class!r} is not one that can be "
                                     f"built without unpickling ({', '.join(KNOWN_EXTRACTORS)})")
        extractor = KNOWN_EXTRACTORS[full]
    extractor_kwargs = kwargs.get("features_extractor_kwargs") or {}
    if not isinstance(extractor_kwargs, dict):
        raise UnreadableZipError(f"{path}: policy_kwargs.features_extractor_kwargs is not plain JSON: "
                                 f"{extractor_kwargs!r}")
    net_arch = kwargs.get("net_arch")
    net_arch = ([] if extractor == "NatureCNN" else [64, 64]) if net_arch is None else net_arch  # SB3's defaults
    activation = "ReLU"
    if kwargs.get("activation_fn") is not None:
        full = class_path(kwargs["activation_fn"]) or ""
        module, _, name = full.rpartition(".")
        if module != "torch.nn.modules.activation" or not isinstance(getattr(nn, name, None), type):
            raise UnreadableZipError(f"{path}: policy_kwargs.activation_fn {kwargs['activation_fn']!r} is not a "
                                     "torch.nn activation")
        activation = name
    normalize = kwargs.get("normalize_images", True)
    if not isinstance(normalize, bool):
        raise UnreadableZipError(f"{path}: policy_kwargs.normalize_images must be true or false, got {normalize!r}")
    n_quantiles = None
    if algo == "qrdqn":
        n_quantiles = kwargs.get("n_quantiles", data.get("n_quantiles", 200))
        if not isinstance(n_quantiles, int) or n_quantiles <= 0:
            raise UnreadableZipError(f"{path}: n_quantiles must be a positive integer, got {n_quantiles!r}")
    return SB3ZipSpec(algo, extractor, dict(extractor_kwargs), _int_list(path, "policy_kwargs.net_arch", net_arch),
                      activation, normalize, n_quantiles)


def _extractor(spec: SB3ZipSpec, observation_space: Any) -> nn.Module:
    kwargs = dict(spec.extractor_kwargs)
    if spec.extractor == "NatureCNN":
        from stable_baselines3.common.torch_layers import NatureCNN

        if not spec.normalize_images:
            kwargs["normalized_image"] = True  # as SB3's BaseModel does
        return NatureCNN(observation_space, **kwargs)
    if spec.extractor == "FlattenExtractor":
        from stable_baselines3.common.torch_layers import FlattenExtractor

        return FlattenExtractor(observation_space, **kwargs)
    from socratic.rl.sb3_extractor import QTrunkExtractor

    return QTrunkExtractor(observation_space, **kwargs)


def build_q_module(path: Path, spec: SB3ZipSpec, weights: dict[str, Tensor], observation_space: Any,
                   action_space: Any) -> nn.Module:
    """SB3's `QNetwork` (DQN) or `QuantileNetwork` (QR-DQN) built from `spec`, with the `q_net.*` /
    `quantile_net.*` weights of `policy.pth` loaded strictly."""
    prefix = "quantile_net." if spec.algo == "qrdqn" else "q_net."
    state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
    if not state:
        raise UnreadableZipError(f"{path}: policy.pth has no '{prefix}*' weights (keys: "
                                 f"{', '.join(sorted(weights)[:4]) or 'none'})")
    try:
        extractor = _extractor(spec, observation_space)
        common = {"features_extractor": extractor, "features_dim": extractor.features_dim,
                  "net_arch": list(spec.net_arch), "activation_fn": getattr(nn, spec.activation),
                  "normalize_images": spec.normalize_images}
        if spec.algo == "qrdqn":
            from sb3_contrib.qrdqn.policies import QuantileNetwork

            net = QuantileNetwork(observation_space, action_space, n_quantiles=spec.n_quantiles, **common)
        else:
            from stable_baselines3.dqn.policies import QNetwork

            net = QNetwork(observation_space, action_space, **common)
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:
        raise UnreadableZipError(f"{path}: cannot build its {spec.algo.upper()} network ({spec.extractor}, "
                                 f"net_arch {list(spec.net_arch)}) from the readable fields: {err}") from err
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise UnreadableZipError(f"{path}: the weights in policy.pth do not fit the network its JSON describes "
                                 f"({spec.algo.upper()}, {spec.extractor}, net_arch {list(spec.net_arch)}): "
                                 f"{detail[:400]}") from err
    return net


__all__ = ["ARCHITECTURE_KWARGS", "KNOWN_EXTRACTORS", "SB3ZipSpec", "UnreadableZipError", "build_q_module",
           "class_path", "read_zip", "readable", "resolve_algo", "zip_algo", "zip_spaces", "zip_spec"]


# ------------------------------------------------------------------------------ every other SB3 algorithm
# policy_class.__module__ in the zip's JSON -> the policy family (the class is ours, never the file's string)
POLICY_FAMILIES = {
    "stable_baselines3.dqn.policies": "dqn",
    "sb3_contrib.qrdqn.policies": "qrdqn",
    "stable_baselines3.common.policies": "actor_critic",  # PPO, A2C (ActorCriticPolicy)
    "stable_baselines3.ppo.policies": "actor_critic",
    "stable_baselines3.a2c.policies": "actor_critic",
    "stable_baselines3.sac.policies": "sac",
    "stable_baselines3.td3.policies": "td3",  # TD3 and DDPG
    "stable_baselines3.ddpg.policies": "td3",
}
FAMILY_ALGOS = {"dqn": "DQN", "qrdqn": "QR-DQN", "actor_critic": "PPO/A2C", "sac": "SAC", "td3": "TD3/DDPG"}
# policy_kwargs each family's policy class takes (beyond the spaces and lr_schedule), read as plain JSON
_POLICY_KWARGS = {
    "actor_critic": ("net_arch", "activation_fn", "ortho_init", "log_std_init", "share_features_extractor",
                     "features_extractor_class", "features_extractor_kwargs", "normalize_images"),
    "sac": ("net_arch", "activation_fn", "log_std_init", "clip_mean", "n_critics", "share_features_extractor",
            "features_extractor_class", "features_extractor_kwargs", "normalize_images"),
    "td3": ("net_arch", "activation_fn", "n_critics", "share_features_extractor", "features_extractor_class",
            "features_extractor_kwargs", "normalize_images"),
}
# accepted only at these values (the teacher's mean action does not depend on them otherwise)
_FIXED_KWARGS = {"use_sde": False, "squash_output": False}
_IGNORED_POLICY_KWARGS = ("optimizer_class", "optimizer_kwargs", "full_std", "use_expln")


def policy_family(path: Path, data: dict[str, Any]) -> str:
    """dqn | qrdqn | actor_critic (PPO, A2C) | sac | td3 (TD3, DDPG), from the policy class' module name."""
    policy = readable(data.get("policy_class", {}))
    module = str(policy.get("__module__", "")) if isinstance(policy, dict) else ""
    if module not in POLICY_FAMILIES:
        raise UnreadableZipError(f"{path}: policy class module '{module or 'unknown'}' is not one of the "
                                 f"Stable-Baselines3 policies socratic can rebuild "
                                 f"({', '.join(sorted(POLICY_FAMILIES))})")
    return POLICY_FAMILIES[module]


def _number_list(text: Any) -> list[float] | None:
    """SB3 stores a Box's low/high as numpy's str(): '[-2. -2.]' (or a number); None when unreadable."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return [float(text)]
    if not isinstance(text, str):
        return None
    tokens = re.findall(r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf)", text)
    return [float(t) for t in tokens] if tokens and "..." not in text else None


def zip_box_action(path: Path,
                   data: dict[str, Any]) -> tuple[tuple[int, ...], list[float] | None, list[float] | None] | None:
    """A Box action space's (shape, low, high) from the readable fields; None for a Discrete one."""
    act = readable(data.get("action_space"))
    if not isinstance(act, dict) or act.get("n") is not None:
        return None
    raw = act.get("_shape", act.get("shape"))
    if not isinstance(raw, list) or not all(isinstance(v, int) for v in raw):
        raise UnreadableZipError(f"{path}: action_space has neither n nor a readable _shape: {raw!r}")
    return tuple(raw), _number_list(act.get("low")), _number_list(act.get("high"))


def policy_kwargs_for(path: Path, data: dict[str, Any], family: str) -> dict[str, Any]:
    """The constructor arguments of an actor-critic / SAC / TD3 policy from `policy_kwargs`, as plain values."""
    kwargs = readable(data.get("policy_kwargs") or {})
    if not isinstance(kwargs, dict):
        raise UnreadableZipError(f"{path}: policy_kwargs is not readable: {kwargs!r}")
    known = _POLICY_KWARGS[family]
    unknown = sorted(set(kwargs) - set(known) - set(_FIXED_KWARGS) - set(_IGNORED_POLICY_KWARGS))
    if unknown:
        raise UnreadableZipError(f"{path}: policy_kwargs {', '.join(unknown)} cannot be rebuilt without unpickling "
                                 f"(understood: {', '.join(known)})")
    for key, value in _FIXED_KWARGS.items():
        if key in kwargs and kwargs[key] != value:
            raise UnreadableZipError(f"{path}: policy_kwargs.{key}={kwargs[key]!r} is not supported (only {value})")
    out: dict[str, Any] = {}
    for key in known:
        if key not in kwargs or kwargs[key] is None:
            continue
        value = kwargs[key]
        if key == "net_arch":
            ok = (isinstance(value, list) and all(isinstance(v, int) for v in value)) or (
                isinstance(value, dict) and all(isinstance(v, list) and all(isinstance(w, int) for w in v)
                                                for v in value.values()))
            if not ok:
                raise UnreadableZipError(f"{path}: policy_kwargs.net_arch is not a list (or dict of lists) of layer "
                                         f"widths: {value!r}")
        elif key == "activation_fn":
            full = class_path(value) or ""
            module, _, name = full.rpartition(".")
            if module != "torch.nn.modules.activation" or not isinstance(getattr(nn, name, None), type):
                raise UnreadableZipError(f"{path}: policy_kwargs.activation_fn {value!r} is not a torch.nn activation")
            value = getattr(nn, name)
        elif key == "features_extractor_class":
            full = class_path(value)
            if full not in KNOWN_EXTRACTORS or KNOWN_EXTRACTORS[full] == "QTrunkExtractor":
                raise UnreadableZipError(f"{path}: features extractor {value!r} is not one that can be built without "
                                         "unpickling (NatureCNN, FlattenExtractor)")
            from stable_baselines3.common import torch_layers

            value = getattr(torch_layers, KNOWN_EXTRACTORS[full])
        elif key == "features_extractor_kwargs" and not isinstance(value, dict):
            raise UnreadableZipError(f"{path}: policy_kwargs.features_extractor_kwargs is not plain JSON: {value!r}")
        elif key in ("ortho_init", "share_features_extractor", "normalize_images") and not isinstance(value, bool):
            raise UnreadableZipError(f"{path}: policy_kwargs.{key} must be true or false, got {value!r}")
        elif key in ("log_std_init", "clip_mean") and not isinstance(value, (int, float)):
            raise UnreadableZipError(f"{path}: policy_kwargs.{key} must be a number, got {value!r}")
        elif key == "n_critics" and not (isinstance(value, int) and value > 0):
            raise UnreadableZipError(f"{path}: policy_kwargs.n_critics must be a positive integer, got {value!r}")
        out[key] = value
    return out


def build_policy(path: Path, family: str, kwargs: dict[str, Any], weights: dict[str, Tensor], observation_space: Any,
                 action_space: Any) -> nn.Module:
    """SB3's ActorCriticPolicy / SACPolicy / TD3Policy built from plain kwargs, with all of policy.pth loaded
    strictly (actor, critics and targets: every tensor must fit)."""
    if family == "actor_critic":
        from stable_baselines3.common.policies import ActorCriticPolicy as Policy
    elif family == "sac":
        from stable_baselines3.sac.policies import SACPolicy as Policy
    else:
        from stable_baselines3.td3.policies import TD3Policy as Policy
    try:
        policy = Policy(observation_space, action_space, lambda _: 0.0, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as err:
        raise UnreadableZipError(f"{path}: cannot build its {FAMILY_ALGOS[family]} policy from the readable fields: "
                                 f"{err}") from err
    try:
        policy.load_state_dict(weights)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise UnreadableZipError(f"{path}: the weights in policy.pth do not fit the {FAMILY_ALGOS[family]} policy its "
                                 f"JSON describes: {detail[:400]}") from err
    return policy


__all__ += ["FAMILY_ALGOS", "POLICY_FAMILIES", "build_policy", "policy_family", "policy_kwargs_for", "zip_box_action"]
