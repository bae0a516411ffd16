"""OFD: a comprehensive overhaul of feature distillation (pre-ReLU maps, margin ReLU teacher, partial L2)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, feature_fields, register_distiller
from socratic.distillers.taps import match_spatial, select_stages
from socratic.losses import cross_entropy
from socratic.registry import Options


def bn_margins(weight: Tensor, bias: Tensor) -> Tensor:
    """The margin of each channel (Heo et al. 2019, eq. 3): the expectation of the pre-ReLU response given that
    it is negative, for a response N(m, s^2) with s = |gamma| and m = beta of the BN before the ReLU:
    m - s * phi(m / s) / Phi(-m / s), or -3 s where Phi(-m / s) <= 0.001 (as the reference). fp64 -> fp32."""
    s = weight.detach().double().abs()
    m = bias.detach().double()
    normal = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64))
    ratio = m / s
    tail = normal.cdf(-ratio)
    density = torch.exp(-0.5 * ratio**2) / math.sqrt(2 * math.pi)
    safe = torch.where(tail > 0.001, tail, torch.ones_like(tail))
    return torch.where(tail > 0.001, m - s * density / safe, -3 * s).float()


def partial_l2(student: Tensor, teacher: Tensor, margin: Tensor) -> Tensor:
    """OFD's distance, summed over channels and positions and averaged over the batch: with the target
    t' = max(teacher, margin) (margin one value per channel), (s - t')^2 wherever s > t' or t' > 0 (a student
    response below a negative target is not penalised). fp32."""
    student, teacher = student.float(), teacher.float()
    target = torch.max(teacher, margin.float().view(1, -1, *([1] * (teacher.dim() - 2))))
    mask = (student > target) | (target > 0)
    return ((student - target).pow(2) * mask).sum() / student.shape[0]


class Connector(nn.Module):
    """1x1 conv (C_S -> C_T, no bias) + BN, no ReLU; conv weights N(0, sqrt(2 / (1 * 1 * C_T))), BN 1 and 0."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_channels)
        nn.init.normal_(self.conv.weight, 0.0, math.sqrt(2.0 / teacher_channels))
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


def _require_preact(role: str, model: nn.Module, margins: bool) -> None:
    if not getattr(model, "preact_taps", False):
        raise ValueError(f"method.name 'ofd' needs the {role}'s pre-ReLU stage maps, which {type(model).__name__} "
                         "does not give (zoo models with preact_taps: the CIFAR ResNets, the VGGs, ShuffleV2)")
    if margins and model.preact_bns() is None:
        raise ValueError(f"method.name 'ofd' takes the teacher's margins from the BN before each stage's last ReLU, "
                         f"and {type(model).__name__} has none per stage: use a CIFAR ResNet or VGG teacher")


@dataclass
class OFDOptions(Options):
    """`method: {name: ofd, ...}`; defaults are the reference's (mdistiller: CE 1, no KD term, weight 1e-3, every
    stage but the stem, the deepest weighted 1 and each shallower one half the next)."""

    name: str = "ofd"
    ce_weight: float = 1.0  # weight of the cross-entropy on labels
    ofd_weight: float = 1e-3  # weight of the summed partial L2 (mdistiller FEAT_W; the original's / 1000)
    stages: list[int] | None = None  # indices into Features.preact_stages; null = every stage but the stem

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "ce_weight", "ofd_weight")
        if self.stages is not None and not self.stages:
            raise ValueError(f"{prefix}.stages is empty: name at least one stage, or null for every stage but the stem")


@register_distiller("ofd", options=OFDOptions, teachers=(1, 1), features=True)
class OFD(Distiller):
    """Heo, Kim, Yun, Park, Kwak & Choi, "A Comprehensive Overhaul of Feature Distillation", ICCV 2019.

    For each chosen stage, the student's pre-ReLU map goes through a trainable connector (1x1 conv + BN) to the
    teacher's width and is compared with the teacher's pre-ReLU map (the larger average-pooled to the smaller)
    by the partial L2 against the margin-ReLU target max(t, margin), the margins computed once from the teacher's
    BN before each stage's last ReLU. loss = ce_weight * CE + ofd_weight * sum_i partial_L2_i / 2^(n - 1 - i).
    The pre-ReLU maps come from the models (`forward_features(x, preact=True)`, `preact_bns()`): no method code
    knows an architecture. The connectors are trainable extras (`extra_modules()["connectors"]`), checkpointed.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 1.0,
                 ofd_weight: float = 1e-3, stages: Sequence[int] | None = None) -> None:
        super().__init__(student, teacher)
        _require_preact("student", student, margins=False)
        _require_preact("teacher", self.teacher, margins=True)
        self.stages = select_stages(stages, student, self.teacher, "ofd")
        self.teacher_fields = feature_fields(self.teacher, self.stages, preact=True)
        self.ce_weight, self.ofd_weight = ce_weight, ofd_weight
        self.connectors = nn.ModuleList(Connector(student.stage_channels[i], self.teacher.stage_channels[i])
                                        for i in self.stages)
        bns = self.teacher.preact_bns()
        for k, i in enumerate(self.stages):  # once, from the loaded teacher (the reference does not update them)
            bn = bns[i]
            if bn.num_features != self.teacher.stage_channels[i]:
                raise ValueError(f"method.stages: the teacher's BN before stage {i}'s ReLU has {bn.num_features} "
                                 f"channels, not the stage's {self.teacher.stage_channels[i]}")
            self.register_buffer(f"margin{k}", bn_margins(bn.weight, bn.bias))

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"connectors": self.connectors}

    def margins(self) -> list[Tensor]:
        return [getattr(self, f"margin{k}") for k in range(len(self.stages))]

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [self.teacher_fields]

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.student.forward_features(x, preact=True)
        teacher = self.teacher_features(x, self.teacher_fields).preact_stages
        n = len(self.stages)
        total = torch.zeros((), device=features.logits.device)
        with torch.autocast(x.device.type, enabled=False):
            for k, (i, connector, margin) in enumerate(zip(self.stages, self.connectors, self.margins())):
                f_s, f_t = features.preact_stages[i], teacher[i]
                if tuple(f_s.shape[-2:]) != tuple(f_t.shape[-2:]):
                    f_s, f_t = match_spatial(f_s, f_t, "ofd", i)
                total = total + partial_l2(connector(f_s.float()), f_t, margin) / 2 ** (n - 1 - k)
        return features.logits, {
            "ce": self.ce_weight * cross_entropy(features.logits, y),
            "ofd": self.ofd_weight * total,
        }
