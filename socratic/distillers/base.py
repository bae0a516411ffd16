"""The distiller contract: a student, frozen teachers, and any trainable extras; `METHODS` registers each method."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from socratic.context import KnownTeacherLogits, TrainContext
from socratic.registry import METHODS, Options

register_distiller = METHODS.register  # @register_distiller("kd", options=KDOptions, teachers=(1, 1))


class Distiller(nn.Module):
    """Base class of every method.

    `forward_train(x, y, ctx)` returns the student's logits and a dict of named, already weighted losses; the
    run skeleton sums them. `ctx` (a `TrainContext`: epoch, step, epochs, steps per epoch) is where a method
    takes its warm-ups and schedules from, so they are exact on resume. `forward(x)` is the student alone
    (evaluation). Teachers are frozen and stay in eval mode whatever `train()` is called with.

    A method registers its class with its options dataclass and metadata `teachers=(min, max)` (max None: no
    upper bound); `from_options` builds it, by default passing every option as a keyword argument.
    """

    def __init__(self, student: nn.Module, teachers: nn.Module | Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.student = student
        self.teachers = nn.ModuleList([teachers] if isinstance(teachers, nn.Module) else list(teachers))
        for teacher in self.teachers:
            teacher.requires_grad_(False)
            teacher.eval()
        self._known_teacher_logits: KnownTeacherLogits | None = None

    @classmethod
    def from_options(cls, options: Options, student: nn.Module, teachers: Sequence[nn.Module]) -> "Distiller":
        """Build the method from its (checked) options."""
        kwargs = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name != "name"}
        return cls(student, teachers, **kwargs)

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
        """The (single) teacher's logits; no graph is kept. Rows whose logits the step already knows
        (`known_teacher_logits`, adaptive DA) are not recomputed."""
        known = self._known_teacher_logits
        logits = known.complete(self.teacher, x) if known is not None else None
        return self.teacher(x) if logits is None else logits

    @contextlib.contextmanager
    def known_teacher_logits(self, known: KnownTeacherLogits | None) -> Iterator[None]:
        """For the duration, `teacher_logits(x)` reuses `known` when x is its batch (the trainer's step wraps
        `forward_train` in it); None changes nothing."""
        self._known_teacher_logits = known
        try:
            yield
        finally:
            self._known_teacher_logits = None


def list_distillers() -> list[str]:
    """The registered method names."""
    return METHODS.names()


def method_options(name: str, **values: Any) -> Options:
    """The options of method `name` with `values` replacing defaults, checked (a ValueError names the key)."""
    options = dataclasses.replace(METHODS.default_options(name), **values)
    options.check("method")
    return options


def create_distiller(method: Options | str, student: nn.Module, teachers: nn.Module | Sequence[nn.Module] = (),
                     **values: Any) -> Distiller:
    """Build a registered method around an existing student and teachers.

    `method` is the method's options (a config's `method` section) or its name, whose defaults `values`
    replace: `create_distiller("kd", student, teacher, temperature=2)`.
    """
    options = method_options(method, **values) if isinstance(method, str) else method
    entry = METHODS.get(options.name)
    teachers = [teachers] if isinstance(teachers, nn.Module) else list(teachers)
    low, high = entry.meta.get("teachers", (0, 0))
    if len(teachers) < low or (high is not None and len(teachers) > high):
        need = f"{low}" if high == low else (f">= {low}" if high is None else f"{low} to {high}")
        raise ValueError(f"method '{entry.name}' takes {need} teacher(s), got {len(teachers)}")
    return entry.factory.from_options(options, student, teachers)
