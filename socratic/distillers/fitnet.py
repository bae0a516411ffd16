"""FitNet hint learning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, feature_fields, register_distiller
from socratic.losses import cross_entropy, fitnet_loss
from socratic.registry import Options


@dataclass
class FitNetOptions(Options):
    """`method: {name: fitnet, ...}`; defaults as mdistiller's FitNet recipe (CE 1, hint 100, HINT_LAYER 2)."""

    name: str = "fitnet"
    ce_weight: float = 1.0  # weight of the cross-entropy on labels
    hint_weight: float = 100.0  # weight of the hint MSE
    hint_layer: int = 2  # index into Features.stages (0 = stem output), as mdistiller's HINT_LAYER

    def check(self, prefix: str) -> None:
        self.require_non_negative(prefix, "ce_weight", "hint_weight")


class HintRegressor(nn.Module):
    """1x1 conv + BN mapping a student map to the teacher's channels, resized to the teacher's map size."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_channels)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.bn(self.conv(x))
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


@register_distiller("fitnet", options=FitNetOptions, teachers=(1, 1), features=True)
class FitNet(Distiller):
    """Romero et al. 2015, "FitNets: Hints for Thin Deep Nets".

    loss = ce_weight * CE + hint_weight * MSE(r(F_s[hint_layer]), F_t[hint_layer]). Deviation from the
    paper: hint and classification are trained jointly from the start (as mdistiller/CRD do), not in two
    stages.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | Sequence[nn.Module], hint_layer: int = 2,
                 ce_weight: float = 1.0, hint_weight: float = 100.0) -> None:
        super().__init__(student, teacher)
        teacher = self.teacher
        for role, model in (("student", student), ("teacher", teacher)):
            stages = getattr(model, "stage_channels", None)
            if stages is None:
                raise ValueError(f"FitNet needs a {role} with stage_channels (a socratic zoo or hooked model)")
            if not -len(stages) <= hint_layer < len(stages):
                raise ValueError(
                    f"method.hint_layer={hint_layer} is out of range for the {role} "
                    f"({len(stages)} stages: use 0..{len(stages) - 1})"
                )
        self.hint_layer = hint_layer
        self.ce_weight = ce_weight
        self.hint_weight = hint_weight
        self.regressor = HintRegressor(student.stage_channels[hint_layer], teacher.stage_channels[hint_layer])
        self.teacher_fields = feature_fields(teacher, [hint_layer])

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        return [self.teacher_fields]  # the teacher's map at hint_layer

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"regressor": self.regressor}

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.student.forward_features(x)
        teacher_hint = self.teacher_features(x, self.teacher_fields).stages[self.hint_layer]  # no grad
        student_hint = self.regressor(features.stages[self.hint_layer], teacher_hint.shape[-2:])
        return features.logits, {
            "ce": self.ce_weight * cross_entropy(features.logits, y),
            "hint": self.hint_weight * fitnet_loss(student_hint, teacher_hint),
        }
