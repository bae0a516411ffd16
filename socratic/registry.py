"""The component registry: the ground floor every extension point plugs into (it imports nothing of socratic).

Each component (a distillation method, a dataset, a batch augmentation, a model, an RL environment suite, a
teacher-weighting strategy) registers a factory, a typed options dataclass that checks itself, and metadata::

    @METHODS.register("dkd", options=DKDOptions)
    class DKD(Distiller): ...

    @MODELS.register("resnet8", classifier="fc", feature_taps=("stem", "layer1", "layer2", "layer3"))
    def resnet8(num_classes, in_channels=3, **kwargs): ...

`socratic.config` validates a section such as `method: {name: dkd, alpha: 1}` by asking the registry which
options class `name` selects; nothing central lists the components. Each kind names the packages whose modules
register its built-in components (`discover`): they are imported on the first look-up, so adding a component is
one new file in such a package (plus its test). Code outside those packages (a user's own method) registers by
calling `register` before the config is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Options:
    """Base of every component's options: `name` selects the component, subclasses add typed fields with their
    defaults and override `check` to refuse values out of range (a ValueError naming `prefix.key`)."""

    name: str = ""

    def check(self, prefix: str) -> None:
        """Raise ValueError("<prefix>.<key> ...") for a value the component cannot use."""

    def require_positive(self, prefix: str, *keys: str) -> None:
        """A ValueError naming the first of `keys` whose value is not > 0."""
        for key in keys:
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ValueError(f"{prefix}.{key} must be > 0, got {value}")

    def require_non_negative(self, prefix: str, *keys: str) -> None:
        """A ValueError naming the first of `keys` whose value is < 0."""
        for key in keys:
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"{prefix}.{key} must be >= 0, got {value}")

    def require_choice(self, prefix: str, key: str, allowed: Iterable[str]) -> None:
        """A ValueError naming `key` when its value is not one of `allowed`."""
        allowed = tuple(allowed)
        if getattr(self, key) not in allowed:
            raise ValueError(f"{prefix}.{key}: {getattr(self, key)!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    options: type[Options] | None
    meta: dict[str, Any] = field(default_factory=dict)


class UnknownComponentError(ValueError):
    """A name that no component of this kind registered (the message lists the valid ones)."""


class Registry:
    """Name -> `Entry` for one kind of component; `discover` names the packages that register the built-ins."""

    def __init__(self, kind: str, discover: Iterable[str] = ()) -> None:
        self.kind = kind
        self._discover = tuple(discover)
        self._discovered = not self._discover
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, options: type[Options] | None = None, aliases: Iterable[str] = (),
                 replace: bool = False, **meta: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering `factory` under `name` (and `aliases`) with its options class and metadata."""
        aliases = tuple(aliases)
        if options is not None and not (dataclasses.is_dataclass(options) and issubclass(options, Options)):
            raise TypeError(f"{self.kind} '{name}': options must be a dataclass subclass of socratic.registry.Options")

        def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
            for key in (name, *aliases):
                if not replace and (key in self._entries or key in self._aliases):
                    raise ValueError(f"{self.kind} name {key!r} is already registered")
            self._entries[name] = Entry(self.kind, name, factory, options, dict(meta))
            for alias in aliases:
                self._aliases[alias] = name
            return factory

        return decorate

    def unregister(self, name: str) -> None:
        """Remove `name` and its aliases (a plugin or a test that registered it for a while)."""
        self._entries.pop(name, None)
        for alias in [a for a, target in self._aliases.items() if target == name]:
            del self._aliases[alias]

    def _ensure_discovered(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # first: a module that looks names up while it is imported does not recurse
        for package_name in self._discover:
            package = importlib.import_module(package_name)
            for module in pkgutil.iter_modules(getattr(package, "__path__", [])):
                if not module.name.startswith("_"):
                    importlib.import_module(f"{package_name}.{module.name}")

    def names(self, include_aliases: bool = False) -> list[str]:
        """Sorted names of the registered components."""
        self._ensure_discovered()
        return sorted([*self._entries, *(self._aliases if include_aliases else ())])

    def __contains__(self, name: object) -> bool:
        self._ensure_discovered()
        return name in self._entries or name in self._aliases

    def get(self, name: str) -> Entry:
        """The entry of `name` (or of the alias `name`); an UnknownComponentError lists the valid names."""
        self._ensure_discovered()
        canonical = self._aliases.get(name, name)
        if canonical not in self._entries:
            raise UnknownComponentError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[canonical]

    def entries(self) -> list[Entry]:
        self._ensure_discovered()
        return [self._entries[name] for name in sorted(self._entries)]

    def default_options(self, name: str) -> Options:
        """The options of `name` with every default (a component without options gets a bare `Options`)."""
        options = self.get(name).options or Options
        return options(name=self.get(name).name)

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory of `name`."""
        return self.get(name).factory(*args, **kwargs)


# The kinds of component, and where their built-ins live.
METHODS = Registry("method", discover=("socratic.distillers", "socratic.multiteacher"))
WEIGHTINGS = Registry("teacher weighting", discover=("socratic.multiteacher",))
DATASETS = Registry("dataset", discover=("socratic.data.sources",))
AUGMENTATIONS = Registry("augmentation", discover=("socratic.data.transforms",))
MODELS = Registry("model", discover=("socratic.models",))
ENV_SUITES = Registry("environment suite", discover=("socratic.rl.suites",))

__all__ = ["AUGMENTATIONS", "DATASETS", "ENV_SUITES", "METHODS", "MODELS", "WEIGHTINGS", "Entry", "Options",
           "Registry", "UnknownComponentError"]
