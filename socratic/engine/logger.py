"""Per-epoch metrics: one JSON line per epoch in `metrics.jsonl`, mirrored to TensorBoard."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All epochs of a `metrics.jsonl` (an empty list when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLogger:
    """Appends epoch metrics to `<run_dir>/metrics.jsonl` and TensorBoard events under `<run_dir>/tb`."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, start_epoch: int = 1) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is a core dependency
                warnings.warn("tensorboard is not installed: metrics go to metrics.jsonl only", stacklevel=2)
            else:
                self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=start_epoch)

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

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(metrics) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, metrics["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
