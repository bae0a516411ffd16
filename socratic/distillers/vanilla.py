"""Training from scratch on labels: the baseline every method is compared with."""

from __future__ import annotations

from torch import Tensor

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, register_distiller
from socratic.losses import cross_entropy


@register_distiller("ce", teachers=(0, 0))
class Vanilla(Distiller):
    """Cross-entropy on the labels only (used for teachers and from-scratch students); no options."""

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(x)
        return logits, {"ce": cross_entropy(logits, y)}
