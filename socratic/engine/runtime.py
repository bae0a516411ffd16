"""Device selection, mixed precision and seeding: the pieces that make a run fast and repeatable."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import resource
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else Apple MPS, else CPU; explicit names are checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"runtime.device: '{name}' is not a device (use auto, cpu, cuda, cuda:N or mps)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"runtime.device: '{name}' asked for CUDA but no CUDA device is available")
    return device


def resolve_precision(device: torch.device, precision: str) -> str:
    """`auto` -> bf16 where the hardware runs it natively (a CUDA GPU with bf16, a CPU with AVX-512-BF16 or AMX,
    an Arm CPU with BF16), else fp32; any other value is returned as it is. The answer depends on the machine, so
    it is what a run logs, never what a default is."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU/CUDA, fp16 autocast on CUDA, or nothing for fp32 (`auto`: `resolve_precision`)."""
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("runtime.precision: fp16 needs a CUDA device; use bf16 on CPU")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            f"runtime.precision: bf16 on a CPU without native bf16 (AVX-512-BF16 or AMX; this one: "
            f"{torch.backends.cpu.get_cpu_capability()}) is emulated and can be ~9x slower than fp32; "
            "runtime.precision: auto picks fp32 here",
            stacklevel=2,
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic instructions (x86 AVX-512-BF16 or AMX-BF16, Arm BF16), read from the
    CPU flags the kernel reports; False where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler, active only for fp16 on CUDA (bf16 has fp32's range and needs none)."""
    precision = resolve_precision(device, precision)
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")


def peak_memory_mb(device: torch.device, reset: bool = False) -> float:
    """Peak memory in MB: torch's allocations on CUDA (since the last reset; `reset` starts a new window), else
    the process's peak resident set size (it only grows)."""
    if device.type == "cuda":
        value = torch.cuda.max_memory_allocated(device) / 2**20
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return value
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally demand deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = True


def setup_run(seed: int, device: str = "auto", num_threads: int | None = None,
              deterministic: bool = False) -> torch.device:
    """The start of every run: seed everything, set torch's CPU threads if asked, pick the device."""
    seed_everything(seed, deterministic)
    if num_threads:
        torch.set_num_threads(num_threads)
    return select_device(device)


def rng_state() -> dict:
    """Every RNG state a resumed run needs, as tensors and plain data (loadable with weights_only)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_state = np.random.get_state()
    state["numpy"] = {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def num_threads(count: int | None) -> Iterator[None]:
    """Temporarily set torch's CPU thread count (None leaves it as it is)."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
