"""Variational information distillation (VID)."""

from __future__ import annotations

import math
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


def vid_loss(mean: Tensor, target: Tensor, variance: Tensor) -> Tensor:
    """The Gaussian negative log-likelihood of the teacher's map under the student's prediction, without its
    constant: mean_{b,c,h,w} 1/2 [(mu - t)^2 / sigma_c^2 + log sigma_c^2], `variance` one value per channel; fp32."""
    with torch.autocast(mean.device.type, enabled=False):
        var = variance.float().view(1, -1, *([1] * (mean.dim() - 2)))
        return (0.5 * ((mean.float() - target.float()).pow(2) / var + var.log())).mean()


def inverse_softplus(value: float) -> float:
    """alpha with softplus(alpha) = value (value > 0)."""
    return value + math.log(-math.expm1(-value))  # log(exp(v) - 1), stable for large v


class VIDRegressor(nn.Module):
    """One stage's variational distribution q(t | s): the mean mu = r(f_s), r = 1x1 conv (C_s -> C_t) -> ReLU ->
    1x1 conv (C_t -> C_t) -> ReLU -> 1x1 conv (C_t -> C_t), no biases; and a variance per teacher channel,
    softplus(alpha_c) + eps, starting at `init_variance` (a parameter, or a buffer when it is not learned)."""

    def __init__(self, student_channels: int, teacher_channels: int, init_variance: float = 5.0, eps: float = 1e-5,
                 learn_variance: bool = True) -> None:
        super().__init__()
        self.mean = nn.Sequential(
            nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False), nn.ReLU(),
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=1, bias=False), nn.ReLU(),
            nn.Conv2d(teacher_channels, teacher_channels, kernel_size=1, bias=False),
        )
        alpha = torch.full((teacher_channels,), inverse_softplus(init_variance - eps))
        if learn_variance:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)
        self.eps = eps

    def variance(self) -> Tensor:
        """sigma_c^2 = softplus(alpha_c) + eps, (C_t,) in fp32."""
        return F.softplus(self.alpha.float()) + self.eps

    def forward(self, student_map: Tensor) -> Tensor:
        return self.mean(student_map)


@dataclass
class VIDOptions(Options):
    """`method: {name: vid, ...}`; defaults are the reference's (RepDistiller / mdistiller: CE 1, no KD term,
    weight 1, initial variance 5, eps 1e-5, every stage but the stem; the variance learned, as in RepDistiller)."""

    name: str = "vid"
    ce_weight: float = 1.0  # weight of the cross-entropy on labels
    vid_weight: float = 1.0  # weight of the sum over stages of the negative log-likelihood
    init_variance: float = 5.0  # sigma^2 at the start, the same for every channel
    eps: float = 1e-5  # the floor of sigma^2 = softplus(alpha) + eps
    learn_variance: bool = True  # train alpha with the regressors (RepDistiller); false: sigma^2 fixed (mdistiller)
    stages: list[int] | None = None  # indices into Features.stages (0 = stem); null = every stage but the stem

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "ce_weight", "vid_weight")
        self.require_positive(prefix, "eps")
        if not self.init_variance > self.eps:
            raise ValueError(f"{prefix}.init_variance must be > eps ({self.eps}), got {self.init_variance}")
        if self.stages is not None and not self.stages:
            raise ValueError(f"{prefix}.stages is empty: name at least one stage, or null for every stage but the stem")


@register_distiller("vid", options=VIDOptions, teachers=(1, 1), features=True)
class VID(Distiller):
    """Ahn, Hu, Damianou, Lawrence & Dai, "Variational Information Distillation for Knowledge Transfer", CVPR 2019.

    loss = ce_weight * CE + vid_weight * sum_stages mean 1/2 [(r(f_S) - f_T)^2 / sigma^2 + log sigma^2]: maximising
    a variational lower bound on the mutual information between teacher and student maps, q(f_T | f_S) a Gaussian
    with a regressed mean and a learned per-channel variance. Where the sizes of a stage differ, the larger map is
    average-pooled to the smaller before the regressor. The regressors and variances are trainable extras
    (`extra_modules()["regressors"]`), optimised with the student and saved in every checkpoint.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 1.0,
                 vid_weight: float = 1.0, init_variance: float = 5.0, eps: float = 1e-5, learn_variance: bool = True,
                 stages: Sequence[int] | None = None) -> None:
        super().__init__(student, teacher)
        self.stages = select_stages(stages, student, self.teacher, "vid")
        self.teacher_fields = feature_fields(self.teacher, self.stages)
        self.ce_weight, self.vid_weight = ce_weight, vid_weight
        self.regressors = nn.ModuleList(
            VIDRegressor(student.stage_channels[i], self.teacher.stage_channels[i], init_variance, eps, learn_variance)
            for i in self.stages
        )

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"regressors": self.regressors}

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [self.teacher_fields]

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.student.forward_features(x)
        teacher_stages = self.teacher_features(x, self.teacher_fields).stages
        total = torch.zeros((), device=features.logits.device)
        for index, regressor in zip(self.stages, self.regressors):
            f_s, f_t = match_spatial(features.stages[index], teacher_stages[index], "vid", index)
            total = total + vid_loss(regressor(f_s), f_t, regressor.variance())
        return features.logits, {
            "ce": self.ce_weight * cross_entropy(features.logits, y),
            "vid": self.vid_weight * total,
        }
