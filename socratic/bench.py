"""Throughput of the pieces of a distillation step (teacher forward, student step, KD step, KD step with
Disagreement Augmentation) on synthetic data, and how close each comes to the device's limit: the FLOPs each
step really runs (counted as it runs) against the measured rate of a plain matrix product."""

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
from socratic.models import count_call_flops, count_flops, create_model

STEPS = ("teacher_forward", "student_step", "kd_step", "da_step")


def expected_da_over_kd(student_flops: float, teacher_flops: float, steps: int = 1, select: float = 1.0) -> float:
    """Expected cost of a KD step with Disagreement Augmentation (prob 1) over a plain KD step, from passes.

    Count a forward as F (F_S student, F_T teacher) and a backward as about one forward per gradient it
    produces (input gradients, weight gradients):
      KD step  = F_T (teacher forward, no graph) + F_S (student forward) + 2 F_S (student backward: input
                 and weight gradients)                                            = F_T + 3 F_S
      DA adds, per input step, F_S + F_T (both forwards, with a graph) + F_S + F_T (backward to the input
                 only: no weight gradients, teachers frozen)                     = 2 (F_S + F_T)
    so ratio = (F_T + 3 F_S + 2 steps (F_S + F_T)) / (F_T + 3 F_S). Element-wise work (BN, ReLU, the Adam
    update of the input) is ignored; the occasional after-step measurement (`after_every`) is off here.
    Adaptive DA (select s < 1) adds the selection forward F_S + F_T, takes its steps on s of the batch,
    2 steps s (F_S + F_T), and saves the teacher forward of the loss on the other 1 - s: -(1 - s) F_T.
    """
    kd = teacher_flops + 3.0 * student_flops
    both = student_flops + teacher_flops
    if select >= 1.0:
        return (kd + 2.0 * steps * both) / kd
    return (kd + both + 2.0 * steps * select * both - (1.0 - select) * teacher_flops) / kd


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_gflop_per_s(device: torch.device, precision: str = "fp32", size: int | None = None, steps: int = 10,
                       warmup: int = 2) -> float:
    """The device's measured rate of a square matrix product (2 n^3 FLOPs) in the step's precision: the
    practical limit a convolution network's step can approach (n = 1024 on CPU, 4096 on an accelerator)."""
    size = size or (1024 if device.type == "cpu" else 4096)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(resolve_precision(device, precision), torch.float32)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    seconds = time_steps(lambda: torch.mm(a, b), steps, warmup, device)
    return 2.0 * size**3 / seconds / 1e9


def time_steps(step: Callable[[], Any], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of `step`, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def bench_pair(teacher: str, student: str, *, batch_size: int = 64, precision: str = "auto",
               channels_last: bool = False, steps: int = 10, warmup: int = 2, num_classes: int = 100,
               input_size: tuple[int, int, int] = (3, 32, 32), device: str = "auto", select: float = 1.0,
               headroom: bool = True) -> dict[str, Any]:
    """img/s of the teacher's forward, a plain student training step, a KD step and a KD step with
    Disagreement Augmentation (prob 1, the paper's one Adam step; `select` < 1: adaptive DA), and peak memory.

    `da_over_kd_cost` is kd_img_per_s / da_img_per_s (how many times slower DA makes a step) and
    `da_over_kd_expected` the ratio expected from the count of passes (`expected_da_over_kd`).
    With `headroom`: `matmul_gflop_per_s` (the device's measured matrix-product rate, `matmul_gflop_per_s`),
    per step `<step>_gflop_per_img` (its FLOPs per image, counted while one step runs: `count_call_flops`) and
    `<step>_of_matmul` (img/s x FLOPs per image / matmul rate: the fraction of that limit the step reaches),
    and `da_over_kd_flops` (the counted FLOPs of the DA step over the KD step's: the ratio DA costs at best).
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
    da = DisagreementAugmentation(prob=1.0, after_every=0, select=select)  # paper's step (1 Adam step), every batch
    if select < 1.0:
        results["da_select"] = select
    pieces = dict(zip(STEPS, (teacher_forward, training_step("ce"), training_step("kd"), training_step("kd", da))))
    for name, step in pieces.items():
        results[f"{name}_img_per_s"] = batch_size / time_steps(step, steps, warmup, dev)
    results["da_over_kd_cost"] = results["kd_step_img_per_s"] / results["da_step_img_per_s"]
    results["da_over_kd_expected"] = expected_da_over_kd(flops_student, flops_teacher, da.steps, select)
    if headroom:
        results.update(headroom_of(results, pieces, batch_size, dev, precision, steps=steps, warmup=warmup))
    results["peak_memory_mb"] = peak_memory_mb(dev)
    return results


def headroom_of(results: dict[str, Any], pieces: dict[str, Callable[[], Any]], batch_size: int,
                device: torch.device, precision: str, steps: int = 10, warmup: int = 2) -> dict[str, float]:
    """The matmul rate (timed over `steps` products after `warmup`), each step's counted GFLOP per image and the
    fraction of the matmul rate its measured img/s (`results["<step>_img_per_s"]`) reaches; `da_over_kd_flops`
    when both steps are there."""
    rate = matmul_gflop_per_s(device, precision, steps=max(steps, 1), warmup=warmup)
    out: dict[str, float] = {"matmul_gflop_per_s": rate}
    for name, step in pieces.items():
        gflop = count_call_flops(step) / batch_size / 1e9
        out[f"{name}_gflop_per_img"] = gflop
        out[f"{name}_of_matmul"] = results[f"{name}_img_per_s"] * gflop / rate
    if "kd_step" in pieces and "da_step" in pieces:
        out["da_over_kd_flops"] = out["da_step_gflop_per_img"] / out["kd_step_gflop_per_img"]
    return out
