"""Name -> constructor registry of the model zoo.

``create_model("resnet8x4", num_classes=100)`` builds a zoo model;
``create_model("torchvision:resnet18", ...)`` / ``create_model("timm:...", ...)``
wrap an external model (see :mod:`socratic.models.external`).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

ModelFactory = Callable[..., nn.Module]

# canonical name -> factory; alias -> canonical name
_MODELS: dict[str, ModelFactory] = {}
_ALIASES: dict[str, str] = {}

EXTERNAL_PREFIXES = ("torchvision:", "timm:")


def register_model(name: str, aliases: tuple[str, ...] | list[str] = ()) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``fn(num_classes, in_channels=3, **kwargs) -> nn.Module``.

    ``aliases`` are further names resolving to the same factory (not listed by
    :func:`list_models`, but accepted by :func:`create_model`).
    """

    def decorator(fn: ModelFactory) -> ModelFactory:
        for key in (name, *aliases):
            if key in _MODELS or key in _ALIASES:
                raise ValueError(f"model name {key!r} is already registered")
            if key.startswith(EXTERNAL_PREFIXES):
                raise ValueError(f"model name {key!r} uses a reserved prefix")
        _MODELS[name] = fn
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return decorator


def _ensure_zoo_loaded() -> None:
    # Importing the architecture modules runs their @register_model decorators.
    from . import mobilenetv2, regnet, resnet, shufflenetv1, shufflenetv2, vgg, wrn  # noqa: F401


def list_models(include_aliases: bool = False) -> list[str]:
    """Sorted names of the registered zoo models (aliases too if asked)."""
    _ensure_zoo_loaded()
    names = list(_MODELS)
    if include_aliases:
        names += list(_ALIASES)
    return sorted(names)


def create_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build model ``name`` with a ``num_classes``-way classifier.

    Args:
        name: a zoo name (see :func:`list_models`), an alias such as ``vgg8``,
            or ``"torchvision:<name>"`` / ``"timm:<name>"``.
        num_classes: classifier outputs.
        in_channels: input image channels (1 for Fashion-MNIST, 3 for CIFAR).
        **kwargs: passed to the model constructor.

    Raises:
        ValueError: unknown name (the message lists the valid names).
    """
    if name.startswith(EXTERNAL_PREFIXES):
        from .external import create_external_model

        return create_external_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    _ensure_zoo_loaded()
    canonical = _ALIASES.get(name, name)
    if canonical not in _MODELS:
        valid = ", ".join(list_models(include_aliases=True))
        raise ValueError(
            f"unknown model {name!r}; valid names: {valid} "
            f"(or 'torchvision:<name>' / 'timm:<name>')"
        )
    return _MODELS[canonical](num_classes=num_classes, in_channels=in_channels, **kwargs)
