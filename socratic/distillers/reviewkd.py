"""ReviewKD: knowledge review by attention-based fusion (ABF) and the hierarchical context loss (HCL)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, feature_fields, register_distiller
from socratic.distillers.taps import require_embeddings, select_stages
from socratic.losses import cross_entropy
from socratic.registry import Options


def hcl_level(f_s: Tensor, f_t: Tensor, pool_levels: Sequence[int] = (4, 2, 1)) -> Tensor:
    """The hierarchical context loss of one level: the mean squared error of the whole maps plus, for each pooling
    size l of `pool_levels` smaller than the map's height, the mean squared error of the maps adaptive-average-
    pooled to l x l, weighted 1/2, 1/4, 1/8, ... in the order the sizes are used; divided by the sum of the
    weights (1 + 1/2 + 1/4 + 1/8 = 1.875 for maps of height 8 and more). fp32."""
    f_s, f_t = f_s.float(), f_t.float()
    loss = F.mse_loss(f_s, f_t)
    weight, total = 1.0, 1.0
    for size in pool_levels:
        if size >= f_s.shape[-2]:
            continue
        weight /= 2.0
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size))
        total += weight
    return loss / total


def hcl_loss(student_maps: Sequence[Tensor], teacher_maps: Sequence[Tensor],
             pool_levels: Sequence[int] = (4, 2, 1)) -> Tensor:
    """The sum over levels of `hcl_level`; the maps of a pair must have the same shape. fp32 under any autocast."""
    device = student_maps[0].device
    total = torch.zeros((), device=device)
    with torch.autocast(device.type, enabled=False):
        for f_s, f_t in zip(student_maps, teacher_maps, strict=True):
            if f_s.shape != f_t.shape:
                raise ValueError(f"hcl_loss: a student map {tuple(f_s.shape)} against a teacher map {tuple(f_t.shape)}")
            total = total + hcl_level(f_s, f_t, pool_levels)
    return total


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="nearest")


class ABF(nn.Module):
    """Attention-based fusion of one level. conv1 (1x1, in -> mid, no bias) + BN brings the student's map to the
    shared width; when `fuse`, the residual from the deeper level is nearest-resized to the map's size and the two
    are mixed by two per-pixel attention weights, sigmoid(1x1 conv (2 mid -> 2, with bias)) of their
    concatenation; the result is nearest-resized to `out_size` (the teacher's) and passed on as the next residual,
    and conv2 (3x3, mid -> out, no bias) + BN gives the level's output. Convolutions: kaiming_uniform_(a=1)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, kernel_size=1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """(output (B, out, *out_size), the residual for the next, shallower level (B, mid, *out_size))."""
        x = self.conv1(x)
        if self.att is not None:
            if residual is None:
                raise ValueError("ABF: a fusing level needs the residual of the deeper level")
            y = _resize(residual, tuple(x.shape[-2:]))
            z = self.att(torch.cat([x, y], dim=1))
            x = x * z[:, 0:1] + y * z[:, 1:2]
        x = _resize(x, out_size)
        return self.conv2(x), x


def _as_map(feature: Tensor) -> Tensor:
    return feature if feature.dim() == 4 else feature.reshape(*feature.shape, 1, 1)


@dataclass
class ReviewKDOptions(Options):
    """`method: {name: reviewkd, ...}`; defaults are the reference's for resnet32x4 -> resnet8x4 (mdistiller: CE 1,
    no KD term, weight 5 warmed up linearly over 20 epochs, every stage but the stem plus the pooled embedding,
    mid width min(512, the deepest student level's channels), pooling sizes 4, 2, 1)."""

    name: str = "reviewkd"
    ce_weight: float = 1.0  # weight of the cross-entropy on labels
    reviewkd_weight: float = 5.0  # HCL weight (mdistiller REVIEWKD_WEIGHT; the original: 8 for ShuffleV2)
    warmup_epochs: int = 20  # the HCL weight grows as min(epoch / warmup_epochs, 1), epochs from 1; 0 = no warm-up
    stages: list[int] | None = None  # indices into Features.stages, shallow to deep; null = every stage but the stem
    embedding: bool = True  # add the pooled embedding (as a 1x1 map) as the deepest level
    mid_channels: int | None = None  # the ABFs' shared width; null = min(512, the deepest student level's channels)
    pool_levels: list[int] = field(default_factory=lambda: [4, 2, 1])  # HCL's pyramid of pooled sizes
    teacher_preact: bool = True  # the teacher's stage targets before their final ReLU (the reference); false: after

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "ce_weight", "reviewkd_weight", "warmup_epochs")
        self.require_positive(prefix, "mid_channels")
        if self.stages is not None and not self.stages:
            raise ValueError(f"{prefix}.stages is empty: name at least one stage, or null for every stage but the stem")
        if any(not isinstance(size, int) or size < 1 for size in self.pool_levels):
            raise ValueError(f"{prefix}.pool_levels must be positive integers, got {self.pool_levels}")
        if not isinstance(self.teacher_preact, bool):
            raise ValueError(f"{prefix}.teacher_preact must be true or false, got {self.teacher_preact!r}")


@register_distiller("reviewkd", options=ReviewKDOptions, teachers=(1, 1), features=True)
class ReviewKD(Distiller):
    """Chen, Liu, Zhao & Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021.

    The student's levels (the chosen stages, shallow to deep, then the pooled embedding as a 1x1 map) are reviewed
    deepest first: each ABF fuses its level with the residual of the deeper one and predicts the teacher's map of
    the same level (its channels, nearest-resized to its size; the teacher's stage maps before their final ReLU,
    as the reference's `preact_feats`, unless `teacher_preact` is false). loss = ce_weight * CE + reviewkd_weight *
    min(epoch / warmup_epochs, 1) * sum_levels HCL(ABF output, teacher map), HCL the MSE of the maps plus the
    MSEs of their 4x4, 2x2 and 1x1 average-pooled versions (those smaller than the map), weighted 1, 1/2, 1/4, 1/8
    and normalised by the weights' sum. The warm-up comes from `ctx.epoch`, so it is exact on resume. The ABFs
    are trainable extras (`extra_modules()["abfs"]`), optimised with the student and saved in every checkpoint.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 1.0,
                 reviewkd_weight: float = 5.0, warmup_epochs: int = 20, stages: Sequence[int] | None = None,
                 embedding: bool = True, mid_channels: int | None = None,
                 pool_levels: Sequence[int] = (4, 2, 1), teacher_preact: bool = True) -> None:
        super().__init__(student, teacher)
        if teacher_preact and not getattr(self.teacher, "preact_taps", False):
            raise ValueError(f"method.teacher_preact: the teacher {type(self.teacher).__name__} gives no pre-ReLU "
                             "stage maps (zoo models with preact_taps: the CIFAR ResNets, the VGGs, ShuffleV2); set "
                             "teacher_preact: false to distil into its post-ReLU stages")
        self.teacher_preact = teacher_preact
        self.stages = select_stages(stages, student, self.teacher, "reviewkd")
        for role, model in (("student", student), ("teacher", self.teacher)):
            absolute = [i % len(model.stage_channels) for i in self.stages]
            if absolute != sorted(absolute):
                raise ValueError(f"method.stages: {list(self.stages)} must run from shallow to deep in the {role} "
                                 f"(stages {absolute} of {type(model).__name__}, stage_channels "
                                 f"{list(model.stage_channels)}): the review fuses each level with the deeper ones")
        if embedding:
            require_embeddings("reviewkd", ("student", student), ("teacher", self.teacher))
        self.embedding = embedding
        self.teacher_fields = feature_fields(self.teacher, self.stages, preact=teacher_preact, embedding=embedding)
        self.ce_weight, self.reviewkd_weight, self.warmup_epochs = ce_weight, reviewkd_weight, warmup_epochs
        self.pool_levels = list(pool_levels)
        in_channels = [student.stage_channels[i] for i in self.stages] + ([student.embedding_dim] if embedding else [])
        out_channels = [self.teacher.stage_channels[i] for i in self.stages] + (
            [self.teacher.embedding_dim] if embedding else [])
        self.mid_channels = mid_channels if mid_channels is not None else min(512, in_channels[-1])
        last = len(in_channels) - 1
        self.abfs = nn.ModuleList(ABF(c_in, self.mid_channels, c_out, fuse=i < last)
                                  for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels)))  # shallow -> deep

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"abfs": self.abfs}

    def warmup_factor(self, ctx: TrainContext) -> float:
        """min(epoch / warmup_epochs, 1), epochs counted from 1 (mdistiller's; 1 without a warm-up)."""
        return 1.0 if self.warmup_epochs <= 0 else min(ctx.epoch / self.warmup_epochs, 1.0)

    def _levels(self, features, preact: bool = False) -> list[Tensor]:
        maps = features.preact_stages if preact else features.stages
        levels = [maps[i] for i in self.stages]
        if self.embedding:
            levels.append(_as_map(features.embedding))
        for index, level in zip(self.stages, levels):
            if level.dim() != 4:
                raise ValueError(f"method.stages: reviewkd needs (B, C, H, W) maps, but stage {index} is "
                                 f"{tuple(level.shape)}")
        return levels

    def review(self, student_levels: Sequence[Tensor], teacher_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """The ABF outputs, shallow to deep, from the student's levels (shallow to deep), fused deepest first."""
        outputs: list[Tensor] = []
        residual = None
        for abf, level, size in zip(reversed(self.abfs), reversed(student_levels), reversed(teacher_sizes)):
            out, residual = abf(level, residual, tuple(size))
            outputs.insert(0, out)
        return outputs

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [self.teacher_fields]

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        if ctx is None:
            raise ValueError("ReviewKD's warm-up needs the training context: call forward_train(x, y, ctx) with a "
                             "socratic.context.TrainContext")
        features = self.student.forward_features(x)
        targets = self._levels(self.teacher_features(x, self.teacher_fields), self.teacher_preact)
        outputs = self.review(self._levels(features), [tuple(t.shape[-2:]) for t in targets])
        factor = self.warmup_factor(ctx)
        return features.logits, {
            "ce": self.ce_weight * cross_entropy(features.logits, y),
            "reviewkd": self.reviewkd_weight * factor * hcl_loss(outputs, targets, self.pool_levels),
        }
