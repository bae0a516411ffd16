"""MLKD: multi-level logit distillation (instance, batch and class level, at several temperatures, two views)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, register_distiller
from socratic.losses import cross_entropy, kd_loss, standardize_logits
from socratic.registry import Options

EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)  # the reference's hard-coded ones, after the configured temperature


def class_correlation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Class level: ||P_t^T P_t - P_s^T P_s||_F^2 / C of the (C, C) class-correlation matrices of
    P = softmax(z / T) in R^{B x C} (no T^2, as the reference). fp32."""
    p_s = F.softmax(student_logits.float() / temperature, dim=1)
    p_t = F.softmax(teacher_logits.float() / temperature, dim=1)
    return ((p_t.t() @ p_t - p_s.t() @ p_s) ** 2).sum() / p_s.shape[1]


def batch_correlation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Batch level: ||P_t P_t^T - P_s P_s^T||_F^2 / B of the (B, B) sample-correlation matrices (no T^2). fp32."""
    p_s = F.softmax(student_logits.float() / temperature, dim=1)
    p_t = F.softmax(teacher_logits.float() / temperature, dim=1)
    return ((p_t @ p_t.t() - p_s @ p_s.t()) ** 2).sum() / p_s.shape[0]


def confidence_masks(teacher_weak_logits: Tensor) -> tuple[Tensor, Tensor]:
    """(sample mask, class mask) of the reference: a sample is kept when the teacher's max probability (T = 1) is
    <= its median over the batch; a class when the teacher's summed probability over the batch is <= its median.
    The median is NumPy's 50th percentile (linear interpolation), as `torch.quantile`."""
    p = F.softmax(teacher_weak_logits.float(), dim=1)
    confidence = p.max(dim=1).values
    class_confidence = p.sum(dim=0)
    return confidence <= torch.quantile(confidence, 0.5), class_confidence <= torch.quantile(class_confidence, 0.5)


def mlkd_losses(s_weak: Tensor, s_strong: Tensor, t_weak: Tensor, t_strong: Tensor, temperature: float = 4.0,
                kd_weight: float = 0.9, standardize: bool = False) -> dict[str, Tensor]:
    """The three levels of Jin et al. 2023 as the reference computes them (METHODS.md §I.2.5), over the
    temperatures (temperature, 3, 5, 2, 6):

    - kd: sum_T w * kd(weak, T) * frac(mask) + sum_{T in (temperature, 3, 5)} w * kd(strong, T)
      + sum_{T in (2, 6)} w * kd(weak, T)  (the reference's "strong" terms at 2 and 6 use the weak logits);
    - cc: sum_T w * cc(weak, T) * frac(class mask);  bc: sum_T w * bc(weak, T) * frac(mask).

    kd = T^2 batchmean KL. The masks enter as the fraction of kept entries: the reference multiplies scalar losses
    by the boolean mask and averages, so no sample is actually selected. With `standardize`, only the kd terms see
    standardised logits (Sun et al. 2024); the masks, cc and bc use the raw ones. fp32.
    """
    mask, class_mask = confidence_masks(t_weak)
    frac, class_frac = mask.float().mean(), class_mask.float().mean()
    temperatures = (temperature, *EXTRA_TEMPERATURES)
    kw_s, kw_t, ks_s, ks_t = s_weak, t_weak, s_strong, t_strong
    if standardize:
        kw_s, kw_t, ks_s, ks_t = (standardize_logits(z) for z in (s_weak, t_weak, s_strong, t_strong))
    kd = sum(kd_weight * kd_loss(kw_s, kw_t, tt) * frac for tt in temperatures)
    kd = kd + sum(kd_weight * kd_loss(ks_s, ks_t, tt) for tt in temperatures[:3])
    kd = kd + sum(kd_weight * kd_loss(kw_s, kw_t, tt) for tt in temperatures[3:])
    cc = sum(kd_weight * class_correlation_loss(s_weak, t_weak, tt) * class_frac for tt in temperatures)
    bc = sum(kd_weight * batch_correlation_loss(s_weak, t_weak, tt) * frac for tt in temperatures)
    return {"kd": kd, "cc": cc, "bc": bc}


@dataclass
class MLKDOptions(Options):
    """`method: {name: mlkd, ...}`; defaults are the reference's CIFAR-100 ones (CE 0.1 per view, KD weight 0.9,
    T 4 plus 3, 5, 2, 6). Needs `data.augment: {name: two_view}`."""

    name: str = "mlkd"
    ce_weight: float = 0.1  # weight of the cross-entropy of each view
    kd_weight: float = 0.9  # weight w of every kd, cc and bc term
    temperature: float = 4.0  # the configured temperature; 3, 5, 2 and 6 are always added
    standardize: bool = False  # logit standardisation of the kd terms (MLKD + LS: temperature 2, kd_weight 9)

    def check(self, prefix: str) -> None:
        self.require_positive(prefix, "temperature")
        self.require_non_negative(prefix, "ce_weight", "kd_weight")
        if not isinstance(self.standardize, bool):
            raise ValueError(f"{prefix}.standardize must be true or false, got {self.standardize!r}")


@register_distiller("mlkd", options=MLKDOptions, teachers=(1, 1), views=2)  # views: images per label (two_view)
class MLKD(Distiller):
    """Jin, Wang & Lin, "Multi-Level Logit Distillation", CVPR 2023.

    Trains on two views of each image, which the `two_view` batch transform supplies as x = [weak; strong] (2B
    images for B labels). The student runs separately on each view (separate BN batch statistics, as the
    reference), the frozen teacher on both; loss = ce_weight * (CE(weak) + CE(strong)) + kd + cc + bc
    (`mlkd_losses`). The weak view's logits are returned (train accuracy is the weak view's, as the reference).
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 0.1,
                 kd_weight: float = 0.9, temperature: float = 4.0, standardize: bool = False) -> None:
        super().__init__(student, teacher)
        self.ce_weight, self.kd_weight = ce_weight, kd_weight
        self.temperature, self.standardize = temperature, standardize

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [("logits",)]  # the teacher's logits on the batch are all it reads

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        b = y.shape[0]
        if x.shape[0] != 2 * b:
            raise ValueError(f"MLKD needs two views of each image (x of 2B = {2 * b} images for B = {b} labels), "
                             f"got {x.shape[0]} images: set data.augment: {{name: two_view}}")
        weak, strong = x[:b], x[b:]
        s_weak, s_strong = self.student(weak), self.student(strong)
        t_weak, t_strong = self.teacher_logits(x).split(b)  # the teacher is in eval mode: one pass is the same
        losses = mlkd_losses(s_weak, s_strong, t_weak, t_strong, self.temperature, self.kd_weight, self.standardize)
        return s_weak, {"ce": self.ce_weight * (cross_entropy(s_weak, y) + cross_entropy(s_strong, y)), **losses}
