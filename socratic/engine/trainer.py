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
from socratic.context import TrainContext
from socratic.distillers.base import Distiller
from socratic.engine import distributed
from socratic.engine.checkpoint import load_checkpoint, save_checkpoint
from socratic.engine.evaluate import accuracy_from_counts, evaluate_counts
from socratic.engine.logger import RunLogger, read_metrics
from socratic.engine.optim import build_optimizer, set_epoch_lr
from socratic.engine.runtime import autocast, grad_scaler, peak_memory_mb, rng_state, set_rng_state

StepCallback = Callable[[int, int], None]  # (epoch, step) after each optimiser step
# (epoch, metrics) after each epoch's metrics are logged and last.pt is written; may raise to stop the run
# (e.g. optuna.TrialPruned: the run folder keeps the epochs done). Under torchrun it runs on every rank
# with the same (all-ranks) metrics.
EpochCallback = Callable[[int, dict[str, Any]], None]
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

    Under torchrun (a process group with more than one rank, see `socratic.engine.distributed`) the
    trainable modules are wrapped in DistributedDataParallel, metrics are summed over ranks, and only
    rank 0 writes the run folder; `augmentation` gets the unwrapped student, so its input gradients never
    trigger a gradient all-reduce.
    """

    def __init__(self, distiller: Distiller, train_loader: Any, val_loader: Iterable, config: ExperimentConfig,
                 run_dir: str | Path, device: torch.device, meta: dict[str, Any] | None = None,
                 callbacks: Iterable[StepCallback] = (), console: Console | None = None,
                 augmentation: Augmentation | None = None, epoch_callbacks: Iterable[EpochCallback] = ()) -> None:
        self.dist = distributed.info()
        if self.dist.enabled and config.runtime.sync_bn:
            distributed.convert_sync_batchnorm(distiller)
        self.distiller = distiller.to(device)
        self.augmentation = augmentation
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device
        self.meta = meta or {}
        self.callbacks = list(callbacks)
        self.epoch_callbacks = list(epoch_callbacks)
        self.console = console or Console(stderr=True)
        runtime = config.runtime
        if runtime.channels_last:
            self.distiller.to(memory_format=torch.channels_last)
        params = [p for m in distiller.trainable_modules().values() for p in m.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(params, config.optim)
        self.scaler = grad_scaler(device, runtime.precision)
        # DDP around the trainable modules only (teachers are frozen): rank 0's weights are broadcast here.
        self.ddp = (distributed.wrap_distiller(self.distiller, device,
                                               find_unused_parameters=runtime.find_unused_parameters)
                    if self.dist.enabled else None)
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
        """Load `checkpoints/last.pt` and continue after its epoch (every rank loads it under torchrun)."""
        state = distributed.load_on_all_ranks(self.checkpoint_dir / "last.pt",
                                              lambda path: load_checkpoint(path, map_location=self.device))
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
                ctx = TrainContext(epoch, step, self.config.optim.epochs, len(self.train_loader))
                if self.ddp is not None:
                    logits, losses = self.ddp(x, y, ctx)
                else:
                    logits, losses = self.distiller.forward_train(x, y, ctx)
            loss = sum(losses.values())
            local_finite = bool(torch.isfinite(loss))
            # Under torchrun every rank stops together, so none is left waiting in the gradient all-reduce.
            finite = distributed.all_true(local_finite) if self.dist.enabled else local_finite
            if not finite:
                values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
                where = "" if not local_finite else ", here finite: another rank's loss is not"
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch}, step {step} ({values}{where}); stopped. The last good "
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
        if self.dist.enabled:  # sums over all ranks: the metrics describe the whole (global) epoch
            parts = distributed.gather_objects((loss_sums, correct, seen, elapsed))
            loss_sums = {}
            for sums, *_ in parts:
                for name, value in sums.items():
                    loss_sums[name] = loss_sums.get(name, 0.0) + value
            correct, seen = sum(p[1] for p in parts), sum(p[2] for p in parts)
            elapsed = max(p[3] for p in parts)
        metrics = {f"train_{name}": total / seen for name, total in loss_sums.items()}
        metrics["train_loss"] = sum(loss_sums.values()) / seen
        metrics["train_top1"] = 100.0 * correct / seen
        metrics["train_time"] = elapsed
        metrics["train_img_per_s"] = seen / elapsed
        metrics["peak_memory_mb"] = peak_memory_mb(self.device, reset=True)  # this rank's
        return metrics

    def _method_metrics(self) -> dict[str, float]:
        """The distiller's and the augmentation's epoch numbers; under torchrun the mean over ranks."""
        metrics = dict(self.distiller.epoch_metrics())
        if self.augmentation is not None and hasattr(self.augmentation, "epoch_metrics"):
            metrics.update(self.augmentation.epoch_metrics())
        if not self.dist.enabled:
            return metrics
        merged: dict[str, list[float]] = {}
        for part in distributed.gather_objects(metrics):
            for key, value in part.items():
                merged.setdefault(key, []).append(value)
        return {key: (sum(values) / len(values) if all(isinstance(v, (int, float)) for v in values) else values[0])
                for key, values in merged.items()}

    def _evaluate(self) -> dict[str, float]:
        """Top-1/top-5/loss on the validation loader; under torchrun each rank counts its shard (padding
        excluded) and the counts are summed, after rank 0's buffers (BatchNorm statistics) are broadcast so
        every rank evaluates the model that rank 0 checkpoints."""
        precision = self.config.runtime.precision
        if not self.dist.enabled:
            return accuracy_from_counts(evaluate_counts(self.distiller, self.val_loader, self.device, precision))
        for module in self.distiller.trainable_modules().values():
            for buffer in module.buffers():
                distributed.broadcast_tensor_(buffer)
        limit = None
        loader_world = getattr(self.val_loader, "world_size", 1)
        if loader_world > 1:
            limit = distributed.shard_valid_count(len(self.val_loader.dataset), self.val_loader.rank, loader_world)
        counts = evaluate_counts(self.distiller, self.val_loader, self.device, precision, max_samples=limit)
        keys = sorted(counts)
        summed = distributed.all_reduce_tensor(torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64))
        return accuracy_from_counts(dict(zip(keys, summed.tolist())))

    def _check_ranks_agree(self, epoch: int) -> None:
        """Under torchrun: the global RNG and every learned module kept outside DDP must match on all ranks."""
        distributed.check_rng_in_sync(f"after epoch {epoch}")
        trainable = {id(m) for m in self.distiller.trainable_modules().values()}
        for name, module in self.distiller.extra_modules().items():
            if id(module) in trainable:
                continue  # inside DDP: kept equal by the gradient all-reduce
            if len(set(distributed.gather_objects(distributed.module_fingerprint(module)))) > 1:
                raise RuntimeError(
                    f"the extra module '{name}' is updated outside the optimizer and differs between ranks after "
                    f"epoch {epoch}: average it with socratic.engine.distributed.all_reduce_mean(module) after each "
                    "local update (or update it on rank 0 and broadcast_module(module)); see docs/distributed.md"
                )

    def fit(self) -> dict[str, Any]:
        """Train to the last epoch and return the summary (also written to `summary.json`).

        Under torchrun every rank returns the same summary; only rank 0 writes files and prints.
        """
        cfg = self.config
        main = self.dist.is_main
        logger = None
        if main:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            logger = RunLogger(self.run_dir, cfg.runtime.tensorboard, start_epoch=self.start_epoch)
            logger.truncate_after(self.start_epoch - 1)
        progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(), console=self.console, disable=not (cfg.runtime.progress and main), transient=True,
        )
        wall_start = time.perf_counter()
        try:
            with progress:
                for epoch in range(self.start_epoch, cfg.optim.epochs + 1):
                    lr = set_epoch_lr(self.optimizer, epoch, cfg.optim)
                    metrics: dict[str, Any] = {"epoch": epoch, "lr": lr, **self._train_epoch(epoch, progress)}
                    self.distiller.on_epoch_end(epoch)  # e.g. MTKD-RL's agent update, before metrics and last.pt
                    metrics.update(self._method_metrics())
                    if self.dist.enabled:
                        self._check_ranks_agree(epoch)
                    last = epoch == cfg.optim.epochs
                    if last or epoch % cfg.runtime.eval_every == 0:
                        val = self._evaluate()
                        metrics.update({f"val_{k}": v for k, v in val.items()})
                        if val["top1"] > self.best_top1:
                            self.best_top1 = val["top1"]
                            if main:
                                save_checkpoint(
                                    {"model": self.distiller.student.state_dict(), "meta": self.meta,
                                     "epoch": epoch, "top1": val["top1"]},
                                    self.checkpoint_dir / "best.pt",
                                )
                        metrics["best_top1"] = self.best_top1
                    if main:
                        logger.log_epoch(metrics)
                        save_checkpoint(self._state(epoch, lr), self.checkpoint_dir / "last.pt")
                        self.console.print(_epoch_line(metrics), highlight=False)
                    distributed.barrier()  # the others wait until rank 0 has written the epoch
                    for callback in self.epoch_callbacks:
                        callback(epoch, metrics)
        finally:
            if logger is not None:
                logger.close()
        wall_time = time.perf_counter() - wall_start
        return distributed.run_on_main(lambda: self._write_summary(wall_time))

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
            "epoch_time": sum(m["train_time"] for m in history) / len(history),
            "peak_memory_mb": max(m.get("peak_memory_mb", 0.0) for m in history),
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
