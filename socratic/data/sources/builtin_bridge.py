"""TEMPORARY bridge until the per-dataset modules land: registers today's datasets' metadata."""

from __future__ import annotations

from socratic.registry import DATASETS

_CROP_FLIP = {"name": "crop_flip", "padding": 4, "flip": True}

for _name, _augment in (("fashion_mnist", {**_CROP_FLIP, "padding": 2}), ("cifar10", _CROP_FLIP),
                        ("cifar100", _CROP_FLIP), ("imagefolder", _CROP_FLIP)):
    DATASETS.register(_name, augment=_augment)(lambda **kwargs: None)
