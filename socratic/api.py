"""The public API for a user's own PyTorch loop (re-exported at the top level: `socratic.load_teacher`, ...).

    teacher = socratic.load_teacher("teachers/cifar10_jpeg/resnet20/model.pt", normalize=True)
    criterion = socratic.DistillationLoss("kd", teacher, model)      # any registered method
    loss = criterion(x, y)                                           # instead of F.cross_entropy(model(x), y)

`DistillationLoss` wraps a registered method (`socratic.methods()`) around the user's student and teacher(s),
any `nn.Module`s: logit methods use only their logits, feature methods get their taps from the zoo's feature
API or, for a plain module, from `socratic.models.external.as_feature_model`. See docs/own-loop.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller, create_distiller
from socratic.engine.checkpoint import CheckpointError
from socratic.evaluation import load_checkpoint_model
from socratic.models.teacher import Teacher
from socratic.registry import METHODS, Options


def methods() -> list[str]:
    """The names of the registered methods (`socratic list methods`), for `DistillationLoss` and
    `create_distiller`."""
    return METHODS.names()


def load_teacher(path: str | Path, *, normalize: bool = False, device: str | torch.device | None = None,
                 check_batches: int = 3) -> Teacher:
    """The model of a checkpoint written by socratic train/distill as a frozen, eval-mode `Teacher` that
    knows the mean/std its inputs were normalised with (stored in the checkpoint).

    normalize: True: the teacher normalises its input itself (feed it [0, 1] pixels); False: the input is
        expected normalised already, and the first `check_batches` batches are checked: inputs whose statistics
        clearly do not match give one `socratic.models.teacher.InputNormalizationWarning`.
    The checkpoint is read with `weights_only=True`.
    """
    model, meta = load_checkpoint_model(path)
    mean, std = meta.get("mean"), meta.get("std")
    if normalize and (mean is None or std is None):
        raise CheckpointError(f"{path} stores no input mean/std, so load_teacher(normalize=True) cannot apply "
                              f"them: normalise the inputs yourself and use normalize=False")
    teacher = Teacher(model, mean, std, normalize=normalize, check_batches=check_batches,
                      input_shape=meta.get("image_shape"), meta=meta)
    return teacher.to(device) if device is not None else teacher


class DistillationLoss(nn.Module):
    """Any registered method as a criterion for a user's own loop (as DeiT's `DistillationLoss`):

        criterion = DistillationLoss("kd", teacher, student, temperature=4)
        loss = criterion(x, y)          # the method's loss, student forward included; criterion.logits

    method: a registered method's name (`socratic.methods()`) or its options; `options` replace its defaults
        (`DistillationLoss("dkd", teacher, student, beta=8)`). teacher: one module or a list (multi-teacher
        methods). student: the model being trained; its parameters are the criterion's (plus the method's
        trainable extras: `criterion.parameters()` or `extra_parameters()` for the optimiser).
    input_shape: (C, H, W) for the feature-tap probe of a plain module (default: the teacher checkpoint's).
    epochs: the run's length, for the context of methods with schedules (only `ctx.epoch` is read today).

    Methods with a warm-up or schedule (DKD, CTKD, ReviewKD) and MTKD-RL need the epoch: `criterion(x, y,
    epoch=e)` (from 1), and MTKD-RL `criterion.on_epoch_end(e)` after each epoch; forgetting either, or an
    optimiser without the extras, is a `socratic.distillers.usage.DistillerUsageError` on the next step.
    """

    def __init__(self, method: str | Options, teacher: nn.Module | Sequence[nn.Module], student: nn.Module, *,
                 input_shape: Sequence[int] | None = None, epochs: int | None = None, **options: Any) -> None:
        super().__init__()
        self.distiller: Distiller = create_distiller(method, student, teacher, input_shape=input_shape, **options)
        self.epochs = epochs
        self.logits: Tensor | None = None
        self.losses: dict[str, Tensor] = {}
        self._epoch: int | None = None
        self._step = 0
        self._steps_per_epoch: int | None = None

    @property
    def student(self) -> nn.Module:
        return self.distiller.student

    @property
    def teachers(self) -> nn.ModuleList:
        return self.distiller.teachers

    def disagreement_targets(self) -> list[nn.Module]:
        """What to hand Disagreement Augmentation: the teachers (DML: the student's peers)."""
        return self.distiller.disagreement_targets()

    def extra_parameters(self) -> list[nn.Parameter]:
        """The method's trainable parameters beyond the student's (empty for most logit methods)."""
        return self.distiller.extra_parameters()

    def bind_train_set(self, labels: Tensor) -> None:
        """Methods with a per-sample memory (CRD) size it from the training set's labels, in dataset order;
        their steps then need each sample's dataset index: `criterion(x, y, epoch=e, indices=idx)`."""
        self.distiller.bind_train_set(labels)

    def context(self, epoch: int, indices: Tensor | None = None) -> TrainContext:
        """The training context of the next step of `epoch` (steps are counted per epoch)."""
        if epoch != self._epoch:
            if self._epoch is not None:
                self._steps_per_epoch = self._step
            self._epoch, self._step = epoch, 0
        steps = max(self._steps_per_epoch or self._step + 1, self._step + 1)
        ctx = TrainContext(epoch=epoch, step=self._step, epochs=max(self.epochs or epoch, epoch),
                           steps_per_epoch=steps, indices=indices)
        self._step += 1
        return ctx

    def forward(self, x: Tensor, y: Tensor, *, epoch: int | None = None, indices: Tensor | None = None,
                ctx: TrainContext | None = None) -> Tensor:
        """The method's summed loss on (x, y); its parts are in `losses` (detached), the student's logits
        in `logits`. `epoch` (from 1) builds the training context, or pass `ctx` itself; `indices`: the
        samples' dataset indices, for methods that keep a per-sample memory (CRD)."""
        if ctx is None and (epoch is not None or indices is not None):
            ctx = self.context(1 if epoch is None else epoch, indices)
        logits, losses = self.distiller.forward_train(x, y, ctx)
        self.logits = logits
        self.losses = {name: value.detach() for name, value in losses.items()}
        return sum(losses.values())

    def on_epoch_end(self, epoch: int) -> None:
        """Call after the last step of `epoch`: where methods that learn once per epoch (MTKD-RL) do it."""
        self.distiller.on_epoch_end(epoch)

    def epoch_metrics(self) -> dict[str, float]:
        """The method's numbers since the last call (teacher weights, temperatures, ...), then reset."""
        return self.distiller.epoch_metrics()


__all__ = ["DistillationLoss", "load_teacher", "methods"]
