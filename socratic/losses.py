"""Distillation losses as small pure functions (no state, no weights: distillers apply the weights)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".

    T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes and averaged over the batch
    (the convention of the CIFAR KD literature; the T^2 keeps gradient scale independent of T).
    """
    return kd_loss_per_sample(student_logits, teacher_logits, temperature).mean()


def kd_loss_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """The KD loss of each sample, shape (B,): the building block of per-sample teacher weighting."""
    return tempered_kl_per_sample(student_logits, teacher_logits, temperature) * temperature**2


def tempered_kl_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
                           student_temperature: float | None = None) -> Tensor:
    """KL(softmax(t / T) || softmax(s / T_s)) of each sample, summed over classes, in fp32, without the T^2 of KD;
    T_s = T unless given (Rusu et al.'s policy distillation leaves the student untempered: T_s = 1). Every
    log-probability is a log_softmax, so a small T (0.01) cannot underflow to log(0)."""
    log_p_student = F.log_softmax(student_logits.float() / (temperature if student_temperature is None
                                                            else student_temperature), dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)


def standardize_logits(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Sun et al., "Logit Standard Deviation for Knowledge Distillation", CVPR 2024 (logit standardisation).

    (z - mean(z)) / (eps + std(z)) per sample over the classes, in fp32: `std` is the unbiased (N - 1) one and the
    eps is added to the standard deviation, not under the square root, as the reference code. Gradients flow
    through the mean and the std. Shared by every method that offers `standardize` (KD, DKD, CTKD, MLKD).
    """
    z = logits.float()
    return (z - z.mean(dim=-1, keepdim=True)) / (eps + z.std(dim=-1, keepdim=True))


def fitnet_loss(student_hint: Tensor, teacher_hint: Tensor) -> Tensor:
    """Romero et al. 2015, "FitNets: Hints for Thin Deep Nets": mean squared error between the
    regressed student feature map and the teacher's hint map."""
    return F.mse_loss(student_hint.float(), teacher_hint.float())


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy on hard labels, computed in fp32 for stability under mixed precision."""
    return F.cross_entropy(logits.float(), targets)


__all__ = ["cross_entropy", "fitnet_loss", "kd_loss", "kd_loss_per_sample", "standardize_logits",
           "tempered_kl_per_sample"]
