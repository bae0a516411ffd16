"""Vanilla knowledge distillation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, register_distiller
from socratic.losses import cross_entropy, kd_loss, kd_loss_per_sample, standardize_logits
from socratic.registry import Options


@dataclass
class KDOptions(Options):
    """`method: {name: kd, ...}`; defaults T=4, CE 0.1, KD 0.9 as in the CIFAR-100 recipe of mdistiller/CRD."""

    name: str = "kd"
    temperature: float = 4.0  # KD temperature T
    ce_weight: float = 0.1  # weight of the cross-entropy on labels
    kd_weight: float = 0.9  # weight of T^2 * KL(teacher || student)
    standardize: bool = False  # logit standardisation (Sun et al. 2024) of both logits before softmax(z / T)

    def check(self, prefix: str) -> None:
        self.require_positive(prefix, "temperature")
        self.require_non_negative(prefix, "ce_weight", "kd_weight")
        if not isinstance(self.standardize, bool):
            raise ValueError(f"{prefix}.standardize must be true or false, got {self.standardize!r}")


def kd_per_teacher_loss(options: KDOptions, logits: Tensor, teacher_logits: Tensor, target: Tensor,
                        ctx: TrainContext | None) -> Tensor:
    """KD's distillation term of each sample against one teacher, (B,): kd_weight * T^2 * KL, on standardised
    logits with `standardize`; the per-teacher loss of the multi-teacher methods."""
    s, t = (standardize_logits(logits), standardize_logits(teacher_logits)) if options.standardize else (
        logits, teacher_logits)
    return options.kd_weight * kd_loss_per_sample(s, t, options.temperature)


@register_distiller("kd", options=KDOptions, teachers=(1, 1), per_teacher_loss=kd_per_teacher_loss)
class KD(Distiller):
    """Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network".

    loss = ce_weight * CE(s, y) + kd_weight * T^2 * KL(softmax(t/T) || softmax(s/T)).
    With `standardize`, s and t in the KL are first standardised per sample (`socratic.losses.standardize_logits`,
    Sun et al., CVPR 2024); CE keeps the raw logits and the T^2 stays.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], temperature: float = 4.0,
                 ce_weight: float = 0.1, kd_weight: float = 0.9, standardize: bool = False) -> None:
        super().__init__(student, teacher)
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.kd_weight = kd_weight
        self.standardize = standardize

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [("logits",)]  # the teacher's logits on the batch are all it reads

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        teacher_logits = self.teacher_logits(x)
        s, t = (standardize_logits(logits), standardize_logits(teacher_logits)) if self.standardize else (logits,
                                                                                                       teacher_logits)
        return logits, {
            "ce": self.ce_weight * cross_entropy(logits, y),
            "kd": self.kd_weight * kd_loss(s, t, self.temperature),
        }
