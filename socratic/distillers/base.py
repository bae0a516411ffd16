"""The distiller contract: a student, frozen teachers, and any trainable extras."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

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

    def forward_train(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def epoch_metrics(self) -> dict[str, float]:
        """Method-specific numbers for the epoch just finished (logged by the trainer), then reset."""
        return {}

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable modules beyond the student (regressors, agents): optimised and checkpointed with it."""
        return {}

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, **self.extra_modules()}

    @property
    def teacher(self) -> nn.Module:
        return self.teachers[0]

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        """The (single) teacher's logits; no graph is kept."""
        return self.teacher(x)


DistillerFactory = Callable[[MethodConfig, nn.Module, Sequence[nn.Module]], Distiller]
_DISTILLERS: dict[str, DistillerFactory] = {}


def register_distiller(name: str) -> Callable[[DistillerFactory], DistillerFactory]:
    def decorate(factory: DistillerFactory) -> DistillerFactory:
        _DISTILLERS[name] = factory
        return factory

    return decorate


def list_distillers() -> list[str]:
    return sorted(_DISTILLERS)


def create_distiller(method: MethodConfig, student: nn.Module, teachers: Sequence[nn.Module] = ()) -> Distiller:
    """Build the distiller named by `method.name` around an existing student and teachers."""
    if method.name not in _DISTILLERS:
        raise ValueError(f"unknown method '{method.name}'; available: {', '.join(list_distillers())}")
    return _DISTILLERS[method.name](method, student, teachers)
