"""Attention transfer (AT)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, feature_fields, register_distiller
from socratic.distillers.taps import match_spatial, select_stages
from socratic.losses import cross_entropy
from socratic.registry import Options


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """Zagoruyko & Komodakis's spatial attention: mean over channels of |f|^p, flattened and L2-normalised per
    sample, (B, H*W), in fp32. (The maps are post-ReLU, so |f|^p = f^p as in the reference.)"""
    a = feature.float().abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(a, dim=1)


def at_loss(student_maps: Sequence[Tensor], teacher_maps: Sequence[Tensor], p: float = 2.0) -> Tensor:
    """Sum over stage pairs of mean_{b,hw} (a_S - a_T)^2, the squared-difference form of the reference code (not
    the paper's unsquared norm). The maps of a pair must already have the same spatial size."""
    device = student_maps[0].device
    total = torch.zeros((), device=device)
    with torch.autocast(device.type, enabled=False):  # fp32 under any autocast
        for f_s, f_t in zip(student_maps, teacher_maps, strict=True):
            total = total + (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()
    return total


@dataclass
class ATOptions(Options):
    """`method: {name: at, ...}`; defaults are the reference's (mdistiller / RepDistiller: CE 1, no KD term,
    beta 1000, p 2, every stage but the stem)."""

    name: str = "at"
    ce_weight: float = 1.0  # weight of the cross-entropy on labels
    at_weight: float = 1000.0  # beta of the paper and the reference code
    p: float = 2.0  # the power of the attention map (mean_c |f|^p)
    stages: list[int] | None = None  # indices into Features.stages (0 = stem); null = every stage but the stem

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "ce_weight", "at_weight")
        self.require_positive(prefix, "p")
        if self.stages is not None and not self.stages:
            raise ValueError(f"{prefix}.stages is empty: name at least one stage, or null for every stage but the stem")


@register_distiller("at", options=ATOptions, teachers=(1, 1), features=True)
class AT(Distiller):
    """Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of Convolutional
    Neural Networks via Attention Transfer", ICLR 2017.

    loss = ce_weight * CE + at_weight * sum_stages mean_{b,hw} (a_S - a_T)^2, a = normalize(mean_c f^p) per
    sample; where the sizes of a stage differ, the larger map is average-pooled to the smaller.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 1.0,
                 at_weight: float = 1000.0, p: float = 2.0, stages: Sequence[int] | None = None) -> None:
        super().__init__(student, teacher)
        self.stages = select_stages(stages, student, self.teacher, "at")
        self.teacher_fields = feature_fields(self.teacher, self.stages)
        self.ce_weight, self.at_weight, self.p = ce_weight, at_weight, p

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [self.teacher_fields]

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.student.forward_features(x)
        teacher_stages = self.teacher_features(x, self.teacher_fields).stages
        pairs = [match_spatial(features.stages[i], teacher_stages[i], "at", i) for i in self.stages]
        return features.logits, {
            "ce": self.ce_weight * cross_entropy(features.logits, y),
            "at": self.at_weight * at_loss([s for s, _ in pairs], [t for _, t in pairs], self.p),
        }
