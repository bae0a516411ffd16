"""The training loop: sum the distiller's named losses, step, schedule, evaluate, log, checkpoint."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from socratic.config.schema import ExperimentConfig
from socratic.distillers.base import Distiller
from socratic.engine.checkpoint import load_checkpoint, save_checkpoint
from socratic.engine.evaluate import evaluate
from socratic.engine.logger import RunLogger, read_metrics
from socratic.engine.optim import build_optimizer, set_epoch_lr
from socratic.engine.runtime import autocast, grad_scaler, rng_state, set_rng_state

StepCallback = Callable[[int, int], None]  # (epoch, step) after each optimiser step
# A batch transform that needs the models (e.g. socratic.augment.DisagreementAugmentation):
# x_new = augmentation(x, student, teachers); optional `epoch_metrics()` -> {name: value}, then reset.
Augmentation = Callable[[torch.Tensor, torch.nn.Module, Any], torch.Tensor]


class NonFiniteLossError(FloatingPointError):
    """A NaN/inf loss; the last good checkpoint on disk is kept."""


class Trainer:
    """Runs `config.optim.epochs` epochs of `distiller` and writes the run folder.

    The run folder holds `metrics.jsonl`, `tb/` (TensorBoard), `checkpoints/last.pt` (everything a
    resume needs, written each epoch) and `checkpoints/best.pt` (student weights at the best top-1),
    and `summary.json` at the end. A resumed run continues to the same result as an uninterrupted one:
    the schedule is a function of the epoch, batches depend only on (seed, epoch), and the RNG states
    are checkpointed.

    `augmentation` (optional) transforms each training batch before `forward_train`:
    `x = augmentation(x, distiller.student, distiller.teachers)`, inside the same autocast, so the
    distiller recomputes the teachers' logits on the new batch and CE keeps the original labels; its
    `epoch_metrics()` join the epoch's metrics. Any randomness it draws from torch's global RNG is
    covered by the checkpointed RNG state, so resume still reproduces.
    """

    def __init__(self, distiller: Distiller, train_loader: Any, val_loader: Iterable, config: ExperimentConfig,
                 run_dir: str | Path, device: torch.device, meta: dict[str, Any] | None = None,
                 callbacks: Iterable[StepCallback] = (), console: Console | None = None,
                 augmentation: Augmentation | None = None) -> None:
        self.distiller = distiller.to(device)
        self.augmentation = augmentation
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device
        self.meta = meta or {}
        self.callbacks = list(callbacks)
        self.console = console or Console(stderr=True)
        runtime = config.runtime
        if runtime.channels_last:
            self.distiller.to(memory_format=torch.channels_last)
        params = [p for m in distiller.trainable_modules().values() for p in m.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, config.optim)
        self.scaler = grad_scaler(device, runtime.precision)
        self.start_epoch = 1
        self.best_top1 = -math.inf

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _state(self, epoch: int, lr: float) -> dict[str, Any]:
        return {
            "model": self.distiller.student.state_dict(),
            "extra": {name: m.state_dict() for name, m in self.distiller.extra_modules().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": {"epoch": epoch, "lr": lr},
            "epoch": epoch,
            "best_top1": self.best_top1,
            "rng": rng_state(),
            "meta": self.meta,
        }

    def resume(self) -> None:
        """Load `checkpoints/last.pt` and continue after its epoch."""
        state = load_checkpoint(self.checkpoint_dir / "last.pt", map_location=self.device)
        self.distiller.student.load_state_dict(state["model"])
        for name, module in self.distiller.extra_modules().items():
            module.load_state_dict(state["extra"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.best_top1 = state["best_top1"]
        set_rng_state(state["rng"])
        self.start_epoch = state["epoch"] + 1

    def _train_epoch(self, epoch: int, progress: Progress) -> dict[str, float]:
        runtime = self.config.runtime
        self.distiller.train()
        self.train_loader.set_epoch(epoch)
        loss_sums: dict[str, float] = {}
        correct = seen = 0
        task = progress.add_task(f"epoch {epoch}/{self.config.optim.epochs}", total=len(self.train_loader), speed="")
        start = time.perf_counter()
        for step, (x, y) in enumerate(self.train_loader):
            with autocast(self.device, runtime.precision):
                if self.augmentation is not None:
                    x = self.augmentation(x, self.distiller.student, self.distiller.teachers)
                logits, losses = self.distiller.forward_train(x, y)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch}, step {step} ({values}); stopped. The last good "
                    f"checkpoint is {self.checkpoint_dir / 'last.pt'} (epoch {epoch - 1})."
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            for name, value in losses.items():
                loss_sums[name] = loss_sums.get(name, 0.0) + float(value.detach()) * y.numel()
            correct += int((logits.detach().argmax(1) == y).sum())
            seen += y.numel()
            elapsed = time.perf_counter() - start
            progress.update(task, advance=1, speed=f"{seen / max(elapsed, 1e-9):,.0f} img/s")
            for callback in self.callbacks:
                callback(epoch, step)
        elapsed = time.perf_counter() - start
        progress.remove_task(task)
        metrics = {f"train_{name}": total / seen for name, total in loss_sums.items()}
        metrics["train_loss"] = sum(loss_sums.values()) / seen
        metrics["train_top1"] = 100.0 * correct / seen
        metrics["train_time"] = elapsed
        metrics["train_img_per_s"] = seen / elapsed
        return metrics

    def fit(self) -> dict[str, Any]:
        """Train to the last epoch and return the summary (also written to `summary.json`)."""
        cfg = self.config
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        logger = RunLogger(self.run_dir, cfg.runtime.tensorboard, start_epoch=self.start_epoch)
        logger.truncate_after(self.start_epoch - 1)
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(), console=self.console, disable=not cfg.runtime.progress, transient=True,
        )
        wall_start = time.perf_counter()
        try:
            with progress:
                for epoch in range(self.start_epoch, cfg.optim.epochs + 1):
                    lr = set_epoch_lr(self.optimizer, epoch, cfg.optim)
                    metrics: dict[str, Any] = {"epoch": epoch, "lr": lr, **self._train_epoch(epoch, progress)}
                    metrics.update(self.distiller.epoch_metrics())
                    if self.augmentation is not None and hasattr(self.augmentation, "epoch_metrics"):
                        metrics.update(self.augmentation.epoch_metrics())
                    last = epoch == cfg.optim.epochs
                    if last or epoch % cfg.runtime.eval_every == 0:
                        val = evaluate(self.distiller, self.val_loader, self.device, cfg.runtime.precision)
                        metrics.update({f"val_{k}": v for k, v in val.items()})
                        if val["top1"] > self.best_top1:
                            self.best_top1 = val["top1"]
                            save_checkpoint(
                                {"model": self.distiller.student.state_dict(), "meta": self.meta,
                                 "epoch": epoch, "top1": val["top1"]},
                                self.checkpoint_dir / "best.pt",
                            )
                        metrics["best_top1"] = self.best_top1
                    logger.log_epoch(metrics)
                    save_checkpoint(self._state(epoch, lr), self.checkpoint_dir / "last.pt")
                    self.console.print(_epoch_line(metrics), highlight=False)
        finally:
            logger.close()
        return self._write_summary(time.perf_counter() - wall_start)

    def _write_summary(self, wall_time: float) -> dict[str, Any]:
        history = read_metrics(self.run_dir / "metrics.jsonl")
        evaluated = [m for m in history if "val_top1" in m]
        final = evaluated[-1]
        summary = {
            "name": self.config.name,
            "seed": self.config.seed,
            "epochs": len(history),
            "best_top1": max(m["val_top1"] for m in evaluated),
            "best_epoch": max(evaluated, key=lambda m: m["val_top1"])["epoch"],
            "last_top1": final["val_top1"],
            "last_top5": final["val_top5"],
            "train_time": sum(m["train_time"] for m in history),
            "wall_time_this_session": wall_time,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def _epoch_line(metrics: dict[str, Any]) -> str:
    parts = [f"epoch {metrics['epoch']}", f"lr {metrics['lr']:.4g}", f"loss {metrics['train_loss']:.4f}"]
    if "val_top1" in metrics:
        parts += [f"val top1 {metrics['val_top1']:.2f}", f"top5 {metrics['val_top5']:.2f}"]
    parts.append(f"{metrics['train_img_per_s']:,.0f} img/s")
    return " | ".join(parts)
