"""Similarity-preserving knowledge distillation (SP)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, feature_fields, register_distiller
from socratic.distillers.taps import select_stages
from socratic.losses import cross_entropy
from socratic.registry import Options


def similarity_matrix(feature: Tensor) -> Tensor:
    """G = F Fᵀ of the flattened (B, ...) activations, each row L2-normalised: (B, B) in fp32."""
    flat = feature.float().flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


def sp_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Tung & Mori's ||G_T - G_S||_F^2 / B^2 for one pair of maps (any shapes with the same batch size)."""
    batch = student_feature.shape[0]
    if teacher_feature.shape[0] != batch:
        raise ValueError(f"sp_loss needs the same batch in both maps, got {batch} and {teacher_feature.shape[0]}")
    with torch.autocast(student_feature.device.type, enabled=False):  # the Gram matrices in fp32, not bf16/fp16
        return (similarity_matrix(teacher_feature) - similarity_matrix(student_feature)).pow(2).sum() / batch**2


@dataclass
class SPOptions(Options):
    """`method: {name: sp, ...}`; defaults are the reference's (mdistiller: CE 1, no KD term, weight 3000, the last
    stage's map)."""

    name: str = "sp"
    ce_weight: float = 1.0  # weight of the cross-entropy on labels
    sp_weight: float = 3000.0  # gamma of the paper (mdistiller FEAT_W)
    stage: int = -1  # index into Features.stages (0 = stem, -1 = the last stage, before pooling)

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "ce_weight", "sp_weight")


@register_distiller("sp", options=SPOptions, teachers=(1, 1), features=True)
class SP(Distiller):
    """Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.

    loss = ce_weight * CE + sp_weight * ||normalize(F_T F_Tᵀ) - normalize(F_S F_Sᵀ)||_F^2 / B^2, F the flattened
    map of `stage` (rows normalised in L2): the student learns which samples of the batch the teacher finds alike.
    Channel counts and spatial sizes of the two maps may differ (the matrices are B x B).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 1.0,
                 sp_weight: float = 3000.0, stage: int = -1) -> None:
        super().__init__(student, teacher)
        (self.stage,) = select_stages([stage], student, self.teacher, "sp", key="stage")
        self.teacher_fields = feature_fields(self.teacher, [self.stage])
        self.ce_weight, self.sp_weight = ce_weight, sp_weight

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [self.teacher_fields]

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.student.forward_features(x)
        teacher_map = self.teacher_features(x, self.teacher_fields).stages[self.stage]
        return features.logits, {
            "ce": self.ce_weight * cross_entropy(features.logits, y),
            "sp": self.sp_weight * sp_loss(features.stages[self.stage], teacher_map),
        }
