"""The training context a run skeleton hands to every step (ground floor: imports nothing of socratic).

A method derives warm-ups and schedules from it (DKD: `min(ctx.epoch / 20, 1)`) instead of keeping counters of
its own: the context is a function of the position in the run, so it is reproduced exactly on resume.
`KnownTeacherLogits` is what a batch transform (adaptive DA) hands to the step besides the batch: teacher logits
it already computed for some of the batch's rows, so the distiller runs the teacher on the other rows only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


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


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`x[rows]` along the batch dimension, in `x`'s memory format (channels_last stays channels_last)."""
    out = x.index_select(0, rows)
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


@dataclass(frozen=True)
class KnownTeacherLogits:
    """The logits of `teacher` on rows `rows` of the batch `batch`, already computed (by adaptive DA's selection
    forward, on rows it left unchanged); `complete` computes the other rows and assembles the whole batch's.

    Matched by identity: `complete(teacher, x)` answers only for this very batch tensor and teacher module (else
    None, and the caller runs the teacher on the whole batch as usual), so a method that forwards a different
    tensor (MLKD's two views) or another teacher never receives logits that are not its own.
    """

    batch: torch.Tensor
    teacher: Any  # the nn.Module whose logits these are
    rows: torch.Tensor  # (n,) int64, sorted
    logits: torch.Tensor  # (n, C)

    def complete(self, teacher: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor | None:
        """The teacher's logits on all of `x`: the known rows as given, the others from `teacher` (no graph)."""
        if x is not self.batch or teacher is not self.teacher:
            return None
        missing = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        missing[self.rows] = False
        missing_rows = missing.nonzero().flatten()
        out = self.logits.new_empty((x.shape[0], *self.logits.shape[1:]))
        out[self.rows] = self.logits
        if missing_rows.numel():
            with torch.no_grad():
                out[missing_rows] = teacher(take_rows(x, missing_rows)).to(out.dtype)
        return out


__all__ = ["KnownTeacherLogits", "TrainContext", "take_rows"]
