"""The model zoo on `socratic.registry.MODELS`.

``create_model("resnet8x4", num_classes=100)`` builds a zoo model; ``create_model("torchvision:resnet18", ...)``
/ ``create_model("timm:...", ...)`` wrap an external model (see :mod:`socratic.models.external`). Each zoo model
owns its head (``get_classifier()``, ``pre_logits(last_stage)``, ``forward_head(last_stage)``, like timm's), so no
other package needs to know an architecture's internals.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from socratic.registry import MODELS, UnknownComponentError

ModelFactory = Callable[..., nn.Module]

EXTERNAL_PREFIXES = ("torchvision:", "timm:")


def register_model(name: str, aliases: tuple[str, ...] | list[str] = (), **meta: Any
                   ) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``fn(num_classes, in_channels=3, **kwargs) -> nn.Module`` with its metadata.

    ``aliases`` are further names resolving to the same factory (not listed by :func:`list_models`, but
    accepted by :func:`create_model`).
    """
    for key in (name, *aliases):
        if key.startswith(EXTERNAL_PREFIXES):
            raise ValueError(f"model name {key!r} uses a reserved prefix")
    return MODELS.register(name, aliases=aliases, **meta)


def list_models(include_aliases: bool = False) -> list[str]:
    """Sorted names of the registered zoo models (aliases too if asked)."""
    return MODELS.names(include_aliases)


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
    try:
        entry = MODELS.get(name)
    except UnknownComponentError:
        valid = ", ".join(list_models(include_aliases=True))
        raise ValueError(f"unknown model {name!r}; valid names: {valid} "
                         f"(or 'torchvision:<name>' / 'timm:<name>')") from None
    return entry.factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
