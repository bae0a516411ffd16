"""The checks that make a method's trainable extras and epoch hook impossible to forget in a user's own loop.

Two mistakes train silently otherwise: an optimiser over `student.parameters()` never updates a method's
regressors (FitNet's hint regressor, the multi-teacher feature regressors, ...), and a loop that never calls
`on_epoch_end(epoch)` leaves MTKD-RL's teacher weights at 1 forever. `UsageCheck.before_step`, run by every
`Distiller.forward_train` while `usage_checks` is on, finds both on the next step:

* extras: between two steps, if an optimiser stepped the student and an extra parameter received a gradient
  (its `.grad` changed) but no optimiser that stepped since holds it, the step raises. Which optimisers
  stepped comes from torch's global `register_optimizer_step_post_hook` (installed on the first check, so a
  process that never checks never pays for it); fused optimisers are seen as well as any other.
* epoch hook: a method whose `on_epoch_end` does something needs the training context (the epoch), and when
  `ctx.epoch` changes, `on_epoch_end` must have been called since the previous step.

The run skeleton's `Trainer` optimises every trainable module and calls `on_epoch_end` itself; it turns the
checks off (`Distiller.usage_checks = False`), so the CLI path neither trips them nor runs them.
"""

from __future__ import annotations

import weakref
from collections import deque
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from socratic.context import TrainContext

# The checks read a distiller through its public API only (trainable_modules, needs_epoch_end, method_name):
# `Distiller` is not imported here, as base.py imports this module.
Distiller = Any


class DistillerUsageError(RuntimeError):
    """A method used in a way that would train silently wrong (extras not optimised, epoch hook not called)."""


# Every optimiser step of the process since the first check: (running count, weak reference to the optimiser).
_STEPS: deque[tuple[int, weakref.ReferenceType]] = deque(maxlen=1024)
_step_count = 0
_hook_installed = False


def _record_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    global _step_count
    _step_count += 1
    _STEPS.append((_step_count, weakref.ref(optimizer)))


def _install_hook() -> None:
    global _hook_installed
    if not _hook_installed:
        register_optimizer_step_post_hook(_record_step)
        _hook_installed = True


def _stepped_parameter_ids(since: int) -> set[int] | None:
    """The ids of the parameters of every optimiser stepped after count `since`; None if the log lost some."""
    if _STEPS and _STEPS[0][0] > since + 1 and since > 0:
        return None
    ids: set[int] = set()
    seen: set[int] = set()
    for count, ref in _STEPS:
        optimizer = ref() if count > since else None
        if optimizer is None or id(optimizer) in seen:
            continue
        seen.add(id(optimizer))
        ids.update(id(p) for group in optimizer.param_groups for p in group["params"])
    return ids


def _grad_token(p: torch.Tensor) -> tuple[int, int] | None:
    """Changes whenever a backward writes the parameter's gradient (a new tensor or an in-place add)."""
    return None if p.grad is None else (id(p.grad), p.grad._version)


class UsageCheck:
    """The state of one distiller's checks (its last step's epoch, whether its epoch hook ran since, and what
    the trainable parameters' gradients looked like at the last step)."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.epoch_hook_called = False
        self.step_count = -1  # the global optimiser-step count at the previous step (-1: no previous step)
        self.grad_tokens: dict[int, tuple[int, int] | None] = {}

    def epoch_ended(self, epoch: int) -> None:
        self.epoch_hook_called = True

    def before_step(self, distiller: Distiller, ctx: TrainContext | None) -> None:
        """Raise `DistillerUsageError` for a mistake made since the previous step; then record this step."""
        if distiller.needs_epoch_end:
            self._check_epoch(distiller, ctx)
        self._check_extras(distiller)

    def _check_epoch(self, distiller: Distiller, ctx: TrainContext | None) -> None:
        name = distiller.method_name
        if ctx is None:
            raise DistillerUsageError(
                f"method '{name}' learns once per epoch (on_epoch_end), so it needs to know the epoch: call "
                f"forward_train(x, y, socratic.TrainContext(epoch=e, step=s, epochs=E, steps_per_epoch=S)) (or "
                f"DistillationLoss(...)(x, y, epoch=e)) and on_epoch_end(e) after each epoch's last step")
        if self.epoch is not None and ctx.epoch != self.epoch and not self.epoch_hook_called:
            raise DistillerUsageError(
                f"method '{name}': epoch {ctx.epoch} started but on_epoch_end({self.epoch}) was not called after "
                f"the last step of epoch {self.epoch}; call it there (it is where '{name}' learns: without it its "
                f"per-epoch update never happens)")
        if ctx.epoch != self.epoch:
            self.epoch, self.epoch_hook_called = ctx.epoch, False

    def _check_extras(self, distiller: Distiller) -> None:
        modules = distiller.trainable_modules()
        extras = [(name, p) for name, m in modules.items() if name != "student" for p in m.parameters()
                  if p.requires_grad]
        if not extras:
            return
        _install_hook()
        previous, self.step_count = self.step_count, _step_count
        tokens = {id(p): _grad_token(p) for _, p in extras}
        previous_tokens, self.grad_tokens = self.grad_tokens, tokens
        if previous < 0 or _step_count == previous:
            return  # the first step, or no optimiser stepped since the previous one
        stepped = _stepped_parameter_ids(previous)
        if stepped is None:
            return
        student = [p for p in modules["student"].parameters() if p.requires_grad]
        if not any(id(p) in stepped for p in student):
            return  # whatever stepped was not training this student
        missing = sorted({name for name, p in extras if id(p) not in stepped and tokens[id(p)] is not None
                          and tokens[id(p)] != previous_tokens.get(id(p))})
        if missing:
            raise DistillerUsageError(
                f"method '{distiller.method_name}' trains extra modules ({', '.join(missing)}) beside the student, "
                f"and they received gradients but no optimiser that stepped the student updates them: build the "
                f"optimiser over distiller.parameters() (or criterion.parameters()), or add "
                f"optimizer.add_param_group({{'params': distiller.extra_parameters()}})")
