"""Two views of each batch for MLKD (`data.augment: {name: two_view}`): the weak view (crop + flip) and the
strong view (`rand_augment`), concatenated along the batch dimension.

The loader then yields x of 2B images for B labels: x[:B] is the weak view, x[B:] the strong view of the same
images in the same order. Only a method that expects this layout (MLKD) can train on it; it checks the sizes. The
loader, the trainer, DA and evaluation are unchanged (evaluation batches are not augmented).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from socratic.data.transforms.crop_flip import BatchAugment
from socratic.data.transforms.rand_augment import StrongAugment
from socratic.registry import AUGMENTATIONS, Options


@dataclass
class TwoViewOptions(Options):
    """`data.augment: {name: two_view, ...}`: the weak view's crop/flip and the strong view's options."""

    name: str = "two_view"
    padding: int = 4  # random crop padding of both views (0 = no crop)
    flip: bool = True  # random horizontal flip of both views
    num_ops: int = 2  # RandAugment operations per sample of the strong view
    cutout: float = 0.5  # the strong view's Cutout side is U(0, cutout) * image side; 0 = no Cutout

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "padding", "num_ops", "cutout")
        if self.cutout > 1:
            raise ValueError(f"{prefix}.cutout must be <= 1 (a fraction of the image side), got {self.cutout}")


class TwoViews:
    """(B, C, H, W) -> (2B, C, H, W): [weak view; strong view], each with its own random draws."""

    def __init__(self, padding: int = 4, flip: bool = True, num_ops: int = 2, cutout: float = 0.5) -> None:
        self.weak = BatchAugment(crop_padding=padding, hflip=flip)
        self.strong = StrongAugment(padding, flip, num_ops, cutout)

    def __repr__(self) -> str:
        return f"TwoViews(weak={self.weak!r}, strong={self.strong!r})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.cat([self.weak(images, generator), self.strong(images, generator)], dim=0)


@AUGMENTATIONS.register("two_view", options=TwoViewOptions, views=2)  # images per label
def _two_view(options: TwoViewOptions) -> TwoViews:
    return TwoViews(options.padding, options.flip, options.num_ops, options.cutout)
