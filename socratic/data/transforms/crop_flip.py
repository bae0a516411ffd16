"""Random crop with zero padding + random horizontal flip, on whole uint8 batches (`data.augment: {name: crop_flip}`).

A whole batch is augmented with one gather (per-sample crop offsets and flips become index tensors), which on CPU
is far cheaper than a per-sample PIL pipeline and needs no worker processes. It runs on uint8 before
normalisation, so the zero padding is black, as with torchvision's `RandomCrop(size, padding=p)` +
`RandomHorizontalFlip()` on PIL images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from socratic.registry import AUGMENTATIONS, Options


@dataclass
class CropFlipOptions(Options):
    """`data.augment: {name: crop_flip, padding: 4, flip: true}`."""

    name: str = "crop_flip"
    padding: int = 4  # pad each side by this many pixels, crop back at a random offset (0 = no crop)
    flip: bool = True  # mirror each sample with probability 1/2 (off for digits and text-like images)

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "padding")


class BatchAugment:
    """Random crop with zero padding + random horizontal flip, independently per sample.

    crop_padding: pad each side by this many pixels and crop back to the original size at a
    uniformly random offset (0 disables). hflip: mirror each sample with probability 1/2.
    """

    def __init__(self, crop_padding: int = 4, hflip: bool = True) -> None:
        if int(crop_padding) != crop_padding or crop_padding < 0:
            raise ValueError(f"crop_padding must be a non-negative integer, got {crop_padding!r}")
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)

    def __repr__(self) -> str:
        return f"BatchAugment(crop_padding={self.crop_padding}, hflip={self.hflip})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment (B, C, H, W) images of any dtype; returns a new tensor of the same dtype/device.

        Random numbers are drawn on the CPU from `generator` (offsets y, offsets x, flips, in this
        order), so results are reproducible for a seeded generator wherever the images live.
        """
        if images.ndim != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
        b, c, h, w = images.shape
        p = self.crop_padding
        if b == 0 or (p == 0 and not self.hflip):
            return images.clone()
        if p > 0:
            oy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
            ox = torch.randint(0, 2 * p + 1, (b,), generator=generator)
            src = F.pad(images, (p, p, p, p))  # zeros: black before normalisation
        else:
            oy = ox = torch.zeros(b, dtype=torch.int64)
            src = images
        rows = oy[:, None] + torch.arange(h)  # (B, H) rows of the padded image to read
        cols = ox[:, None] + torch.arange(w)  # (B, W)
        if self.hflip:
            flip = torch.rand(b, generator=generator) < 0.5
            cols = torch.where(flip[:, None], cols.flip(1), cols)  # read columns right-to-left
        # Two gathers (rows, then columns) read the crop, mirrored where cols run backwards.
        dev = images.device
        wp = src.shape[3]
        rows = rows.to(dev)[:, None, :, None].expand(b, c, h, wp)
        cols = cols.to(dev)[:, None, None, :].expand(b, c, h, w)
        return src.gather(2, rows).gather(3, cols)


@AUGMENTATIONS.register("crop_flip", options=CropFlipOptions)
def _crop_flip(options: CropFlipOptions) -> BatchAugment:
    return BatchAugment(crop_padding=options.padding, hflip=options.flip)
