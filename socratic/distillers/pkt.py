"""Probabilistic knowledge transfer (PKT)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, feature_fields, register_distiller
from socratic.distillers.taps import require_embeddings
from socratic.losses import cross_entropy
from socratic.registry import Options


def cosine_probabilities(embedding: Tensor, eps: float = 1e-7) -> Tensor:
    """P_ij = S_ij / sum_k S_ik with S = (cos(e_i, e_j) + 1) / 2, the diagonal included: (B, B) in fp32.

    Each row is the conditional distribution "which sample of the batch is e_i's neighbour" of Passalis & Tefas's
    cosine-similarity kernel. NaNs of the normalised embeddings are set to 0, as in the reference."""
    e = embedding.float().flatten(1)
    e = torch.nan_to_num(e / (e.norm(dim=1, keepdim=True) + eps), nan=0.0)
    similarity = (e @ e.t() + 1.0) / 2.0
    return similarity / similarity.sum(dim=1, keepdim=True)


def pkt_loss(student_embedding: Tensor, teacher_embedding: Tensor, eps: float = 1e-7) -> Tensor:
    """KL(P_T || P_S) of the two batches' cosine-similarity distributions, averaged over the B^2 entries (not
    summed per row: the reason for the large reference weight). The embedding widths may differ."""
    with torch.autocast(student_embedding.device.type, enabled=False):  # the similarities in fp32, not bf16/fp16
        p_s = cosine_probabilities(student_embedding, eps)
        p_t = cosine_probabilities(teacher_embedding, eps)
        return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


@dataclass
class PKTOptions(Options):
    """`method: {name: pkt, ...}`; defaults are the reference's (mdistiller / RepDistiller: CE 1, no KD term,
    weight 30000, eps 1e-7)."""

    name: str = "pkt"
    ce_weight: float = 1.0  # weight of the cross-entropy on labels
    pkt_weight: float = 30000.0  # mdistiller FEAT_W (the loss is a mean over B^2 entries)
    eps: float = 1e-7  # in the norm's denominator and both sides of the log ratio

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "ce_weight", "pkt_weight")
        self.require_positive(prefix, "eps")


@register_distiller("pkt", options=PKTOptions, teachers=(1, 1), features=True)
class PKT(Distiller):
    """Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer", ECCV 2018.

    loss = ce_weight * CE + pkt_weight * mean_ij P^T_ij log(P^T_ij / P^S_ij), P the row-normalised cosine
    similarities of the batch's embeddings (`forward_features().embedding`, the pooled vector the classifier sees).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 1.0,
                 pkt_weight: float = 30000.0, eps: float = 1e-7) -> None:
        super().__init__(student, teacher)
        require_embeddings("pkt", ("student", student), ("teacher", self.teacher))
        self.teacher_fields = feature_fields(self.teacher, embedding=True)
        self.ce_weight, self.pkt_weight, self.eps = ce_weight, pkt_weight, eps

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [self.teacher_fields]

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.student.forward_features(x)
        teacher_embedding = self.teacher_features(x, self.teacher_fields).embedding
        return features.logits, {
            "ce": self.ce_weight * cross_entropy(features.logits, y),
            "pkt": self.pkt_weight * pkt_loss(features.embedding, teacher_embedding, self.eps),
        }
