"""Training from scratch on labels: the baseline every method is compared with."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.config.schema import MethodConfig
from socratic.distillers.base import Distiller, register_distiller
from socratic.losses import cross_entropy


class Vanilla(Distiller):
    """Cross-entropy on the labels only (used for teachers and from-scratch students)."""

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        return logits, {"ce": cross_entropy(logits, y)}


@register_distiller("ce")
def _build(method: MethodConfig, student: nn.Module, teachers: Sequence[nn.Module]) -> Distiller:
    return Vanilla(student, teachers)
