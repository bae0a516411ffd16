"""Search spaces: a YAML file naming config keys and their ranges, checked against the experiment schema.

```yaml
params:                                   # dotted experiment-config keys -> distributions
  da.steps: {type: int, low: 1, high: 3}
  da.lr: {type: float, low: 0.001, high: 0.1, log: true}   # or {type: log_float, ...}
  da.prob: {type: float, low: 0.1, high: 1.0}
  method.name: {type: categorical, choices: [kd, fitnet]}
fixed:                                    # overrides applied to every trial (optional)
  da.enabled: true
sampler: {name: tpe}                      # optional: tpe | random | cmaes | qmc | gp, plus constructor options
pruner: {name: hyperband, min_resource: 0.4, reduction_factor: 3}   # optional: hyperband | successive_halving
                                          # | median | none; a resource in (0, 1) is a fraction of optim.epochs
```

Every key is checked by applying it as a command-line override to the base config (at both ends of its
range, and every choice) and validating the result, so an unknown key or a value the schema refuses is a
`SearchSpaceError` naming the key before any trial runs.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from socratic.config import ConfigError
from socratic.config.loader import apply_overrides, config_from_dict, read_yaml

TYPES = ("float", "log_float", "int", "categorical")
TOP_LEVEL = ("params", "fixed", "sampler", "pruner")
RESERVED = ("name", "output_dir")  # set by the search for each trial


class SearchSpaceError(ConfigError):
    """An invalid search space: unknown config key, empty or inverted range, bad type."""


@dataclass(frozen=True)
class Param:
    """One searched config key and its distribution."""

    key: str
    type: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def probes(self) -> list[Any]:
        """Values that must all be valid config values: both ends of a range, or every choice."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "float":  # what suggest_float returns: a float (an integer key refuses it)
            return [float(self.low), float(self.high)]
        return [self.low, self.high]

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter from an optuna trial."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.key, list(self.choices))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        return out


@dataclass
class SearchSpace:
    """The parsed search-space file."""

    params: list[Param]
    fixed: dict[str, Any] = field(default_factory=dict)
    sampler: dict[str, Any] = field(default_factory=dict)
    pruner: dict[str, Any] = field(default_factory=dict)
    source: str = "<search space>"

    def fixed_overrides(self) -> list[str]:
        return [override(key, value) for key, value in self.fixed.items()]

    def trial_overrides(self, values: dict[str, Any]) -> list[str]:
        return self.fixed_overrides() + [override(key, value) for key, value in values.items()]

    def as_dict(self) -> dict[str, Any]:
        """Plain data (stored with the study so every worker can check it searches the same space)."""
        return {"params": {p.key: p.as_dict() for p in self.params}, "fixed": dict(self.fixed),
                "sampler": dict(self.sampler), "pruner": dict(self.pruner)}

    def check(self, base_values: dict[str, Any], build: Callable[[dict[str, Any]], Any] | None = None) -> None:
        """Apply `fixed` and each parameter's probe values to the base config and build it (`build`: plain data ->
        a validated config; default `config_from_dict`); any config error names the key."""
        build = build or config_from_dict
        try:
            build(apply_overrides(copy.deepcopy(base_values), self.fixed_overrides()))
        except ConfigError as err:
            raise SearchSpaceError(f"{self.source}: fixed: {err}") from err
        for param in self.params:
            for value in param.probes():
                values = copy.deepcopy(base_values)
                try:
                    build(apply_overrides(values, self.fixed_overrides() + [override(param.key, value)]))
                except ConfigError as err:
                    raise SearchSpaceError(
                        f"{self.source}: params.{param.key}: the value {value!r} does not make a valid experiment "
                        f"config: {err}"
                    ) from err


def override(key: str, value: Any) -> str:
    """A dotted command-line override `key=value` (the value as JSON, which YAML reads back unchanged)."""
    return f"{key}={json.dumps(value)}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_param(key: str, spec: Any, source: str) -> Param:
    where = f"{source}: params.{key}"
    if not isinstance(spec, dict):
        raise SearchSpaceError(f"{where}: expected a mapping like {{type: float, low: 0.001, high: 0.1}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise SearchSpaceError(f"{where}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SearchSpaceError(f"{where}: unknown field(s) {', '.join(unknown)}; "
                               f"a {kind} takes {', '.join(sorted(allowed))}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{where}: choices must be a non-empty list, got {choices!r}")
        for choice in choices:
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise SearchSpaceError(f"{where}: choice {choice!r} is not a number, string, boolean or null")
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise SearchSpaceError(f"{where}: choices contain duplicates: {choices}")
        return Param(key, "categorical", choices=tuple(choices))
    low, high = spec.get("low"), spec.get("high")
    is_int = kind == "int"
    for name, value in (("low", low), ("high", high)):
        if not _number(value) or (is_int and not isinstance(value, int)):
            raise SearchSpaceError(f"{where}: {name} must be {'an integer' if is_int else 'a number'}, got {value!r}")
    if low > high:
        raise SearchSpaceError(f"{where}: inverted range: low {low} > high {high}")
    if low == high:
        raise SearchSpaceError(f"{where}: empty range: low == high == {low} (put a single value under fixed:)")
    log = kind == "log_float" or bool(spec.get("log", False))
    if not isinstance(spec.get("log", False), bool):
        raise SearchSpaceError(f"{where}: log must be true or false, got {spec.get('log')!r}")
    if log and low <= 0:
        raise SearchSpaceError(f"{where}: a log range needs low > 0, got low {low}")
    step = spec.get("step")
    if step is not None:
        if not _number(step) or step <= 0 or (is_int and not isinstance(step, int)):
            kind_name = "integer" if is_int else "number"
            raise SearchSpaceError(f"{where}: step must be a positive {kind_name}, got {step!r}")
        if log:
            raise SearchSpaceError(f"{where}: step and log cannot be combined")
    return Param(key, "int" if is_int else "float", low, high, log, step)


def _options(value: Any, what: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise SearchSpaceError(f"{source}: {what} must be a name or a mapping with a name, got {value!r}")
    return dict(value)


def parse_search_space(values: Any, source: str = "<search space>") -> SearchSpace:
    """Build a `SearchSpace` from plain data (the YAML file's content)."""
    if not isinstance(values, dict):
        raise SearchSpaceError(f"{source}: the top level must be a mapping with params (and fixed, sampler, pruner)")
    unknown = sorted(set(values) - set(TOP_LEVEL))
    if unknown:
        raise SearchSpaceError(f"{source}: unknown top-level key(s) {', '.join(unknown)}; "
                               f"valid: {', '.join(TOP_LEVEL)}")
    params = values.get("params")
    if not isinstance(params, dict) or not params:
        raise SearchSpaceError(f"{source}: params must be a non-empty mapping of config keys to distributions")
    fixed = values.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SearchSpaceError(f"{source}: fixed must be a mapping of config keys to values, got {fixed!r}")
    for key in list(params) + list(fixed):
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise SearchSpaceError(f"{source}: {key!r} is not a dotted config key like da.lr")
        if key in RESERVED:
            raise SearchSpaceError(f"{source}: {key} is set by the search for each trial "
                                   f"and cannot be searched or fixed")
    both = sorted(set(params) & set(fixed))
    if both:
        raise SearchSpaceError(f"{source}: {', '.join(both)} both searched (params) and fixed")
    parsed = [_parse_param(key, spec, source) for key, spec in params.items()]
    return SearchSpace(parsed, dict(fixed), _options(values.get("sampler"), "sampler", source),
                       _options(values.get("pruner"), "pruner", source), source)


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and parse a search-space YAML file (structure only; `SearchSpace.check` validates the keys)."""
    try:
        values = read_yaml(path)
    except ConfigError as err:
        raise SearchSpaceError(f"search space: {err}") from err
    return parse_search_space(values, str(path))
