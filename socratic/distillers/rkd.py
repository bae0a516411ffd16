"""Relational knowledge distillation (RKD)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, feature_fields, register_distiller
from socratic.distillers.taps import require_embeddings
from socratic.losses import cross_entropy
from socratic.registry import Options


def pairwise_distances(embedding: Tensor, eps: float = 1e-12, squared: bool = False) -> Tensor:
    """(B, B) Euclidean distances of the rows, from ||e_i||^2 + ||e_j||^2 - 2 e_i.e_j clamped at `eps` (so the
    square root has a finite gradient), with the diagonal set to 0; fp32."""
    e = embedding.float().flatten(1)
    norms = e.pow(2).sum(dim=1)
    d = (norms[:, None] + norms[None, :] - 2.0 * e @ e.t()).clamp(min=eps)
    if not squared:
        d = d.sqrt()
    return d.masked_fill(torch.eye(len(e), dtype=torch.bool, device=e.device), 0.0)


def normalised_distances(embedding: Tensor, eps: float = 1e-12, squared: bool = False) -> Tensor:
    """The distances divided by their own mean over the positive (off-diagonal) entries: each model's distances are
    scaled by that model's mean, never by the other's. A batch without a positive distance is left as it is."""
    d = pairwise_distances(embedding, eps, squared)
    positive = d > 0
    count = positive.sum()
    mean = torch.where(count > 0, d.sum() / count.clamp(min=1), torch.ones((), device=d.device))
    return d / mean


def rkd_distance_loss(student_embedding: Tensor, teacher_embedding: Tensor, eps: float = 1e-12,
                      squared: bool = False) -> Tensor:
    """Park et al.'s distance-wise term: SmoothL1 (beta 1) between the normalised distance matrices, mean over B^2."""
    with torch.autocast(student_embedding.device.type, enabled=False):  # the distances in fp32, not bf16/fp16
        return F.smooth_l1_loss(normalised_distances(student_embedding, eps, squared),
                                normalised_distances(teacher_embedding, eps, squared))


def triplet_angles(embedding: Tensor) -> Tensor:
    """(B, B, B) cosines cos[i, j, k] = <u_ij, u_ik>, u_ij = normalize(e_j - e_i) (a zero difference gives u = 0);
    fp32. Memory is O(B^2 D + B^3)."""
    e = embedding.float().flatten(1)
    u = F.normalize(e[None, :, :] - e[:, None, :], dim=2)
    return u @ u.transpose(1, 2)


def rkd_angle_loss(student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
    """Park et al.'s angle-wise term: SmoothL1 (beta 1) between the two B^3 cosine tensors, mean over B^3."""
    with torch.autocast(student_embedding.device.type, enabled=False):  # the cosines in fp32, not bf16/fp16
        return F.smooth_l1_loss(triplet_angles(student_embedding), triplet_angles(teacher_embedding))


@dataclass
class RKDOptions(Options):
    """`method: {name: rkd, ...}`; defaults are the reference's (mdistiller / RepDistiller: CE 1, no KD term,
    distance weight 25, angle weight 50, Euclidean (not squared) distances, eps 1e-12)."""

    name: str = "rkd"
    ce_weight: float = 1.0  # weight of the cross-entropy on labels
    distance_weight: float = 25.0  # weight of the distance-wise term
    angle_weight: float = 50.0  # weight of the angle-wise term
    squared: bool = False  # squared Euclidean distances instead of distances (the reference: false)
    eps: float = 1e-12  # clamp of the squared distances before the square root

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "ce_weight", "distance_weight", "angle_weight")
        self.require_positive(prefix, "eps")


@register_distiller("rkd", options=RKDOptions, teachers=(1, 1), features=True)
class RKD(Distiller):
    """Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019.

    loss = ce_weight * CE + distance_weight * L_D + angle_weight * L_A on the batch's embeddings
    (`forward_features().embedding`): the student keeps the teacher's pairwise distances (each scaled by its own
    mean) and the angles of every triplet. The embedding widths may differ.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 1.0,
                 distance_weight: float = 25.0, angle_weight: float = 50.0, squared: bool = False,
                 eps: float = 1e-12) -> None:
        super().__init__(student, teacher)
        require_embeddings("rkd", ("student", student), ("teacher", self.teacher))
        self.teacher_fields = feature_fields(self.teacher, embedding=True)
        self.ce_weight, self.distance_weight, self.angle_weight = ce_weight, distance_weight, angle_weight
        self.squared, self.eps = squared, eps

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [self.teacher_fields]

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.student.forward_features(x)
        teacher_embedding = self.teacher_features(x, self.teacher_fields).embedding
        s, t = features.embedding, teacher_embedding
        zero = torch.zeros((), device=s.device)  # a term weighted 0 is not computed (the angles are O(B^3))
        return features.logits, {
            "ce": self.ce_weight * cross_entropy(features.logits, y),
            "rkd_distance": (self.distance_weight * rkd_distance_loss(s, t, self.eps, self.squared)
                             if self.distance_weight else zero),
            "rkd_angle": self.angle_weight * rkd_angle_loss(s, t) if self.angle_weight else zero,
        }
