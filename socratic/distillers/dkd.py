"""Decoupled knowledge distillation (DKD)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, register_distiller
from socratic.losses import cross_entropy, standardize_logits
from socratic.registry import Options


def dkd_terms_per_sample(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float = 4.0
                         ) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD) of each sample, shape (B,) each: T^2 * KL summed over its classes (Zhao et al. 2022).

    TCKD: KL between the binary (target, all non-target) probabilities of teacher and student; NCKD: KL between
    the distributions over the non-target classes, the target removed by subtracting 1000 from its tempered logit
    (a finite offset: -inf would give 0 * inf = NaN in the KL). Computed in fp32; log b_S has no epsilon.
    """
    s = student_logits.float() / temperature
    t = teacher_logits.float() / temperature
    gt = F.one_hot(target, s.shape[1]).to(s.dtype)
    p_s, p_t = F.softmax(s, dim=1), F.softmax(t, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], dim=1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="none").sum(1)
    nckd = F.kl_div(F.log_softmax(s - 1000.0 * gt, dim=1), F.softmax(t - 1000.0 * gt, dim=1),
                    reduction="none").sum(1)
    return tckd * temperature**2, nckd * temperature**2


def dkd_terms(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float = 4.0
              ) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD) of Zhao et al. 2022 averaged over the batch (`dkd_terms_per_sample`; the reference's sum / B)."""
    tckd, nckd = dkd_terms_per_sample(student_logits, teacher_logits, target, temperature)
    return tckd.mean(), nckd.mean()


def warmup_factor(ctx: TrainContext, warmup_epochs: int) -> float:
    """DKD's linear warm-up of the distillation term: min(epoch / warmup_epochs, 1), epochs counted from 1."""
    return 1.0 if warmup_epochs <= 0 else min(ctx.epoch / warmup_epochs, 1.0)


@dataclass
class DKDOptions(Options):
    """`method: {name: dkd, ...}`; defaults are mdistiller's CIFAR-100 ones (beta 6 for VGG13->VGG8 and WRN pairs,
    2 for ResNet56/110 pairs)."""

    name: str = "dkd"
    ce_weight: float = 1.0  # weight of the cross-entropy (not warmed up)
    alpha: float = 1.0  # weight of TCKD
    beta: float = 8.0  # weight of NCKD
    temperature: float = 4.0
    warmup_epochs: int = 20  # the distillation term grows as min(epoch / warmup_epochs, 1); 0 = no warm-up
    standardize: bool = False  # logit standardisation (Sun et al. 2024) of both logits before softmax(z / T)

    def check(self, prefix: str) -> None:
        self.require_positive(prefix, "temperature")
        self.require_non_negative(prefix, "ce_weight", "alpha", "beta", "warmup_epochs")
        if not isinstance(self.standardize, bool):
            raise ValueError(f"{prefix}.standardize must be true or false, got {self.standardize!r}")


def dkd_per_teacher_loss(options: DKDOptions, logits: Tensor, teacher_logits: Tensor, target: Tensor,
                         ctx: TrainContext | None) -> Tensor:
    """DKD's distillation term of each sample against one teacher, (B,): min(epoch / warmup, 1) * (alpha * TCKD +
    beta * NCKD), on standardised logits with `standardize`; the per-teacher loss of the multi-teacher methods."""
    if ctx is None:
        raise ValueError("DKD's warm-up needs the training context (a socratic.context.TrainContext)")
    s, t = (standardize_logits(logits), standardize_logits(teacher_logits)) if options.standardize else (
        logits, teacher_logits)
    tckd, nckd = dkd_terms_per_sample(s, t, target, options.temperature)
    return warmup_factor(ctx, options.warmup_epochs) * (options.alpha * tckd + options.beta * nckd)


@register_distiller("dkd", options=DKDOptions, teachers=(1, 1), per_teacher_loss=dkd_per_teacher_loss)
class DKD(Distiller):
    """Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022.

    loss = ce_weight * CE + min(epoch / warmup_epochs, 1) * (alpha * TCKD + beta * NCKD). The warm-up factor is a
    function of the training context's epoch, so a resumed run reproduces it exactly. With `standardize`, both
    logits are standardised per sample before the tempered softmaxes of TCKD and NCKD (Sun et al., CVPR 2024,
    `socratic.losses.standardize_logits`); CE keeps the raw logits.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 1.0,
                 alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, warmup_epochs: int = 20,
                 standardize: bool = False) -> None:
        super().__init__(student, teacher)
        self.ce_weight, self.alpha, self.beta = ce_weight, alpha, beta
        self.temperature, self.warmup_epochs, self.standardize = temperature, warmup_epochs, standardize

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [("logits",)]  # the teacher's logits on the batch are all it reads

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        if ctx is None:
            raise ValueError("DKD's warm-up needs the training context: call forward_train(x, y, ctx) with a "
                             "socratic.context.TrainContext(epoch=..., ...)")
        logits = self.student(x)
        teacher_logits = self.teacher_logits(x)
        if self.standardize:
            tckd, nckd = dkd_terms(standardize_logits(logits), standardize_logits(teacher_logits), y,
                                   self.temperature)
        else:
            tckd, nckd = dkd_terms(logits, teacher_logits, y, self.temperature)
        factor = warmup_factor(ctx, self.warmup_epochs)
        return logits, {
            "ce": self.ce_weight * cross_entropy(logits, y),
            "tckd": factor * self.alpha * tckd,
            "nckd": factor * self.beta * nckd,
        }
