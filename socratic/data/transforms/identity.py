"""No augmentation: `data.augment: {name: none}` (or `data.augment: none`)."""

from __future__ import annotations

from socratic.registry import AUGMENTATIONS


@AUGMENTATIONS.register("none")
def _none(options: object) -> None:
    return None
