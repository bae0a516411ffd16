"""YAML -> validated `ExperimentConfig`, with dotted command-line overrides.

Every error names the dotted key and what would be valid, so a typo never silently becomes a default. A section
that selects a component (`method`, `data.augment`) is built with the options class that the registry gives for
its `name`; this module imports no method code.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import warnings

import yaml

from socratic.config.schema import ExperimentConfig
from socratic.registry import AUGMENTATIONS, DATASETS, METHODS, Options, Registry, UnknownComponentError

# a number in exponent form without a dot (1e-3, 5E+2), which YAML 1.1 leaves as a string
_YAML11_FLOAT = re.compile(r"[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+")


class ConfigError(ValueError):
    """An invalid configuration: unknown key, wrong type or value out of range."""


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` and return it converted (dicts -> dataclasses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {_section_keys(tp)}, got {value!r}")
        return build_dataclass(tp, value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp) or (Any,)
        return [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; it means the number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _section_keys(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def build_dataclass(cls: type, values: dict, prefix: str, what: str = "here") -> Any:
    """A config dataclass from plain data: each key converted to its field's type (component sections through
    the registry); an unknown key is a ConfigError naming the dotted key and the valid ones."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{dotted}'; valid keys {what}: {_section_keys(cls)}")
        registry = fields[key].metadata.get("registry")
        if registry is not None and value is None and fields[key].metadata.get("optional"):
            kwargs[key] = None
        elif registry is not None:
            kwargs[key] = build_component(registry, value, dotted, default=fields[key].metadata["default"])
        else:
            kwargs[key] = _convert(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except TypeError as err:  # a dataclass field without a default that the mapping did not give
        raise ConfigError(f"{prefix or 'config'}: {err}") from err


def build_component(registry: Registry, value: Any, key: str, default: str | None = None) -> Options:
    """The options of the component that `value` (a mapping with `name`, or just the name) selects, built and
    checked by that component's own options class; errors name `key` and the valid keys of that component."""
    if isinstance(value, Options):
        values = dataclasses.asdict(value)
    elif isinstance(value, str):
        values = {"name": value}
    elif isinstance(value, dict):
        values = dict(value)
    else:
        raise ConfigError(f"{key}: expected a mapping with a 'name' (one of {', '.join(registry.names())}) "
                          f"or a name, got {value!r}")
    name = values.get("name", default)
    if not isinstance(name, str):
        raise ConfigError(f"{key}.name is required: one of {', '.join(registry.names())}")
    try:
        entry = registry.get(name)
    except UnknownComponentError as err:
        raise ConfigError(f"{key}.name: {err}") from None
    options = build_dataclass(entry.options or Options, {**values, "name": entry.name}, key,
                              what=f"for {registry.kind} '{entry.name}'")
    try:
        options.check(key)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return options


def config_from_dict(values: dict) -> ExperimentConfig:
    """Build and validate an `ExperimentConfig` from plain data (the layout of socratic 0.1 is migrated)."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(values).__name__}")
    values = migrate_legacy(values)
    data = values.get("data", {})
    if isinstance(data, dict) and "augment" not in data:  # the dataset's own default augmentation
        name = data.get("name", "fashion_mnist")
        if isinstance(name, str) and name in DATASETS:
            values = {**values, "data": {**data, "augment": dict(DATASETS.get(name).meta.get("augment",
                                                                                            {"name": "none"}))}}
    config = build_dataclass(ExperimentConfig, values, "")
    validate(config)
    return config


# method keys of socratic 0.1's flat `method` section, by the methods that read them
_LEGACY_METHOD_KEYS = {"ce": (), "kd": ("temperature", "ce_weight", "kd_weight"),
                       "fitnet": ("ce_weight", "hint_weight", "hint_layer")}
_LEGACY_FLAT_KEYS = ("temperature", "ce_weight", "kd_weight", "hint_weight", "hint_layer")


def migrate_legacy(values: dict) -> dict:
    """A config in socratic 0.1's layout (a flat `method` section beside a `multiteacher` section, `data.augment`
    a boolean; every saved `config.yaml` of that version has the `multiteacher` key) in today's layout: the keys
    the selected method reads move into `method`, the others are dropped. Anything else is returned unchanged."""
    data = values.get("data")
    legacy_augment = isinstance(data, dict) and isinstance(data.get("augment"), bool)
    if "multiteacher" not in values and not legacy_augment:
        return values
    values = dict(values)
    if legacy_augment:
        data = dict(data)
        if data["augment"]:
            del data["augment"]  # the dataset's default, as in 0.1
        else:
            data["augment"] = {"name": "none"}
        values["data"] = data
    if "multiteacher" in values:
        multiteacher = values.pop("multiteacher") or {}
        method = dict(values.get("method") or {})
        name = method.get("name", "ce")
        if name in _LEGACY_METHOD_KEYS:
            keep = _LEGACY_METHOD_KEYS[name]
            method = {k: v for k, v in method.items() if k == "name" or k in keep or k not in _LEGACY_FLAT_KEYS}
        elif isinstance(multiteacher, dict):  # a multi-teacher method: its options were the multiteacher section
            method = {"name": name, **{k: v for k, v in method.items() if k not in _LEGACY_FLAT_KEYS and k != "name"},
                      **multiteacher}
        values["method"] = method
    warnings.warn("this config has the layout of socratic 0.1 (a 'multiteacher' section or a boolean "
                  "data.augment); it was migrated: method options now live in the method section "
                  "(docs/configs.md)", stacklevel=3)
    return values


def resolve_saved(values: dict, build: Callable[[dict], Any] | None = None) -> dict:
    """A saved config.yaml in today's layout with today's defaults (older layouts migrated, sections added since
    filled in), so that resumes and reports compare like with like; as saved when it no longer validates.
    `build` turns plain data into a config (default: `config_from_dict`; the RL commands pass their own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 0.1-layout warning is for configs a user writes
        try:
            return dataclasses.asdict((build or config_from_dict)(values))
        except ConfigError:
            return values


def config_to_dict(config: ExperimentConfig) -> dict:
    """Plain data for YAML/JSON (the resolved config saved in each run folder)."""
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optim.lr=0.01` -> (['optim', 'lr'], 0.01); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.subkey=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML ({err})") from err
    return key.split("."), value


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict; a numeric part indexes a list (`teachers.0.checkpoint=...`),
    and the index one past the end appends a new item."""
    for text in overrides:
        path, value = parse_override(text)
        node: Any = values
        for i, part in enumerate(path[:-1]):
            child: Any = [] if path[i + 1].isdigit() else {}
            if isinstance(node, list):
                index = _list_index(node, part, path[: i + 1])
                if index == len(node):
                    node.append(child)
                node = node[index]
            else:
                node = node.setdefault(part, child)
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"override '{text}': '{'.'.join(path[: i + 1])}' is not a section")
        last = path[-1]
        if isinstance(node, list):
            index = _list_index(node, last, path)
            node[index:index + 1] = [value]
        else:
            node[last] = value
    return values


def _list_index(node: list, part: str, path: list[str]) -> int:
    if not part.isdigit() or int(part) > len(node):
        raise ConfigError(f"'{'.'.join(path)}': list index must be 0..{len(node)}")
    return int(part)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if values is None:
        raise ConfigError(f"{path} is empty: a config names at least its data, student and method "
                          "(see configs/ for examples; docs/configs.md lists every key)")
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return values


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or start from defaults when `path` is None) and apply dotted overrides."""
    values = read_yaml(path) if path is not None else {}
    values = apply_overrides(values, list(overrides or []))
    return config_from_dict(values)


def save_config(config: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


_CHOICES = {
    "optim.schedule": ("multistep", "cosine", "constant"),
    "optim.optimizer": ("sgd", "adam", "rmsprop"),
    "runtime.precision": ("auto", "fp32", "bf16", "fp16"),
    "search.direction": ("maximize", "minimize"),
}


def _get(config: ExperimentConfig, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def teacher_count_text(low: int, high: int | None) -> str:
    if high == low:
        return f"exactly {low}" if low else "no"
    return f">= {low}" if high is None else f"{low} to {high}"


def validate(config: ExperimentConfig) -> None:
    """Value checks beyond types and the components' own checks: choices, ranges, what a method needs."""
    choices = {**_CHOICES, "data.name": tuple(DATASETS.names())}
    for key, allowed in choices.items():
        value = _get(config, key)
        if value not in allowed:
            raise ConfigError(f"{key}: '{value}' is not one of {', '.join(allowed)}")
    positive = ["data.batch_size", "data.eval_batch_size", "optim.epochs", "optim.lr", "runtime.eval_every"]
    for key in positive:
        if _get(config, key) <= 0:
            raise ConfigError(f"{key} must be > 0, got {_get(config, key)}")
    non_negative = ["optim.momentum", "optim.weight_decay", "optim.warmup_epochs", "optim.min_lr"]
    for key in non_negative:
        if _get(config, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {_get(config, key)}")
    subset = config.data.train_subset
    if subset is not None and (subset <= 0 or (subset > 1 and subset != int(subset))):
        raise ConfigError(f"data.train_subset must be a fraction in (0, 1] or a whole count > 1, got {subset}")
    if sorted(config.optim.milestones) != config.optim.milestones:
        raise ConfigError(f"optim.milestones must be increasing, got {config.optim.milestones}")
    method = METHODS.get(config.method.name)
    low, high = method.meta.get("teachers", (0, 0))
    count = len(config.teachers)
    if count < low or (high is not None and count > high):
        need = teacher_count_text(low, high)
        hint = ": remove the teachers list" if high == 0 else ""
        raise ConfigError(f"method.name '{method.name}' takes {need} teacher(s) (entries in teachers), "
                          f"got {count}{hint}")
    views = AUGMENTATIONS.get(config.data.augment.name).meta.get("views", 1)
    if views != method.meta.get("views", 1):
        takes = [e.name for e in AUGMENTATIONS.entries() if e.meta.get("views", 1) == method.meta.get("views", 1)]
        raise ConfigError(f"data.augment.name '{config.data.augment.name}' gives {views} view(s) of each image but "
                          f"method.name '{method.name}' takes {method.meta.get('views', 1)}: use one of "
                          f"{', '.join(takes)}")
    for i, teacher in enumerate(config.teachers):
        if not teacher.checkpoint:
            raise ConfigError(f"teachers.{i}.checkpoint is required: a teacher must be trained first")
    try:
        config.runtime.check("runtime")
        config.teacher_cache.check("teacher_cache")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if config.teacher_cache.enabled and not config.teachers:
        raise ConfigError(f"teacher_cache.enabled: method.name '{config.method.name}' has no teachers, so there is "
                          "nothing to cache (set teacher_cache.enabled=false)")
    _validate_da(config, method.meta)


def _validate_da(config: ExperimentConfig, method_meta: dict) -> None:
    """The `da` section is checked even when disabled, so a typo never waits for the day it is enabled."""
    da = config.da
    try:
        da.check("da")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if not da.enabled:
        return
    targets = method_meta.get("da_targets")  # an online method's options list of the models DA disagrees with
    count = len(getattr(config.method, targets)) if targets else len(config.teachers)
    what = f"method.{targets}" if targets else "teachers"
    if not count:
        raise ConfigError(f"da.enabled: Disagreement Augmentation needs a teacher, and method.name "
                          f"'{config.method.name}' has none (use a distillation method such as kd with teachers)")
    if da.target == "weighted":
        if not method_meta.get("teacher_weights"):
            weighted = [e.name for e in METHODS.entries() if e.meta.get("teacher_weights")]
            raise ConfigError(f"da.target=weighted needs a multi-teacher method ({', '.join(weighted)}) whose "
                              f"teacher weights it uses; method.name is '{config.method.name}'")
    elif da.target != "mean" and da.target >= count:
        raise ConfigError(f"da.target={da.target} but the config has {count} model(s) in {what}: "
                          f"use 'mean' or 0..{count - 1}")


# ------------------------------------------------------------------ value checks the config sections share
def check_positive(values: dict[str, Any]) -> None:
    """Every `key: value` (None = unset, skipped) is > 0 (NaN is not), else a ConfigError naming the key."""
    for key, value in values.items():
        if value is not None and not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")


def check_non_negative(values: dict[str, Any]) -> None:
    """Every `key: value` (None = unset, skipped) is >= 0, else a ConfigError naming the key."""
    for key, value in values.items():
        if value is not None and value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """`value` is one of `allowed`, else a ConfigError naming the key and the choices."""
    if value not in allowed:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(allowed)}")
