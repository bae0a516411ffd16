"""Per-epoch metrics: one JSON line per epoch in `metrics.jsonl`, mirrored to TensorBoard under grouped tags,
with per-step scalars and the run's hyperparameters.

TensorBoard's x axis is the global optimiser step for every tag (epoch metrics are written at the step that
ended their epoch, as Lightning does), so that `purge_step` on resume hides everything after the checkpoint.
The jsonl keys are unchanged; only the TensorBoard tags are grouped (`tensorboard_tag`).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

# metrics.jsonl key prefixes that are their own TensorBoard group: `train_loss` -> `train/loss`
TAG_GROUPS = ("train", "val", "eval", "test", "da", "collect", "time", "dpd")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All epochs of a `metrics.jsonl` (an empty list when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tensorboard_tag(key: str) -> str:
    """The grouped TensorBoard tag of a metrics.jsonl key: `train_kd` -> `train/kd`, `val_top1` -> `val/top1`,
    `da_perturbed` -> `da/perturbed`, `lr` -> `train/lr`, `best_top1` -> `val/best_top1`, the multi-teacher
    weights `w_logit_0` -> `teachers/w_logit_0`, anything else `run/<key>` (e.g. `run/peak_memory_mb`)."""
    head, _, rest = key.partition("_")
    if head in TAG_GROUPS and rest:
        return f"{head}/{rest}"
    if key == "lr":
        return "train/lr"
    if head == "best" and rest:
        return f"val/{key}"
    if key.startswith(("w_logit_", "w_feat_", "reward_")):
        return f"teachers/{key}"
    return f"run/{key}"


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as TensorBoard hyperparameters: dotted keys, values that are not a bool, number or string
    (None, lists) as their text."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flat_hparams(value, dotted))
        elif isinstance(value, (bool, int, float, str)):
            flat[dotted] = value
        else:
            flat[dotted] = json.dumps(value, default=str)
    return flat


class RunLogger:
    """Appends epoch metrics to `<run_dir>/metrics.jsonl` and TensorBoard events under `<run_dir>/tb`.

    `start_step` is the global step the run starts after (0 for a fresh run, the checkpoint's on resume):
    TensorBoard events of later steps, written by the run that was interrupted, are purged.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, start_step: int = 0) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is a core dependency
                warnings.warn("tensorboard is not installed: metrics go to metrics.jsonl only", stacklevel=2)
            else:
                purge = start_step + 1 if start_step else None  # hide what the interrupted run wrote later
                self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge)

    def truncate_after(self, epoch: int) -> None:
        """Drop lines of epochs after `epoch` (a run killed between logging and checkpointing), and a last line
        that a kill or a full disk cut short."""
        lines = [line for line in (self.path.read_text().splitlines() if self.path.is_file() else []) if line.strip()]
        kept = []
        for number, line in enumerate(lines):
            try:
                metrics = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines) - 1:
                    break  # the write of the last line was interrupted
                raise
            if metrics["epoch"] <= epoch:
                kept.append(metrics)
        self.path.write_text("".join(json.dumps(m) + "\n" for m in kept))

    def log_hparams(self, config: dict[str, Any], metric_keys: list[str]) -> None:
        """The run's config as TensorBoard hyperparameters (HPARAMS tab), with the metrics to compare runs by."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        metrics = {tensorboard_tag(k): math.nan for k in metric_keys}
        experiment, session_start, _ = hparams(flat_hparams(config), metrics)
        for summary in (experiment, session_start):
            self.writer.file_writer.add_summary(summary)

    def log_step(self, scalars: dict[str, float], global_step: int) -> None:
        """Per-step scalars (already tagged, e.g. `train/step_loss`) at `global_step`."""
        if self.writer is not None:
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, global_step)

    def log_epoch(self, metrics: dict[str, Any], global_step: int | None = None) -> None:
        """One line of metrics.jsonl; in TensorBoard every number under its `tensorboard_tag`, at `global_step`
        (default: the epoch), plus `run/epoch`."""
        with self.path.open("a") as file:
            file.write(json.dumps(metrics) + "\n")
        if self.writer is not None:
            step = metrics["epoch"] if global_step is None else global_step
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(tensorboard_tag(key), value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
