"""DIST: knowledge distillation from a stronger teacher by correlation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, register_distiller
from socratic.losses import cross_entropy
from socratic.registry import Options


def pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """The Pearson correlation of each row of `a` with the same row of `b`: the cosine of the mean-centred rows,
    with `eps` added to the product of norms (as the reference code)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0, beta: float = 1.0,
              gamma: float = 1.0) -> Tensor:
    """Huang et al. 2022: tau^2 * (beta * inter + gamma * intra) on the tempered probabilities, with
    inter = 1 - mean over samples of the correlation across classes and intra = 1 - mean over classes of the
    correlation across the batch (so it depends on the batch). Computed in fp32."""
    y_s = F.softmax(student_logits.float() / temperature, dim=1)
    y_t = F.softmax(teacher_logits.float() / temperature, dim=1)
    inter = 1.0 - pearson_rows(y_s, y_t).mean()
    intra = 1.0 - pearson_rows(y_s.t(), y_t.t()).mean()
    return temperature**2 * (beta * inter + gamma * intra)


def dist_loss_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0,
                         beta: float = 1.0, gamma: float = 1.0) -> Tensor:
    """DIST split over the samples, (B,): tau^2 * (beta * (1 - the sample's inter-class correlation) + gamma *
    intra), the intra-class term (a correlation across the batch, one number) the same for every sample; its
    mean is `dist_loss`. fp32."""
    y_s = F.softmax(student_logits.float() / temperature, dim=1)
    y_t = F.softmax(teacher_logits.float() / temperature, dim=1)
    inter = 1.0 - pearson_rows(y_s, y_t)
    intra = 1.0 - pearson_rows(y_s.t(), y_t.t()).mean()
    return temperature**2 * (beta * inter + gamma * intra)


@dataclass
class DISTOptions(Options):
    """`method: {name: dist, ...}`; defaults are the reference CIFAR config (`dist_cifar.yaml`: dist_t4, CE 1,
    KD 2)."""

    name: str = "dist"
    ce_weight: float = 1.0
    kd_weight: float = 2.0  # weight of the DIST term
    temperature: float = 4.0  # tau
    beta: float = 1.0  # inter-class relation weight
    gamma: float = 1.0  # intra-class relation weight

    def check(self, prefix: str) -> None:
        self.require_positive(prefix, "temperature")
        self.require_non_negative(prefix, "ce_weight", "kd_weight", "beta", "gamma")


def dist_per_teacher_loss(options: DISTOptions, logits: Tensor, teacher_logits: Tensor, target: Tensor,
                          ctx: TrainContext | None) -> Tensor:
    """DIST's term of each sample against one teacher, (B,): kd_weight * `dist_loss_per_sample`; the per-teacher
    loss of the multi-teacher methods (a sample's weight scales its inter-class term and its share of intra)."""
    return options.kd_weight * dist_loss_per_sample(logits, teacher_logits, options.temperature, options.beta,
                                                    options.gamma)


@register_distiller("dist", options=DISTOptions, teachers=(1, 1), per_teacher_loss=dist_per_teacher_loss)
class DIST(Distiller):
    """Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022.

    loss = ce_weight * CE + kd_weight * tau^2 * (beta * inter-class + gamma * intra-class relation loss).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 1.0,
                 kd_weight: float = 2.0, temperature: float = 4.0, beta: float = 1.0, gamma: float = 1.0) -> None:
        super().__init__(student, teacher)
        self.ce_weight, self.kd_weight, self.temperature = ce_weight, kd_weight, temperature
        self.beta, self.gamma = beta, gamma

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [("logits",)]  # the teacher's logits on the batch are all it reads

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        loss = dist_loss(logits, self.teacher_logits(x), self.temperature, self.beta, self.gamma)
        return logits, {"ce": self.ce_weight * cross_entropy(logits, y), "dist": self.kd_weight * loss}
