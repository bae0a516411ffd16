"""Throughput of the pieces of a distillation step (teacher forward, student step, KD step) on synthetic data."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from socratic.config.schema import MethodConfig
from socratic.distillers import create_distiller
from socratic.engine.runtime import autocast, grad_scaler, select_device
from socratic.models import create_model


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated memory on CUDA, else the process's peak resident set size (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def time_steps(step: Callable[[], Any], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of `step`, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def bench_pair(teacher: str, student: str, *, batch_size: int = 64, precision: str = "fp32",
               channels_last: bool = False, steps: int = 10, warmup: int = 2, num_classes: int = 100,
               input_size: tuple[int, int, int] = (3, 32, 32), device: str = "auto") -> dict[str, Any]:
    """img/s of the teacher's forward, a plain student training step and a KD step, and peak memory."""
    dev = select_device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    teacher_model = create_model(teacher, num_classes=num_classes, in_channels=input_size[0])
    student_model = create_model(student, num_classes=num_classes, in_channels=input_size[0])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_size, generator=generator).to(dev, memory_format=memory_format)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(dev)

    def training_step(method: str) -> Callable[[], None]:
        distiller = create_distiller(MethodConfig(name=method), student_model, [teacher_model] if method != "ce" else [])
        distiller = distiller.to(dev, memory_format=memory_format).train()
        optimizer = torch.optim.SGD(distiller.student.parameters(), lr=0.01, momentum=0.9)
        scaler = grad_scaler(dev, precision)

        def step() -> None:
            with autocast(dev, precision):
                _, losses = distiller.forward_train(x, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(sum(losses.values())).backward()
            scaler.step(optimizer)
            scaler.update()

        return step

    teacher_model = teacher_model.to(dev, memory_format=memory_format).eval()

    @torch.no_grad()
    def teacher_forward() -> None:
        with autocast(dev, precision):
            teacher_model(x)

    results: dict[str, Any] = {
        "teacher": teacher, "student": student, "batch_size": batch_size, "precision": precision,
        "channels_last": channels_last, "device": str(dev),
    }
    for name, step in (("teacher_forward", teacher_forward), ("student_step", training_step("ce")),
                       ("kd_step", training_step("kd"))):
        results[f"{name}_img_per_s"] = batch_size / time_steps(step, steps, warmup, dev)
    results["peak_memory_mb"] = peak_memory_mb(dev)
    return results
