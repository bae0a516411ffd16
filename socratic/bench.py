"""Throughput of the pieces of a distillation step (teacher forward, student step, KD step, KD step with
Disagreement Augmentation) on synthetic data."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from socratic.augment import DisagreementAugmentation
from socratic.distillers import create_distiller
from socratic.context import TrainContext
from socratic.engine.runtime import autocast, grad_scaler, peak_memory_mb, resolve_precision, select_device
from socratic.engine.trainer import train_step
from socratic.models import count_flops, create_model


def expected_da_over_kd(student_flops: float, teacher_flops: float, steps: int = 1) -> float:
    """Expected cost of a KD step with Disagreement Augmentation (prob 1) over a plain KD step, from passes.

    Count a forward as F (F_S student, F_T teacher) and a backward as about one forward per gradient it
    produces (input gradients, weight gradients):
      KD step  = F_T (teacher forward, no graph) + F_S (student forward) + 2 F_S (student backward: input
                 and weight gradients)                                            = F_T + 3 F_S
      DA adds, per input step, F_S + F_T (both forwards, with a graph) + F_S + F_T (backward to the input
                 only: no weight gradients, teachers frozen)                     = 2 (F_S + F_T)
    so ratio = (F_T + 3 F_S + 2 steps (F_S + F_T)) / (F_T + 3 F_S). Element-wise work (BN, ReLU, the Adam
    update of the input) is ignored; the occasional after-step measurement (`after_every`) is off here.
    """
    kd = teacher_flops + 3.0 * student_flops
    return (kd + 2.0 * steps * (student_flops + teacher_flops)) / kd


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


def bench_pair(teacher: str, student: str, *, batch_size: int = 64, precision: str = "auto",
               channels_last: bool = False, steps: int = 10, warmup: int = 2, num_classes: int = 100,
               input_size: tuple[int, int, int] = (3, 32, 32), device: str = "auto") -> dict[str, Any]:
    """img/s of the teacher's forward, a plain student training step, a KD step and a KD step with
    Disagreement Augmentation (prob 1, the paper's one Adam step), and peak memory.

    `da_over_kd_cost` is kd_img_per_s / da_img_per_s (how many times slower DA makes a step) and
    `da_over_kd_expected` the ratio expected from the count of passes (`expected_da_over_kd`).
    """
    dev = select_device(device)
    precision = resolve_precision(dev, precision)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    teacher_model = create_model(teacher, num_classes=num_classes, in_channels=input_size[0])
    student_model = create_model(student, num_classes=num_classes, in_channels=input_size[0])
    flops_teacher, flops_student = count_flops(teacher_model, input_size), count_flops(student_model, input_size)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_size, generator=generator).to(dev, memory_format=memory_format)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(dev)

    def training_step(method: str, augmentation: Any = None) -> Callable[[], None]:
        distiller = create_distiller(method, student_model, [teacher_model] if method != "ce" else [])
        distiller = distiller.to(dev, memory_format=memory_format).train()
        optimizer = torch.optim.SGD(distiller.student.parameters(), lr=0.01, momentum=0.9)
        scaler = grad_scaler(dev, precision)

        def step() -> None:  # the trainer's own step
            train_step(distiller, x, y, TrainContext(), optimizer, scaler, precision=precision,
                       augmentation=augmentation)

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
    da = DisagreementAugmentation(prob=1.0, after_every=0)  # paper's step (1 fresh-Adam step), every batch
    for name, step in (("teacher_forward", teacher_forward), ("student_step", training_step("ce")),
                       ("kd_step", training_step("kd")), ("da_step", training_step("kd", da))):
        results[f"{name}_img_per_s"] = batch_size / time_steps(step, steps, warmup, dev)
    results["da_over_kd_cost"] = results["kd_step_img_per_s"] / results["da_step_img_per_s"]
    results["da_over_kd_expected"] = expected_da_over_kd(flops_student, flops_teacher, da.steps)
    results["peak_memory_mb"] = peak_memory_mb(dev)
    return results
