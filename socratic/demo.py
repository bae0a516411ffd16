"""`make demo`: a teacher, a student from scratch and a KD student on Fashion-MNIST, then a table."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from socratic.config import config_from_dict
from socratic.experiment import run_experiment

TEACHER = "resnet20"
STUDENT = "resnet8"
# Sized for about a minute of training per run on a 2-core CPU without native bf16 (benchmarks/results/demo.md).
EPOCHS = 3
TRAIN_SUBSET = 8000


def demo_configs(output_dir: str, epochs: int, train_subset: float) -> list[dict]:
    """Plain-data configs of the demo's three runs (the same keys as a YAML config)."""
    common = {
        "output_dir": output_dir,
        "data": {"name": "fashion_mnist", "train_subset": train_subset, "batch_size": 128, "eval_batch_size": 500},
        "optim": {"epochs": epochs, "lr": 0.1, "schedule": "cosine", "weight_decay": 5e-4, "nesterov": True},
        "runtime": {"precision": "auto", "channels_last": True, "tensorboard": False, "eval_every": epochs},
    }
    teacher_ckpt = str(Path(output_dir) / "teacher" / "seed0" / "checkpoints" / "best.pt")
    return [
        {"name": "teacher", "student": {"name": TEACHER}, "method": {"name": "ce"}, **common},
        {"name": "student", "student": {"name": STUDENT}, "method": {"name": "ce"}, **common},
        {"name": "student_kd", "student": {"name": STUDENT},
         "teachers": [{"name": TEACHER, "checkpoint": teacher_ckpt}],
         "method": {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}, **common},
    ]


def run_demo(output_dir: str = "runs/demo", epochs: int | None = None, train_subset: float | None = None) -> list[dict]:
    """Run the three trainings in order (the KD run needs the teacher) and print their accuracy and time."""
    console = Console()
    if Path(output_dir).exists():
        shutil.rmtree(output_dir)
    rows = []
    for values in demo_configs(output_dir, epochs or EPOCHS, train_subset or TRAIN_SUBSET):
        config = config_from_dict(values)
        console.rule(f"{config.name}: {config.student.name} ({config.method.name})")
        start = time.perf_counter()
        summary = run_experiment(config)
        rows.append({"run": config.name, "model": config.student.name, "method": config.method.name,
                     "top1": summary["best_top1"], "wall_time": time.perf_counter() - start})
    table = Table("run", "model", "method", "test top-1 (%)", "wall time (s)",
                  title=f"Fashion-MNIST, {epochs or EPOCHS} epochs on {train_subset or TRAIN_SUBSET:g} training images")
    for row in rows:
        table.add_row(row["run"], row["model"], row["method"], f"{row['top1']:.2f}", f"{row['wall_time']:.0f}")
    console.print(table)
    return rows
