"""Training batch transforms and normalisation on tensors.

The transforms are registered components (`socratic.registry.AUGMENTATIONS`, one module each in
`socratic.data.transforms`), selected by the `data.augment` config section; each dataset names its default.
They run on whole uint8 batches before normalisation, with random numbers from the loader's seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from socratic.data.transforms.crop_flip import BatchAugment  # noqa: F401 - re-exported by socratic.data
from socratic.registry import AUGMENTATIONS, DATASETS, Options

BatchTransform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x / 255 - mean) / std per channel, as float32. Float input is taken as already in [0, 1]."""
    c = images.shape[-3]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean/std need {c} values (one per channel), got {len(mean)}/{len(std)}")
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(c, 1, 1)
    x = images.to(torch.float32)
    if images.dtype == torch.uint8:
        x = x / 255.0
    return (x - m) / s


def build_augment(options: Options | dict[str, Any] | str | None) -> BatchTransform | None:
    """The batch transform that `options` (a `data.augment` section, its plain-data form or a name) selects;
    None for no augmentation."""
    if options is None:
        return None
    if isinstance(options, str):
        options = AUGMENTATIONS.default_options(options)
    elif isinstance(options, dict):
        defaults = AUGMENTATIONS.default_options(options.get("name", "none"))
        options = type(defaults)(**{**vars(defaults), **options})
    options.check("data.augment")
    return AUGMENTATIONS.create(options.name, options)


def default_augment(dataset_name: str) -> BatchTransform | None:
    """The standard training augmentation a dataset registered (crop + flip for the CIFAR-like ones)."""
    if dataset_name not in DATASETS:
        raise ValueError(f"no default augmentation for {dataset_name!r}; known datasets: {', '.join(DATASETS.names())}")
    return build_augment(DATASETS.get(dataset_name).meta.get("augment"))
