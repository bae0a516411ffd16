"""YAML -> validated `ExperimentConfig`, with dotted command-line overrides.

Every error names the dotted key and what would be valid, so a typo never silently becomes a default.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from socratic.config.schema import ExperimentConfig

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
        return _build(tp, value, key)
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


def _build(cls: type, values: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key '{dotted}'; valid keys here: {_section_keys(cls)}")
        kwargs[key] = _convert(value, hints[key], dotted)
    return cls(**kwargs)


def config_from_dict(values: dict) -> ExperimentConfig:
    """Build and validate an `ExperimentConfig` from plain data."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(values).__name__}")
    config = _build(ExperimentConfig, values, "")
    validate(config)
    return config


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
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
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
    "data.name": ("fashion_mnist", "cifar10", "cifar100", "imagefolder"),
    "optim.schedule": ("multistep", "cosine", "constant"),
    "optim.optimizer": ("sgd", "adam", "rmsprop"),
    "runtime.precision": ("fp32", "bf16", "fp16"),
}


def _get(config: ExperimentConfig, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def validate(config: ExperimentConfig) -> None:
    """Value checks beyond types: choices, ranges, and what each method needs."""
    from socratic.distillers import is_multi_teacher, list_distillers  # late import: distillers import the schema

    choices = {**_CHOICES, "method.name": tuple(list_distillers())}
    for key, allowed in choices.items():
        value = _get(config, key)
        if value not in allowed:
            raise ConfigError(f"{key}: '{value}' is not one of {', '.join(allowed)}")
    positive = ["data.batch_size", "data.eval_batch_size", "optim.epochs", "optim.lr", "runtime.eval_every"]
    for key in positive:
        if _get(config, key) <= 0:
            raise ConfigError(f"{key} must be > 0, got {_get(config, key)}")
    non_negative = [
        "optim.momentum", "optim.weight_decay", "optim.warmup_epochs", "optim.min_lr",
        "method.ce_weight", "method.kd_weight", "method.hint_weight",
    ]
    for key in non_negative:
        if _get(config, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {_get(config, key)}")
    if config.method.temperature <= 0:
        raise ConfigError(f"method.temperature must be > 0, got {config.method.temperature}")
    subset = config.data.train_subset
    if subset is not None and (subset <= 0 or (subset > 1 and subset != int(subset))):
        raise ConfigError(f"data.train_subset must be a fraction in (0, 1] or a whole count > 1, got {subset}")
    if sorted(config.optim.milestones) != config.optim.milestones:
        raise ConfigError(f"optim.milestones must be increasing, got {config.optim.milestones}")
    needs_teacher = config.method.name != "ce"
    multi_teacher = is_multi_teacher(config.method.name)
    if multi_teacher and len(config.teachers) < 2:
        raise ConfigError(f"method.name '{config.method.name}' is a multi-teacher method: it needs >= 2 entries in "
                          f"teachers, got {len(config.teachers)}")
    if needs_teacher and not multi_teacher and len(config.teachers) != 1:
        raise ConfigError(
            f"method.name '{config.method.name}' needs exactly one entry in teachers, got {len(config.teachers)}"
        )
    if not needs_teacher and config.teachers:
        raise ConfigError("method.name 'ce' trains without a teacher: remove the teachers list")
    for i, teacher in enumerate(config.teachers):
        if not teacher.checkpoint:
            raise ConfigError(f"teachers.{i}.checkpoint is required: a teacher must be trained first")
    _validate_da(config)
    _validate_multiteacher(config)


def _validate_da(config: ExperimentConfig) -> None:
    """The `da` section is checked even when disabled, so a typo never waits for the day it is enabled."""
    from socratic.augment.disagreement import check_options  # late import: keeps the config package light

    da = config.da
    try:
        check_options(steps=da.steps, lr=da.lr, prob=da.prob, objective=da.objective, optimizer=da.optimizer,
                      temperature=da.temperature, clamp=da.clamp, target=da.target, after_every=da.after_every)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if not da.enabled:
        return
    if not config.teachers:
        raise ConfigError(f"da.enabled: Disagreement Augmentation needs a teacher, and method.name "
                          f"'{config.method.name}' has none (use a distillation method such as kd with teachers)")
    if da.target == "weighted":
        from socratic.distillers import is_multi_teacher

        if not is_multi_teacher(config.method.name):
            raise ConfigError(f"da.target=weighted needs a multi-teacher method (aver, ebkd, camkd, aekd, mtkd_rl) "
                              f"whose teacher weights it uses; method.name is '{config.method.name}'")
    elif da.target != "mean" and da.target >= len(config.teachers):
        raise ConfigError(f"da.target={da.target} but the config has {len(config.teachers)} teacher(s): "
                          f"use 'mean' or 0..{len(config.teachers) - 1}")


# method keys a multi-teacher method does not read (its loss weights live in the multiteacher section)
_UNUSED_BY_MULTI_TEACHER = {
    "temperature": "set multiteacher.temperature instead", "ce_weight": "the CE weight is 1, as in Eq. (2)",
    "kd_weight": "set multiteacher.alpha instead", "hint_weight": "set multiteacher.beta instead",
    "hint_layer": "set multiteacher.feature_layer instead",
}


def _validate_multiteacher(config: ExperimentConfig) -> None:
    """The `multiteacher` section is checked whatever the method; a multi-teacher method refuses method keys
    set away from their defaults, since it would silently ignore them."""
    from socratic.distillers import is_multi_teacher
    from socratic.multiteacher.options import check_options

    try:
        check_options(config.multiteacher)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if not is_multi_teacher(config.method.name):
        return
    defaults = dataclasses.asdict(type(config.method)())
    for key, instead in _UNUSED_BY_MULTI_TEACHER.items():
        if getattr(config.method, key) != defaults[key]:
            raise ConfigError(f"method.{key} is not used by the multi-teacher method '{config.method.name}': "
                              f"remove it ({instead})")
