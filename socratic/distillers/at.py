"""Attention transfer (AT)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, register_distiller
from socratic.losses import cross_entropy
from socratic.registry import Options


def _describe(model: nn.Module) -> str:
    return f"{type(model).__name__} (stage_channels {list(model.stage_channels)})"


def select_stages(stages: Sequence[int] | None, student: nn.Module, teacher: nn.Module, method: str,
                  key: str = "stages") -> list[int]:
    """The indices into `Features.stages` that a feature method pairs between student and teacher.

    `stages` None means every stage but the stem (index 0), the reference code's `feats[1:]`; it needs both
    models to have as many stages. An index pairs the same stage of both models (negative counts from the
    deepest). Anything that does not fit is a ValueError naming `method.<key>` and the stages of both models,
    which the run turns into a config error before training starts. Shared by AT, SP and VID.
    """
    for role, model in (("student", student), ("teacher", teacher)):
        if not getattr(model, "stage_channels", None) or not hasattr(model, "forward_features"):
            raise ValueError(f"method.name '{method}' needs a {role} with feature stages (forward_features and "
                             f"stage_channels: a socratic zoo model, or an external one with feature_layers)")
    both = f"student {_describe(student)}, teacher {_describe(teacher)}"
    n_s, n_t = len(student.stage_channels), len(teacher.stage_channels)
    if stages is None:
        if n_s != n_t:
            raise ValueError(f"method.{key}: null pairs every stage but the stem, but the models have {n_s} and {n_t} "
                             f"stages ({both}); list the stages to pair, e.g. {key}: [1, 2, 3]")
        if n_s < 2:
            raise ValueError(f"method.{key}: null pairs every stage but the stem, and there is none ({both})")
        return list(range(1, n_s))
    stages = list(stages)
    if not stages:
        raise ValueError(f"method.{key} is empty: name at least one stage ({both})")
    for index in stages:
        if not (-n_s <= index < n_s and -n_t <= index < n_t):
            raise ValueError(f"method.{key}: stage {index} is out of range for the "
                             f"{'student' if not -n_s <= index < n_s else 'teacher'} ({both}; use "
                             f"{-min(n_s, n_t)}..{min(n_s, n_t) - 1})")
    for role, n in (("student", n_s), ("teacher", n_t)):
        absolute = [i % n for i in stages]
        if len(set(absolute)) < len(absolute):
            raise ValueError(f"method.{key}: {stages} names a stage of the {role} twice ({both})")
    return stages


def match_spatial(f_s: Tensor, f_t: Tensor, method: str, stage: int, key: str = "stages") -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two (B, C, H, W) maps to the size of the smaller, as the reference code does;
    maps that are neither (one larger in H, the other in W) or are not 4-d are a ValueError naming the stage."""
    if f_s.dim() != 4 or f_t.dim() != 4:
        raise ValueError(f"method.{key}: {method} needs (B, C, H, W) maps, but stage {stage} is "
                         f"{tuple(f_s.shape)} in the student and {tuple(f_t.shape)} in the teacher")
    size_s, size_t = tuple(f_s.shape[-2:]), tuple(f_t.shape[-2:])
    if size_s == size_t:
        return f_s, f_t
    if all(a >= b for a, b in zip(size_s, size_t)):
        return F.adaptive_avg_pool2d(f_s, size_t), f_t
    if all(a <= b for a, b in zip(size_s, size_t)):
        return f_s, F.adaptive_avg_pool2d(f_t, size_s)
    raise ValueError(f"method.{key}: {method} cannot match stage {stage}: the student's map is {size_s} and the "
                     f"teacher's {size_t} (neither is at least as large in both dimensions)")


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """Zagoruyko & Komodakis's spatial attention: mean over channels of |f|^p, flattened and L2-normalised per
    sample, (B, H*W), in fp32. (The maps are post-ReLU, so |f|^p = f^p as in the reference.)"""
    a = feature.float().abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(a, dim=1)


def at_loss(student_maps: Sequence[Tensor], teacher_maps: Sequence[Tensor], p: float = 2.0) -> Tensor:
    """Sum over stage pairs of mean_{b,hw} (a_S - a_T)^2, the squared-difference form of the reference code (not
    the paper's unsquared norm). The maps of a pair must already have the same spatial size."""
    device = student_maps[0].device
    total = torch.zeros((), device=device)
    with torch.autocast(device.type, enabled=False):  # fp32 under any autocast
        for f_s, f_t in zip(student_maps, teacher_maps, strict=True):
            total = total + (attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean()
    return total


@dataclass
class ATOptions(Options):
    """`method: {name: at, ...}`; defaults are the reference's (mdistiller / RepDistiller: CE 1, no KD term,
    beta 1000, p 2, every stage but the stem)."""

    name: str = "at"
    ce_weight: float = 1.0  # weight of the cross-entropy on labels
    at_weight: float = 1000.0  # beta of the paper and the reference code
    p: float = 2.0  # the power of the attention map (mean_c |f|^p)
    stages: list[int] | None = None  # indices into Features.stages (0 = stem); null = every stage but the stem

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "ce_weight", "at_weight")
        self.require_positive(prefix, "p")
        if self.stages is not None and not self.stages:
            raise ValueError(f"{prefix}.stages is empty: name at least one stage, or null for every stage but the stem")


@register_distiller("at", options=ATOptions, teachers=(1, 1))
class AT(Distiller):
    """Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of Convolutional
    Neural Networks via Attention Transfer", ICLR 2017.

    loss = ce_weight * CE + at_weight * sum_stages mean_{b,hw} (a_S - a_T)^2, a = normalize(mean_c f^p) per
    sample; where the sizes of a stage differ, the larger map is average-pooled to the smaller.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], ce_weight: float = 1.0,
                 at_weight: float = 1000.0, p: float = 2.0, stages: Sequence[int] | None = None) -> None:
        super().__init__(student, teacher)
        self.stages = select_stages(stages, student, self.teacher, "at")
        self.ce_weight, self.at_weight, self.p = ce_weight, at_weight, p

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.student.forward_features(x)
        with torch.no_grad():
            teacher_stages = self.teacher.forward_features(x).stages
        pairs = [match_spatial(features.stages[i], teacher_stages[i], "at", i) for i in self.stages]
        return features.logits, {
            "ce": self.ce_weight * cross_entropy(features.logits, y),
            "at": self.at_weight * at_loss([s for s, _ in pairs], [t for _, t in pairs], self.p),
        }
