"""CTKD: curriculum temperature for knowledge distillation (global variant)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, register_distiller
from socratic.losses import cross_entropy, standardize_logits
from socratic.registry import Options


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `lam` (CTKD's lambda is <= 0, so this reverses it)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lam: float) -> Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return ctx.lam * grad, None


def gradient_reversal(x: Tensor, lam: float) -> Tensor:
    """GRL_lambda(x): x in the forward pass, lambda * dL/dx in the backward pass (as the reference: the sign comes
    from lambda itself, which CTKD's schedule keeps in [decay_min, decay_max] = [-1, 0])."""
    return _GradientReversal.apply(x, lam)


def grl_lambda(epoch: int, decay_max: float = 0.0, decay_min: float = -1.0, decay_loops: int = 10) -> float:
    """CTKD's cosine schedule of the reversal strength, a function of the epoch (counted from 1) only:
    lambda(e) = 1/2 (cos(pi min(e, loops) / loops) + 1) (max - min) + min, so lambda(1) = -0.0245 and
    lambda(e >= loops) = min = -1 with the defaults."""
    e = min(epoch, decay_loops)
    return 0.5 * (math.cos(math.pi * e / decay_loops) + 1.0) * (decay_max - decay_min) + decay_min


class GlobalTemperature(nn.Module):
    """CTKD's global learnable temperature: tau = t_start + t_end * sigmoid(GRL_lambda(theta)), theta a scalar
    initialised to 1 (so tau starts at 1 + 20 sigmoid(1) = 15.62, bounded in (t_start, t_start + t_end))."""

    def __init__(self, t_start: float = 1.0, t_end: float = 20.0) -> None:
        super().__init__()
        self.t_start, self.t_end = t_start, t_end
        self.theta = nn.Parameter(torch.ones(1))

    def forward(self, lam: float) -> Tensor:
        return self.t_start + self.t_end * torch.sigmoid(gradient_reversal(self.theta.float(), lam))


def ctkd_kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: Tensor | float) -> Tensor:
    """tau^2 * KL(softmax(t / tau) || softmax(s / tau)), summed over classes, averaged over the batch, in fp32; tau
    may be a tensor, and its gradient then flows through both the softmaxes and the tau^2 factor."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    squared = temperature**2
    return kl * (squared.squeeze() if isinstance(squared, Tensor) else squared)


@dataclass
class CTKDOptions(Options):
    """`method: {name: ctkd, ...}`; defaults are the reference CIFAR script's (`scripts/run_cifar_distill.sh`:
    -r 0.1 -a 0.9, global temperature 1 + 20 sigmoid, cosine decay 0 -> -1 over 10 epochs)."""

    name: str = "ctkd"
    ce_weight: float = 0.1  # -r
    kd_weight: float = 0.9  # -a
    t_start: float = 1.0  # lower bound of tau
    t_end: float = 20.0  # range of tau: tau in (t_start, t_start + t_end)
    decay_max: float = 0.0  # lambda at epoch 0
    decay_min: float = -1.0  # lambda from epoch decay_loops on
    decay_loops: int = 10  # epochs of the cosine schedule of lambda
    standardize: bool = False  # logit standardisation (Sun et al. 2024) of both logits before softmax(z / tau)

    def check(self, prefix: str) -> None:
        self.require_positive(prefix, "t_start", "t_end", "decay_loops")
        self.require_non_negative(prefix, "ce_weight", "kd_weight")
        if self.decay_min > self.decay_max:
            raise ValueError(f"{prefix}.decay_min must be <= {prefix}.decay_max, got {self.decay_min} > "
                             f"{self.decay_max}")
        if not isinstance(self.standardize, bool):
            raise ValueError(f"{prefix}.standardize must be true or false, got {self.standardize!r}")


@register_distiller("ctkd", options=CTKDOptions, teachers=(1, 1))
class CTKD(Distiller):
    """Li, Li, Yang, Zhao, Song, Luo, Li & Yang, "Curriculum Temperature for Knowledge Distillation", AAAI 2023.

    loss = ce_weight * CE + kd_weight * tau^2 * KL(softmax(t / tau) || softmax(s / tau)), with the global
    learnable tau of `GlobalTemperature`. theta is an extra module: the run's optimiser trains it with the student
    (same lr and weight decay, as the reference) and the checkpoint keeps it. The gradient reversal makes theta
    *ascend* the distillation loss (a harder temperature), more strongly as lambda(epoch) goes from 0 to -1; lambda
    is a function of the context's epoch, so a resumed run has exactly the uninterrupted one's.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 0.1,
                 kd_weight: float = 0.9, t_start: float = 1.0, t_end: float = 20.0, decay_max: float = 0.0,
                 decay_min: float = -1.0, decay_loops: int = 10, standardize: bool = False) -> None:
        super().__init__(student, teacher)
        self.ce_weight, self.kd_weight, self.standardize = ce_weight, kd_weight, standardize
        self.decay_max, self.decay_min, self.decay_loops = decay_max, decay_min, decay_loops
        self.temperature = GlobalTemperature(t_start, t_end)
        self._tau_sum, self._steps, self._lam = 0.0, 0, decay_max

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [("logits",)]  # the teacher's logits on the batch are all it reads

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"temperature": self.temperature}

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        if ctx is None:
            raise ValueError("CTKD's lambda schedule needs the training context: call forward_train(x, y, ctx) "
                             "with a socratic.context.TrainContext(epoch=..., ...)")
        lam = grl_lambda(ctx.epoch, self.decay_max, self.decay_min, self.decay_loops)
        tau = self.temperature(lam)
        logits = self.student(x)
        teacher_logits = self.teacher_logits(x)
        s, t = (standardize_logits(logits), standardize_logits(teacher_logits)) if self.standardize else (
            logits, teacher_logits)
        self._tau_sum, self._steps, self._lam = self._tau_sum + float(tau.detach()), self._steps + 1, lam
        return logits, {
            "ce": self.ce_weight * cross_entropy(logits, y),
            "kd": self.kd_weight * ctkd_kd_loss(s, t, tau),
        }

    def epoch_metrics(self) -> dict[str, float]:
        """The mean tau over the epoch's steps and the epoch's lambda, then reset."""
        if not self._steps:
            return {}
        metrics = {"ctkd_tau": self._tau_sum / self._steps, "ctkd_lambda": self._lam}
        self._tau_sum, self._steps = 0.0, 0
        return metrics
