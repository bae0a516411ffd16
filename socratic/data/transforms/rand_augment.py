"""MLKD's strong augmentation on whole uint8 batches (`data.augment: {name: rand_augment}`).

Jin, Wang & Lin, "Multi-Level Logit Distillation", CVPR 2023, train their student on a second, strongly augmented
view: random crop + horizontal flip, then RandAugment(n = 2) over 14 operations with magnitudes drawn uniformly
from each operation's range, then Cutout of a random square of side U(0, 0.5) * 32 px filled with (125, 123, 114).
This module does the same on a (B, C, H, W) uint8 tensor batch: every sample draws its own crop, flip, operations,
magnitudes and cutout from the loader's seeded generator (so a batch is a function of (seed, epoch) and resume is
exact), and the operations are vectorised over the samples that drew them. How it differs from the PIL pipeline
of the reference is listed in docs/methods/mlkd.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from socratic.data.transforms.crop_flip import BatchAugment
from socratic.registry import AUGMENTATIONS, Options

# The 14 operations of the reference's RandAugment pool and their magnitude ranges (low, high).
OPERATIONS: tuple[tuple[str, float, float], ...] = (
    ("auto_contrast", 0.0, 1.0), ("brightness", 0.05, 0.95), ("color", 0.05, 0.95), ("contrast", 0.05, 0.95),
    ("equalize", 0.0, 1.0), ("identity", 0.0, 1.0), ("posterize", 4.0, 8.0), ("rotate", -30.0, 30.0),
    ("sharpness", 0.05, 0.95), ("shear_x", -0.3, 0.3), ("shear_y", -0.3, 0.3), ("solarize", 0.0, 256.0),
    ("translate_x", -0.3, 0.3), ("translate_y", -0.3, 0.3),
)
GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
CUTOUT_FILL = (125.0, 123.0, 114.0)
GEOMETRIC_FILL = 128.0  # grey outside the image after a rotation, shear or translation


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's "L" conversion (ITU-R 601-2 luma) of float (N, C, H, W) images, as (N, 1, H, W); one channel as is."""
    if x.shape[1] != 3:
        return x.mean(dim=1, keepdim=True)
    return (x[:, 0:1] * 299 + x[:, 1:2] * 587 + x[:, 2:3] * 114) / 1000


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance: degenerate + factor * (x - degenerate), factor per sample."""
    return degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)


def _auto_contrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp_min(1.0)
    return torch.where(hi > lo, torch.floor((x - lo) * scale), x)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize per sample and channel: a lookup table from the cumulative histogram."""
    n, c = x.shape[:2]
    flat = x.reshape(n * c, -1).long()
    hist = torch.zeros(n * c, 256, dtype=torch.int64).scatter_add_(1, flat, torch.ones_like(flat))
    last = torch.gather(hist, 1, (255 - torch.flip(hist, [1]).ne(0).long().argmax(1, keepdim=True)))  # top bin
    step = (hist.sum(1, keepdim=True) - last) // 255
    before = torch.cumsum(hist, 1) - hist  # pixels below each level
    lut = ((step // 2 + before) // step.clamp_min(1)).clamp(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256).expand_as(lut))
    return torch.gather(lut, 1, flat).reshape(x.shape).to(x.dtype)


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Sharpness: blend with the SMOOTH-filtered image (3x3 [1 1 1; 1 5 1; 1 1 1] / 13),
    whose border pixels stay the original's."""
    c = x.shape[1]
    kernel = torch.ones(3, 3, dtype=x.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(c, 1, 3, 3)
    smooth = x.clone()
    smooth[:, :, 1:-1, 1:-1] = F.conv2d(x, kernel, groups=c)
    return _blend(torch.round(smooth), x, factor)


def _affine(x: torch.Tensor, matrices: torch.Tensor, fill: float) -> torch.Tensor:
    """Nearest-neighbour inverse mapping: output pixel (u, v) reads input M @ (u, v, 1) (pixel coordinates, as
    PIL's Image.transform); outside the image the pixel is `fill`."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    coords = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(1, h * w, 3)
    src = coords @ matrices.transpose(1, 2)  # (n, h*w, 2) source pixel coordinates
    grid = torch.stack([(2 * src[..., 0] + 1) / w - 1, (2 * src[..., 1] + 1) / h - 1], dim=-1).view(n, h, w, 2)
    out = F.grid_sample(x - fill, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out + fill


def _geometric_matrices(names: list[str], values: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The (n, 2, 3) inverse maps of rotate (degrees, about the centre), shear (factor) and translate (fraction of
    the side) for each sample."""
    m = torch.zeros(len(names), 2, 3)
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    for i, (name, v) in enumerate(zip(names, values.tolist())):
        if name == "rotate":
            a = math.radians(v)
            cx, cy = w / 2, h / 2
            cos, sin = math.cos(a), math.sin(a)
            m[i] = torch.tensor([[cos, sin, cx - cos * cx - sin * cy], [-sin, cos, cy + sin * cx - cos * cy]])
        elif name == "shear_x":
            m[i, 0, 1] = v
        elif name == "shear_y":
            m[i, 1, 0] = v
        elif name == "translate_x":
            m[i, 0, 2] = v * w
        elif name == "translate_y":
            m[i, 1, 2] = v * h
    return m


def apply_operation(name: str, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """One RandAugment operation on float (n, C, H, W) images in [0, 255] with a magnitude per sample; returns
    rounded values in [0, 255] (each operation ends on a uint8 image, as in PIL)."""
    if name == "identity":
        return x
    if name == "auto_contrast":
        out = _auto_contrast(x)
    elif name == "brightness":
        out = _blend(torch.zeros_like(x), x, values)
    elif name == "color":
        out = _blend(torch.round(_gray(x)).expand_as(x), x, values)
    elif name == "contrast":
        mean = torch.floor(_gray(x).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
        out = _blend(mean.expand_as(x), x, values)
    elif name == "equalize":
        out = _equalize(x)
    elif name == "posterize":
        shift = (8 - values.long().clamp(1, 8)).view(-1, 1, 1, 1)
        out = ((x.long() >> shift) << shift).to(x.dtype)
    elif name == "sharpness":
        out = _sharpness(x, values)
    elif name == "solarize":
        out = torch.where(x < values.view(-1, 1, 1, 1), x, 255.0 - x)
    elif name in GEOMETRIC:
        out = _affine(x, _geometric_matrices([name] * x.shape[0], values, x.shape[2], x.shape[3]), GEOMETRIC_FILL)
    else:
        raise ValueError(f"unknown RandAugment operation {name!r}")
    return torch.round(out).clamp_(0, 255)


@dataclass
class RandAugmentOptions(Options):
    """`data.augment: {name: rand_augment, ...}`: MLKD's strong view (crop + flip, RandAugment, Cutout)."""

    name: str = "rand_augment"
    padding: int = 4  # random crop padding (0 = no crop)
    flip: bool = True  # random horizontal flip
    num_ops: int = 2  # RandAugment's n: operations per sample, drawn with replacement from the 14
    cutout: float = 0.5  # the Cutout square's side is U(0, cutout) * image side; 0 = no Cutout

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "padding", "num_ops", "cutout")
        if self.cutout > 1:
            raise ValueError(f"{prefix}.cutout must be <= 1 (a fraction of the image side), got {self.cutout}")


class StrongAugment:
    """Crop + flip, then `num_ops` random operations per sample, then Cutout, on (B, C, H, W) batches."""

    def __init__(self, padding: int = 4, flip: bool = True, num_ops: int = 2, cutout: float = 0.5) -> None:
        self.crop_flip = BatchAugment(crop_padding=padding, hflip=flip)
        self.num_ops, self.cutout = int(num_ops), float(cutout)

    def __repr__(self) -> str:
        return f"StrongAugment({self.crop_flip!r}, num_ops={self.num_ops}, cutout={self.cutout})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch; random numbers come from `generator` on the CPU in a fixed order (crop/flip, then per
        round the operation indices and magnitudes, then the cutout sides and centres)."""
        x = self.crop_flip(images, generator)
        b, c, h, w = x.shape
        if b == 0:
            return x
        dtype, device = x.dtype, x.device
        out = x.cpu().to(torch.float32)
        for _ in range(self.num_ops):
            chosen = torch.randint(0, len(OPERATIONS), (b,), generator=generator)
            unit = torch.rand(b, generator=generator)
            for k, (name, low, high) in enumerate(OPERATIONS):
                rows = (chosen == k).nonzero().flatten()
                if rows.numel():
                    out[rows] = apply_operation(name, out[rows], low + unit[rows] * (high - low))
        if self.cutout > 0:
            side = torch.rand(b, generator=generator) * self.cutout * w
            cx, cy = torch.rand(b, generator=generator) * w, torch.rand(b, generator=generator) * h
            x0, y0 = (cx - side / 2).clamp_min(0).long(), (cy - side / 2).clamp_min(0).long()
            x1, y1 = torch.minimum(x0 + side.long(), torch.tensor(w)), torch.minimum(y0 + side.long(), torch.tensor(h))
            cols, rows_ = torch.arange(w).view(1, 1, w), torch.arange(h).view(1, h, 1)
            box = ((cols >= x0.view(-1, 1, 1)) & (cols < x1.view(-1, 1, 1)) & (rows_ >= y0.view(-1, 1, 1))
                   & (rows_ < y1.view(-1, 1, 1))).unsqueeze(1)  # (B, 1, H, W)
            fill = torch.tensor(CUTOUT_FILL if c == 3 else (sum(CUTOUT_FILL) / 3,) * c).view(1, c, 1, 1)
            out = torch.where(box, fill, out)
        return out.round().clamp_(0, 255).to(device=device, dtype=dtype)


@AUGMENTATIONS.register("rand_augment", options=RandAugmentOptions)
def _rand_augment(options: RandAugmentOptions) -> StrongAugment:
    return StrongAugment(options.padding, options.flip, options.num_ops, options.cutout)
