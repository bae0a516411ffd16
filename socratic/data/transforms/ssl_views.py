"""Two self-supervised views of each batch (`data.augment: {name: ssl_views}`): the Barlow Twins / SimCLR CIFAR
recipe on whole tensor batches.

Each view draws, per sample, a random resized crop (area `scale`, aspect `ratio`, resized back bilinearly), a
horizontal flip (p = 1/2), colour jitter with probability `jitter_prob` (brightness, contrast, saturation and hue
factors drawn uniformly from [1 - s, 1 + s], hue [-h, h]) and grayscale with probability `grayscale_prob`
(Zbontar et al., "Barlow Twins", ICML 2021; Chen et al., "SimCLR", ICML 2020, their CIFAR variant without blur).
The loader yields x of 2B images for B indices: x[:B] is view one, x[B:] view two, of the same images in order.

Departures from torchvision's PIL pipeline: the four jitter operations run in a fixed order (torchvision shuffles
it per image), and the hue shift is a rotation of the chroma plane in YIQ space rather than a shift in HSV.
All random numbers come from the loader's seeded generator, so a batch is a function of (seed, epoch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from socratic.registry import AUGMENTATIONS, Options


@dataclass
class SSLViewsOptions(Options):
    """`data.augment: {name: ssl_views, ...}`."""

    name: str = "ssl_views"
    scale: list[float] = field(default_factory=lambda: [0.2, 1.0])  # crop area as a fraction of the image
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # crop aspect ratio (w / h)
    flip: bool = True
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1  # at most 0.5 (a half turn)
    grayscale_prob: float = 0.2

    def check(self, prefix: str) -> None:
        for key in ("scale", "ratio"):
            low_high = getattr(self, key)
            if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
                raise ValueError(f"{prefix}.{key} must be [low, high] with 0 < low <= high, got {low_high}")
        if self.scale[1] > 1:
            raise ValueError(f"{prefix}.scale must be within (0, 1], got {self.scale}")
        for key in ("jitter_prob", "grayscale_prob"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"{prefix}.{key} must be a probability in [0, 1], got {getattr(self, key)}")
        self.require_non_negative(prefix, "brightness", "contrast", "saturation", "hue")
        if self.hue > 0.5:
            raise ValueError(f"{prefix}.hue must be <= 0.5, got {self.hue}")


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma of float (B, 3, H, W) images as (B, 1, H, W); other channel counts: the mean."""
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


class SSLViews:
    """(B, C, H, W) uint8 -> (2B, C, H, W) float on the 0..255 scale: [view one; view two]."""

    def __init__(self, options: SSLViewsOptions | None = None) -> None:
        self.options = options or SSLViewsOptions()

    def __repr__(self) -> str:
        return f"SSLViews({self.options})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = images.to(torch.float32) / 255.0
        return torch.cat([self.view(x, generator), self.view(x, generator)], dim=0) * 255.0

    def crop_grid(self, b: int, generator: torch.Generator | None) -> torch.Tensor:
        """(B, 2, 3) affine matrices of a random resized crop (+ flip) in normalised coordinates."""
        o = self.options
        area = _uniform(b, o.scale[0], o.scale[1], generator)
        log_ratio = _uniform(b, math.log(o.ratio[0]), math.log(o.ratio[1]), generator)
        ratio = log_ratio.exp()
        w = (area * ratio).sqrt().clamp(max=1.0)  # crop width and height as fractions of the side
        h = (area / ratio).sqrt().clamp(max=1.0)
        cx = (torch.rand(b, generator=generator) * 2 - 1) * (1 - w)  # centre inside the image
        cy = (torch.rand(b, generator=generator) * 2 - 1) * (1 - h)
        sign = torch.ones(b)
        if o.flip:
            sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = w * sign, cx
        theta[:, 1, 1], theta[:, 1, 2] = h, cy
        return theta

    def view(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One augmented view of float [0, 1] images (B, C, H, W)."""
        o = self.options
        b = x.shape[0]
        theta = self.crop_grid(b, generator).to(x.device)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        jitter = (torch.rand(b, generator=generator) < o.jitter_prob).to(x.device).view(b, 1, 1, 1)
        factors = [_uniform(b, 1 - s, 1 + s, generator).clamp(min=0).to(x.device).view(b, 1, 1, 1)
                   for s in (o.brightness, o.contrast, o.saturation)]
        hue = _uniform(b, -o.hue, o.hue, generator).to(x.device)
        jittered = (x * factors[0]).clamp(0, 1)
        mean = _gray(jittered).mean(dim=(1, 2, 3), keepdim=True)
        jittered = ((jittered - mean) * factors[1] + mean).clamp(0, 1)
        gray = _gray(jittered)
        jittered = ((jittered - gray) * factors[2] + gray).clamp(0, 1)
        if x.shape[1] == 3 and o.hue > 0:
            jittered = self.rotate_hue(jittered, hue)
        x = torch.where(jitter, jittered, x)
        to_gray = (torch.rand(b, generator=generator) < o.grayscale_prob).to(x.device).view(b, 1, 1, 1)
        return torch.where(to_gray, _gray(x).expand_as(x), x)

    @staticmethod
    def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
        """Rotate the chroma (I, Q) of RGB images by `turns` (B,) of a full turn, keeping the luma Y."""
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                              device=x.device)
        yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
        angle = 2 * math.pi * turns
        cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
        i, q = yiq[:, 1], yiq[:, 2]
        yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq).clamp(0, 1)


@AUGMENTATIONS.register("ssl_views", options=SSLViewsOptions, views=2)  # images per label
def _ssl_views(options: SSLViewsOptions) -> SSLViews:
    return SSLViews(options)
