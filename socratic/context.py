"""The training context a run skeleton hands to every step (ground floor: imports nothing of socratic).

A method derives warm-ups and schedules from it (DKD: `min(ctx.epoch / 20, 1)`) instead of keeping counters of
its own: the context is a function of the position in the run, so it is reproduced exactly on resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainContext:
    """Where a step stands in its run: `epoch` counts from 1, `step` from 0 within the epoch. `indices` are the
    batch's positions in the training set (an int64 tensor) when the method asked the loader for them (a method
    registered with `sample_indices=True`, e.g. CRD), else None."""

    epoch: int = 1
    step: int = 0
    epochs: int = 1
    steps_per_epoch: int = 1
    indices: Any = field(default=None, compare=False, repr=False)

    @property
    def global_step(self) -> int:
        """Steps finished before this one, over the whole run."""
        return (self.epoch - 1) * self.steps_per_epoch + self.step

    @property
    def progress(self) -> float:
        """The fraction of the run's steps finished before this one, in [0, 1)."""
        return self.global_step / max(self.epochs * self.steps_per_epoch, 1)


__all__ = ["TrainContext"]
