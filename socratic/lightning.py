"""Lightning adapters (extra `[lightning]`): any registered method as a `LightningModule`, and a callback that
calls the epoch hooks of the methods inside a LightningModule of one's own.

    module = DistillationModule(socratic.DistillationLoss("kd", teacher, model),
                                optimizer=lambda params: torch.optim.SGD(params, lr=0.05))
    lightning.Trainer(max_epochs=240).fit(module, train_loader, val_loader)

`DistillationModule` optimises the student and every trainable extra of the method (`configure_optimizers`),
hands the method the training context (epoch from 1, step, epochs, steps per epoch), runs an optional batch
transform (Disagreement Augmentation) first, calls `on_epoch_end` after each training epoch and logs the
named losses (`train/<name>`), the method's epoch numbers (`method/<name>`) and top-1 (`val/top1`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

try:
    import lightning.pytorch as pl
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError('socratic.lightning needs Lightning: pip install "socratic-kd[lightning]"') from err

from socratic.api import DistillationLoss
from socratic.context import TrainContext
from socratic.distillers.base import Distiller

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
BatchTransform = Callable[[Tensor, nn.Module, Any], Tensor]


def _sgd(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def _distiller(method: Distiller | DistillationLoss) -> Distiller:
    return method.distiller if isinstance(method, DistillationLoss) else method


class DistillationModule(pl.LightningModule):
    """A registered method (a `DistillationLoss` or a `Distiller`) trained by a Lightning `Trainer`.

    optimizer: builds the optimiser from the parameters to train (student + the method's trainable extras;
        default SGD lr 0.05, momentum 0.9, weight decay 5e-4, the CIFAR recipe). A learning-rate schedule:
        subclass and override `configure_optimizers`, or pass `scheduler` (optimizer -> LR scheduler, stepped
        per epoch).
    augmentation: a batch transform run before each training step, `x = augmentation(x, student, teachers)`
        (`socratic.DisagreementAugmentation`); its `epoch_metrics()` are logged with the method's.
    Batches are `(x, y)`; the validation step logs `val/loss` (cross-entropy) and `val/top1` of the student.
    """

    def __init__(self, method: Distiller | DistillationLoss, optimizer: OptimizerFactory = _sgd, *,
                 scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
                 augmentation: BatchTransform | None = None) -> None:
        super().__init__()
        self.distiller = _distiller(method)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.augmentation = augmentation

    def forward(self, x: Tensor) -> Tensor:
        return self.distiller.student(x)

    def configure_optimizers(self) -> Any:
        params = [p for m in self.distiller.trainable_modules().values() for p in m.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                          "interval": "epoch"}}

    def _context(self, step: int) -> TrainContext:
        trainer = self.trainer
        steps = trainer.num_training_batches
        steps = int(steps) if isinstance(steps, int) or (isinstance(steps, float) and math.isfinite(steps)) else 1
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else self.current_epoch + 1
        return TrainContext(epoch=self.current_epoch + 1, step=step, epochs=epochs, steps_per_epoch=max(steps, 1))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.augmentation is not None:
            x = self.augmentation(x, self.distiller.student, self.distiller.disagreement_targets())
        logits, losses = self.distiller.forward_train(x, y, self._context(batch_idx))
        loss = sum(losses.values())
        for name, value in losses.items():
            self.log(f"train/{name}", value.detach(), on_step=True, on_epoch=True, batch_size=y.shape[0])
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=y.shape[0])
        self.log("train/top1", 100.0 * (logits.detach().argmax(1) == y).float().mean(), on_epoch=True,
                 on_step=False, batch_size=y.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self.distiller.on_epoch_end(self.current_epoch + 1)
        metrics = dict(self.distiller.epoch_metrics())
        if self.augmentation is not None and hasattr(self.augmentation, "epoch_metrics"):
            metrics.update(self.augmentation.epoch_metrics())
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                self.log(f"method/{name}", float(value))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.distiller.student(x)
        self.log("val/loss", nn.functional.cross_entropy(logits.float(), y), prog_bar=False, batch_size=y.shape[0])
        self.log("val/top1", 100.0 * (logits.argmax(1) == y).float().mean(), prog_bar=True, batch_size=y.shape[0])


class DistillationCallback(pl.Callback):
    """For a LightningModule of one's own that holds `DistillationLoss` criteria (or distillers): after each
    training epoch, calls their `on_epoch_end(epoch)` (epoch from 1) and logs their epoch numbers as
    `method/<name>`. The module's `configure_optimizers` must include the criteria's parameters (its
    `self.parameters()` does when the criterion is an attribute)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        for module in pl_module.modules():
            if isinstance(module, Distiller):
                module.on_epoch_end(epoch)
                for name, value in module.epoch_metrics().items():
                    if isinstance(value, (int, float)):
                        pl_module.log(f"method/{name}", float(value))


__all__ = ["DistillationCallback", "DistillationModule"]
