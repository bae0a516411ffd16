"""`StageRun`: what the five MKDT stages share as kinds of `socratic.engine.run.Run` (config, time and peak
memory per epoch, a summary that names the stage)."""

from __future__ import annotations

import time
from typing import Any

import torch
from rich.console import Console

from socratic.distill_data.config import MKDTConfig
from socratic.engine.run import Run, RunFolder, StepProgress
from socratic.engine.runtime import peak_memory_mb


class StageRun(Run):
    """A stage of the pipeline: subclasses implement `stage_epoch` (the epoch's work -> metrics); every epoch's
    metrics get `epoch_time` (s) and `peak_memory_mb` (CUDA: allocated since the epoch began; CPU: the
    process's peak resident set so far)."""

    stage = ""

    def __init__(self, cfg: MKDTConfig, folder: RunFolder, *, epochs: int, device: torch.device,
                 console: Console | None = None, **kwargs: Any) -> None:
        super().__init__(folder, epochs=epochs, device=device, progress=cfg.runtime.progress,
                         tensorboard=cfg.runtime.tensorboard, console=console, **kwargs)
        self.cfg = cfg

    def stage_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        raise NotImplementedError

    def train_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        peak_memory_mb(self.device, reset=True)
        start = time.perf_counter()
        metrics = self.stage_epoch(epoch, steps)
        return {**metrics, "epoch_time": time.perf_counter() - start, "peak_memory_mb": peak_memory_mb(self.device)}

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        times = [m["epoch_time"] for m in history if "epoch_time" in m]
        memory = [m["peak_memory_mb"] for m in history if "peak_memory_mb" in m]
        return {"kind": f"mkdt_{self.stage}", "epochs": len(history), "stage_time": sum(times),
                "peak_memory_mb": max(memory, default=float("nan")), "wall_time_this_session": wall_time}


class ModelStageRun(StageRun):
    """A stage that trains one model with one optimiser (the SSL teacher, the evaluation's student): the two are
    its checkpoint state, and its summary carries the last epoch's linear-probe top-1s (`probe_top1_<p>pct`)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        last = history[-1] if history else {}
        probes = {k: v for k, v in last.items() if k.startswith("probe_top1_")}
        return {**super().summary(history, wall_time), **probes}
