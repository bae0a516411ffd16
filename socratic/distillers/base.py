"""The distiller contract: a student, frozen teachers, and any trainable extras."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.config.schema import MethodConfig


class Distiller(nn.Module):
    """Base class of every method.

    `forward_train(x, y)` returns the student's logits and a dict of named, already weighted losses;
    the trainer sums them. `forward(x)` is the student alone (evaluation). Teachers are frozen and stay in
    eval mode whatever `train()` is called with.
    """

    def __init__(self, student: nn.Module, teachers: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.student = student
        self.teachers = nn.ModuleList(teachers)
        for teacher in self.teachers:
            teacher.requires_grad_(False)
            teacher.eval()

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teachers.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def epoch_metrics(self) -> dict[str, float]:
        """Method-specific numbers for the epoch just finished (logged by the trainer), then reset."""
        return {}

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the trainer after the last step of `epoch` (1-indexed), before its metrics are read and
        the checkpoint is written: learning extras that update once per epoch (MTKD-RL's agent) do it here."""

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules beyond the student (regressors, agents): checkpointed with it, and optimised with
        it unless `trainable_modules` leaves them out (a module with its own optimizer, e.g. an RL agent)."""
        return {}

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The modules whose parameters the trainer's optimizer updates."""
        return {"student": self.student, **self.extra_modules()}

    @property
    def teacher(self) -> nn.Module:
        return self.teachers[0]

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        """The (single) teacher's logits; no graph is kept."""
        return self.teacher(x)


DistillerFactory = Callable[..., Distiller]  # (method, student, teachers, **options) -> Distiller
_DISTILLERS: dict[str, DistillerFactory] = {}


def register_distiller(name: str) -> Callable[[DistillerFactory], DistillerFactory]:
    def decorate(factory: DistillerFactory) -> DistillerFactory:
        _DISTILLERS[name] = factory
        return factory

    return decorate


def list_distillers() -> list[str]:
    return sorted(_DISTILLERS)


def create_distiller(method: MethodConfig, student: nn.Module, teachers: Sequence[nn.Module] = (),
                     **options: Any) -> Distiller:
    """Build the distiller named by `method.name` around an existing student and teachers; `options` go to
    factories that take more than the method section (e.g. `multiteacher=` for the multi-teacher methods)."""
    if method.name not in _DISTILLERS:
        raise ValueError(f"unknown method '{method.name}'; available: {', '.join(list_distillers())}")
    return _DISTILLERS[method.name](method, student, teachers, **options)
