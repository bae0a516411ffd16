"""Device selection, mixed precision and seeding: the pieces that make a run fast and repeatable."""

from __future__ import annotations

import contextlib
import os
import random
import resource
import sys
import warnings
from collections.abc import Iterator

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


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU/CUDA, fp16 autocast on CUDA, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("runtime.precision: fp16 needs a CUDA device; use bf16 on CPU")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        warnings.warn(
            f"runtime.precision: bf16 on a CPU without AVX-512 ({torch.backends.cpu.get_cpu_capability()}) is "
            "emulated and can be ~9x slower than fp32; set runtime.precision: fp32 on this machine",
            stacklevel=2,
        )
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU's kernels get native bf16 arithmetic (x86 AVX-512 builds, Arm SVE), not an emulation."""
    return torch.backends.cpu.get_cpu_capability() not in {"DEFAULT", "NO AVX", "AVX2"}


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler, active only for fp16 on CUDA (bf16 has fp32's range and needs none)."""
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
