"""Classification training as a kind of run (`socratic.engine.run.Run`): the distiller's step, evaluation by
top-1, and what best.pt / last.pt / summary.json hold. The loop, run folder and checkpoints are the skeleton's."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from socratic.config import config_to_dict
from socratic.config.schema import ExperimentConfig
from socratic.context import TrainContext
from socratic.distillers.base import Distiller, TeacherReplay
from socratic.engine import distributed
from socratic.engine.evaluate import accuracy_from_counts, evaluate_counts
from socratic.engine.optim import build_optimizer, set_epoch_lr
from socratic.engine.run import EpochCallback, NonFiniteLossError, Run, RunFolder, StepCallback, StepProgress
from socratic.engine.runtime import autocast, grad_scaler, peak_memory_mb, resolve_precision
from socratic.engine.teacher_cache import TeacherCache

# A batch transform that needs the models (e.g. socratic.augment.DisagreementAugmentation):
# x_new = augmentation(x, student, teachers); optional `epoch_metrics()` -> {name: value}, then reset; optional
# `known_teacher_logits()` -> socratic.context.KnownTeacherLogits | None for the batch it just returned.
Augmentation = Callable[[torch.Tensor, torch.nn.Module, Any], torch.Tensor]
LossCheck = Callable[[torch.Tensor, dict[str, torch.Tensor]], None]


def train_step(distiller: Distiller, x: torch.Tensor, y: torch.Tensor, ctx: TrainContext,
               optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer], scaler: torch.amp.GradScaler, *,
               precision: str = "fp32",
               augmentation: Augmentation | None = None, forward: Callable[..., Any] | None = None,
               check_loss: LossCheck | None = None, replay: TeacherReplay | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimiser step of a distiller (the only copy: the Trainer and `socratic bench` use it).

    `augmentation` transforms the batch inside the same autocast (the distiller recomputes the teachers'
    logits on the new batch; CE keeps the labels; teacher logits the augmentation already has for rows it left
    unchanged, its `known_teacher_logits()`, are reused); `forward` replaces `distiller.forward_train` (the DDP
    wrapper under torchrun); `check_loss(loss, losses)` may raise before the backward (the NaN stop).
    `optimizer` may be several (DML's one per peer): all are zeroed, and each is stepped after the one backward
    of the summed losses. `replay` (the teacher-output cache's view of this batch, `socratic.engine.teacher_cache`)
    serves the teachers' outputs on the unchanged batch, and records the ones it asks for, in the same autocast.
    Returns the logits and the named losses.
    """
    with autocast(x.device, precision), distiller.replaying(replay):
        known = None
        if augmentation is not None:
            x = augmentation(x, distiller.student, distiller.disagreement_targets())
            known = getattr(augmentation, "known_teacher_logits", None)
            known = known() if known is not None else None
        with distiller.known_teacher_logits(known):
            logits, losses = (forward or distiller.forward_train)(x, y, ctx)
        if replay is not None:
            distiller.fill_teacher_replay(replay)  # a teacher the step ran on another batch (DA's), on this one
    loss = sum(losses.values())
    if check_loss is not None:
        check_loss(loss, losses)
    optimizers = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer)
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()
    return logits, losses


class Trainer(Run):
    """Runs `config.optim.epochs` epochs of `distiller` and writes the run folder.

    `run_dir` is a `socratic.engine.run.RunFolder` (as `socratic.experiment` makes it) or a path (a fresh
    folder). The run folder holds `metrics.jsonl`, `tb/` (TensorBoard), `checkpoints/last.pt` (everything a
    resume needs, written each epoch), `checkpoints/best.pt` (student weights at the best top-1) and
    `summary.json` at the end. A resumed run continues to the same result as an uninterrupted one: the
    schedule is a function of the epoch, batches depend only on (seed, epoch), and the RNG states are
    checkpointed.

    `augmentation` (optional) transforms each training batch before `forward_train`:
    `x = augmentation(x, distiller.student, distiller.disagreement_targets())` (the teachers; DML's peers),
    inside the same autocast, so the distiller recomputes the teachers' logits on the new batch and CE keeps
    the original labels; its `epoch_metrics()` join the epoch's metrics. Any randomness it draws from torch's
    global RNG is covered by the checkpointed RNG state, so resume still reproduces.

    Under torchrun (a process group with more than one rank, see `socratic.engine.distributed`) the
    trainable modules are wrapped in DistributedDataParallel, metrics are summed over ranks, and only
    rank 0 writes the run folder; `augmentation` gets the unwrapped student, so its input gradients never
    trigger a gradient all-reduce. Epoch callbacks run on every rank with the same (all-ranks) metrics.
    """

    score_key = "val_top1"
    best_key = "best_top1"

    def __init__(self, distiller: Distiller, train_loader: Any, val_loader: Iterable, config: ExperimentConfig,
                 run_dir: RunFolder | str | Path, device: torch.device, meta: dict[str, Any] | None = None,
                 callbacks: Iterable[StepCallback] = (), console: Console | None = None,
                 augmentation: Augmentation | None = None, epoch_callbacks: Iterable[EpochCallback] = (),
                 teacher_cache: TeacherCache | None = None) -> None:
        folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir, config_to_dict(config))
        runtime = config.runtime
        super().__init__(folder, epochs=config.optim.epochs, device=device, progress=runtime.progress,
                         tensorboard=runtime.tensorboard, console=console, step_callbacks=callbacks,
                         epoch_callbacks=epoch_callbacks)
        if self.dist.enabled and runtime.sync_bn:
            distributed.convert_sync_batchnorm(distiller)
        self.distiller = distiller.to(device)
        # This loop optimises every trainable module and calls on_epoch_end: the checks for a user's own loop
        # (socratic.distillers.usage) can never fire here, so they do not run at all.
        self.distiller.usage_checks = False
        self.augmentation = augmentation
        self.teacher_cache = teacher_cache
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.config = config
        self.meta = meta or {}
        if runtime.channels_last:
            self.distiller.to(memory_format=torch.channels_last)
        # one optimiser per group of trainable modules (a single group but for DML's peers)
        self.optimizers = {name: build_optimizer([p for m in modules for p in m.parameters() if p.requires_grad],
                                                 config.optim)
                           for name, modules in distiller.optimizer_groups().items()}
        self.optimizer = next(iter(self.optimizers.values()))
        self.scaler = grad_scaler(device, runtime.precision)
        # DDP around the trainable modules only (teachers are frozen): rank 0's weights are broadcast here.
        self.ddp = (distributed.wrap_distiller(self.distiller, device,
                                               find_unused_parameters=runtime.find_unused_parameters)
                    if self.dist.enabled else None)
        self.lr = config.optim.lr

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder.checkpoint_dir

    @property
    def best_top1(self) -> float:
        return self.best_score

    # ------------------------------------------------------------------------------------ the kind's state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.distiller.student.state_dict(),
            "extra": {name: m.state_dict() for name, m in self.distiller.extra_modules().items()},
            "optimizer": self.optimizer.state_dict(),
            **({"optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()}}
               if len(self.optimizers) > 1 else {}),
            "scaler": self.scaler.state_dict(),
            "scheduler": {"lr": self.lr},
            "best_top1": self.best_score,
            "meta": self.meta,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.distiller.student.load_state_dict(state["model"])
        for name, module in self.distiller.extra_modules().items():
            module.load_state_dict(state["extra"][name])
        if len(self.optimizers) > 1:
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])

    def best_state(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.distiller.student.state_dict(), "meta": self.meta, "epoch": epoch,
                "top1": metrics["val_top1"]}

    # ------------------------------------------------------------------------------------------ the epoch
    def train_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        for opt in self.optimizers.values():
            self.lr = set_epoch_lr(opt, epoch, self.config.optim)
        metrics: dict[str, Any] = {"lr": self.lr, **self._train_epoch(epoch, steps)}
        self.distiller.on_epoch_end(epoch)  # e.g. MTKD-RL's agent update, before metrics and last.pt
        metrics.update(self._method_metrics())
        if self.dist.enabled:
            self._check_ranks_agree(epoch)
        return metrics

    def _check_finite(self, epoch: int, step: int) -> LossCheck:
        def check(loss: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
            local_finite = bool(torch.isfinite(loss))
            # Under torchrun every rank stops together, so none is left waiting in the gradient all-reduce.
            finite = distributed.all_true(local_finite) if self.dist.enabled else local_finite
            if not finite:
                values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
                where = "" if not local_finite else ", here finite: another rank's loss is not"
                raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {step} ({values}{where}); stopped.")
        return check

    def _train_epoch(self, epoch: int, steps: StepProgress) -> dict[str, float]:
        self.distiller.train()
        self.train_loader.set_epoch(epoch)
        loss_sums: dict[str, float] = {}
        correct = seen = 0
        steps_per_epoch = len(self.train_loader)
        steps.start(steps_per_epoch, unit="img")
        start = time.perf_counter()
        optimizers = list(self.optimizers.values())
        cache = (self.teacher_cache.open_epoch(epoch, steps_per_epoch, self.device)
                 if self.teacher_cache is not None else None)
        complete = False
        try:
            for step, (x, y, *indices) in enumerate(self.train_loader):  # indices: for a method that asked for them
                ctx = TrainContext(epoch, step, self.config.optim.epochs, steps_per_epoch,
                                   indices=indices[0] if indices else None)
                replay = cache.begin(x, y) if cache is not None else None
                logits, losses = train_step(self.distiller, x, y, ctx, optimizers, self.scaler,
                                            precision=self.config.runtime.precision,
                                            augmentation=self.augmentation, forward=self.ddp,
                                            check_loss=self._check_finite(epoch, step), replay=replay)
                if cache is not None:
                    cache.end(replay, y)
                self._record_step(losses, logits, y, loss_sums, steps)
                correct += int((logits.detach().argmax(1) == y).sum())
                seen += y.numel()
            complete = True
        finally:
            if cache is not None:
                cache.close(complete)
        elapsed = time.perf_counter() - start
        return self._epoch_metrics(loss_sums, correct, seen, elapsed, cache)

    @staticmethod
    def _record_step(losses: dict[str, torch.Tensor], logits: torch.Tensor, y: torch.Tensor,
                     loss_sums: dict[str, float], steps: StepProgress) -> None:
        step_loss = 0.0
        for name, value in losses.items():
            value = float(value.detach())
            step_loss += value
            loss_sums[name] = loss_sums.get(name, 0.0) + value * y.numel()
        steps.step(loss=step_loss, count=y.numel())

    def _epoch_metrics(self, loss_sums: dict[str, float], correct: int, seen: int, elapsed: float,
                       cache: Any) -> dict[str, float]:
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
        if cache is not None:  # share of (teacher, batch) outputs replayed from the cache (this rank's)
            total = cache.stats.replayed + cache.stats.live
            metrics["teacher_cache_replayed"] = cache.stats.replayed / total if total else 0.0
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

    def evaluate(self, epoch: int, metrics: dict[str, Any]) -> dict[str, float] | None:
        """`val_top1`, `val_top5`, `val_loss` every `runtime.eval_every` epochs and at the last (else None); with
        the distiller's `evaluated_models()` (DML's peers) also `val_<name>_top1/top5/loss` of each, and
        `val_max_top1`, the best top-1 of the student and those models this epoch."""
        if epoch != self.epochs and epoch % self.config.runtime.eval_every != 0:
            return None
        metrics = {f"val_{k}": v for k, v in self._evaluate().items()}
        others = self.distiller.evaluated_models()
        for name, model in others.items():
            metrics.update({f"val_{name}_{k}": v for k, v in self._evaluate(model).items()})
        if others:
            metrics["val_max_top1"] = max([metrics["val_top1"], *(metrics[f"val_{n}_top1"] for n in others)])
        return metrics

    def _evaluate(self, model: torch.nn.Module | None = None) -> dict[str, float]:
        """Top-1/top-5/loss on the validation loader; under torchrun each rank counts its shard (padding
        excluded) and the counts are summed, after rank 0's buffers (BatchNorm statistics) are broadcast so
        every rank evaluates the model that rank 0 checkpoints. `model`: another than the student (a DML peer)."""
        precision = self.config.runtime.precision
        model = self.distiller if model is None else model
        if not self.dist.enabled:
            return accuracy_from_counts(evaluate_counts(model, self.val_loader, self.device, precision))
        for module in self.distiller.trainable_modules().values():
            for buffer in module.buffers():
                distributed.broadcast_tensor_(buffer)
        limit = None
        loader_world = getattr(self.val_loader, "world_size", 1)
        if loader_world > 1:
            limit = distributed.shard_valid_count(len(self.val_loader.dataset), self.val_loader.rank, loader_world)
        counts = evaluate_counts(model, self.val_loader, self.device, precision, max_samples=limit)
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

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
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
        others = self.distiller.evaluated_models()
        if others:  # DML: each peer's best and last top-1, and the best of all models
            summary["peers"] = {name: {"best_top1": max(m[f"val_{name}_top1"] for m in evaluated),
                                       "last_top1": final[f"val_{name}_top1"]} for name in others}
            summary["best_max_top1"] = max(m["val_max_top1"] for m in evaluated)
        return summary

    def epoch_line(self, metrics: dict[str, Any]) -> str:
        return _epoch_line(metrics)

    def resolved(self) -> dict[str, Any]:
        """The device type and the precision `runtime.precision` resolves to here (`auto`: bf16 or fp32)."""
        cache = self.config.teacher_cache
        return {**super().resolved(),
                "runtime.precision (resolved)": resolve_precision(self.device, self.config.runtime.precision),
                # an exact cache does not change the numbers (on or off); top-k logits do
                "teacher outputs (resolved)": f"top-{cache.topk} logits" if cache.enabled and cache.topk else "exact"}


def _epoch_line(metrics: dict[str, Any]) -> str:
    parts = [f"epoch {metrics['epoch']}", f"lr {metrics['lr']:.4g}", f"loss {metrics['train_loss']:.4f}"]
    if "val_top1" in metrics:
        parts += [f"val top1 {metrics['val_top1']:.2f}", f"top5 {metrics['val_top5']:.2f}"]
    parts.append(f"{metrics['train_img_per_s']:,.0f} img/s")
    return " | ".join(parts)


__all__ = ["Augmentation", "EpochCallback", "NonFiniteLossError", "StepCallback", "Trainer", "train_step"]
