"""torch.distributed for socratic: one process per device, started by `torchrun`.

`torchrun --nproc_per_node N -m socratic distill CONFIG` starts N processes with RANK, WORLD_SIZE and
LOCAL_RANK in their environment; `run_experiment` sees them (`session`), joins the process group (NCCL on
CUDA with device cuda:LOCAL_RANK, gloo on CPU), and the Trainer then

* trains on this rank's shard of each epoch (`TensorLoader(rank=..., world_size=...)`): `data.batch_size`
  is the per-process batch, the global batch is batch_size x world_size;
* wraps the trainable modules (student and extras, never the frozen teachers) in DistributedDataParallel,
  so gradients are averaged before each step; `runtime.sync_bn` converts their BatchNorm layers to
  SyncBatchNorm (CUDA only: torch refuses CPU tensors);
* keeps torch's global RNG identical on every rank (same seed, checked every epoch), so model init is the
  same everywhere and Disagreement Augmentation's coin flips agree; the per-rank randomness is the data
  shard and the loader's crop/flip draws (seeded with the rank);
* evaluates each rank's shard of the validation set and sums the counts over ranks (exact: the padding
  that makes shards equal is not counted);
* writes the run folder (metrics.jsonl, TensorBoard, checkpoints, summary) on rank 0 only; the others
  wait at a barrier at the end of each epoch. `--resume` loads last.pt on every rank.

A learned module that is updated outside the optimizer (e.g. an agent updated from its own rollouts)
must stay identical on all ranks: average it with `all_reduce_mean(module)` after each local update, or
update it on rank 0 and `broadcast_module(module)`. Both are no-ops in a single process.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one process to agree with."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from err


def env_info() -> DistInfo:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; a single process when they are absent."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}, "
                         f"LOCAL_RANK={local_rank}")
    return DistInfo(rank, world_size, local_rank)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def info() -> DistInfo:
    """Rank and size of the current process group (a single process when there is none)."""
    if is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), env_info().local_rank)
    return DistInfo()


def get_rank() -> int:
    return info().rank


def get_world_size() -> int:
    return info().world_size


def is_main_process() -> bool:
    """True on rank 0, and in a single process: the one that writes files and prints."""
    return info().is_main


def device_for_rank(name: str, local_rank: int) -> torch.device:
    """The device of a distributed process: `auto`/`cuda` -> cuda:LOCAL_RANK when CUDA is present, else CPU.

    An explicit `cuda:N` or `mps` is refused: under torchrun each process owns the GPU of its local rank.
    """
    if name in ("auto", "cuda"):
        if torch.cuda.is_available():
            if local_rank >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA "
                                 f"device(s): start at most that many processes per node (--nproc_per_node)")
            return torch.device("cuda", local_rank)
        if name == "cuda":
            raise ValueError("runtime.device: 'cuda' asked for CUDA but no CUDA device is available")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"runtime.device: '{name}' cannot be used under torchrun; use auto or cuda (each process "
                     f"takes cuda:LOCAL_RANK) or cpu")


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo otherwise (CPU)."""
    return "nccl" if device.type == "cuda" else "gloo"


_STORE: Any = None  # the rendezvous store (torchrun's, or the TCPStore at MASTER_ADDR:MASTER_PORT)
_SESSIONS = 0  # process groups made by `session` in this process (the same count on every rank)


def _session_store(env: DistInfo) -> Any:
    """The rendezvous store under a prefix of its own for each session.

    destroy_process_group resets torch's group counter, so a second process group in the same process
    (several runs in one torchrun job) would meet the first group's keys in the store and could connect to
    its closed sockets; a fresh prefix per session, and one store kept for the process, avoid both.
    """
    global _STORE, _SESSIONS
    if _STORE is None:
        _STORE, _, _ = next(dist.rendezvous("env://", env.rank, env.world_size))
    _SESSIONS += 1
    return dist.PrefixStore(f"socratic/session{_SESSIONS}/", _STORE)


@contextlib.contextmanager
def session(device_name: str = "auto") -> Iterator[tuple[DistInfo, torch.device | None]]:
    """Join the process group when torchrun started this process (WORLD_SIZE > 1).

    Yields (info, device): the device is cuda:LOCAL_RANK or cpu for a distributed process and None for a
    single process (the caller picks its device as usual). A process group made here is destroyed on exit;
    one that already existed (made by the caller) is used and left alone.
    """
    env = env_info()
    if is_initialized():
        current = info()
        yield current, (device_for_rank(device_name, current.local_rank) if current.enabled else None)
        return
    if not env.enabled:
        yield env, None
        return
    device = device_for_rank(device_name, env.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    kwargs: dict[str, Any] = {"backend": backend_for(device), "rank": env.rank, "world_size": env.world_size,
                              "store": _session_store(env)}
    if device.type == "cuda":
        kwargs["device_id"] = device
    try:
        dist.init_process_group(**kwargs)
    except TypeError:  # torch without device_id
        kwargs.pop("device_id", None)
        dist.init_process_group(**kwargs)
    try:
        yield info(), device
    except BaseException as err:
        # The traceback's finished frames hold the run's DDP wrapper, whose gloo/NCCL process group would then
        # be destroyed after destroy_process_group (this can hang): free them first; the traceback still prints.
        traceback.clear_frames(err.__traceback__)
        raise
    finally:
        gc.collect()
        cleanup()


def cleanup() -> None:
    """Destroy the default process group (if any)."""
    if is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ collectives
def _comm_device() -> torch.device:
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if info().enabled:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """`obj` of rank `src` on every rank (pickled; for small things: summaries, messages, metrics)."""
    if not info().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device())
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """The list of every rank's `obj`, on every rank (`[obj]` in a single process)."""
    world = info()
    if not world.enabled:
        return [obj]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_tensor(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """`tensor` reduced over ranks (sum, max, min or mean), returned as a new tensor on `tensor`'s device."""
    if not info().enabled:
        return tensor.clone()
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN, "mean": dist.ReduceOp.SUM}
    buf = tensor.detach().to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=ops[op])
    if op == "mean":
        buf = buf / info().world_size
    return buf.to(tensor.device)


def all_true(flag: bool) -> bool:
    """True when `flag` is true on every rank."""
    if not info().enabled:
        return bool(flag)
    return bool(all_reduce_tensor(torch.tensor([1 if flag else 0], dtype=torch.int32), "min").item())


@torch.no_grad()
def broadcast_tensor_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `tensor` with rank `src`'s value, in place (no-op in a single process)."""
    if info().enabled:
        buf = tensor.to(_comm_device(), copy=True)
        dist.broadcast(buf, src=src)
        tensor.copy_(buf)
    return tensor


def module_fingerprint(module: nn.Module) -> str:
    """A short hash of a module's parameters and buffers (equal on two ranks iff the bits are equal)."""
    digest = hashlib.sha256()
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [p.data for p in module.parameters()] + [b for b in module.buffers()]


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> nn.Module:
    """Copy rank `src`'s parameters and buffers into `module` on every rank (in place; no-op alone)."""
    if not info().enabled:
        return module
    device = _comm_device()
    for tensor in _tensors(module):
        buf = tensor.to(device, copy=True)
        dist.broadcast(buf, src=src)
        tensor.copy_(buf)
    return module


@torch.no_grad()
def all_reduce_mean(module: nn.Module) -> nn.Module:
    """Average `module`'s floating-point parameters and buffers over ranks, in place (no-op alone).

    Integer buffers (e.g. BatchNorm's num_batches_tracked) are taken from rank 0. Use it for a learned
    module updated outside the optimizer so every rank keeps the same copy::

        agent.update(local_history)                 # each rank learned from its own shard
        socratic.engine.distributed.all_reduce_mean(agent)
    """
    world = info()
    if not world.enabled:
        return module
    device = _comm_device()
    for tensor in _tensors(module):
        buf = tensor.to(device, copy=True)
        if tensor.is_floating_point() or tensor.is_complex():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf /= world.world_size
        else:
            dist.broadcast(buf, src=0)
        tensor.copy_(buf)
    return module


def rng_fingerprint() -> str:
    """A short hash of torch's global RNG state (CPU, and the current CUDA device's when present)."""
    digest = hashlib.sha256(torch.get_rng_state().numpy().tobytes())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        digest.update(torch.cuda.get_rng_state().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_rng_in_sync(where: str = "") -> None:
    """Raise when torch's global RNG differs between ranks.

    socratic keeps it identical on every rank: Disagreement Augmentation's coin flip per batch (and anything
    else drawn from the global RNG) must agree, and last.pt stores rank 0's RNG state for every rank.
    """
    states = gather_objects(rng_fingerprint())
    if len(set(states)) > 1:
        raise RuntimeError(
            f"torch's global RNG differs between ranks{' ' + where if where else ''} ({states}): something drew a "
            "different amount of random numbers on different ranks. Draw per-rank randomness from a private "
            "torch.Generator (as TensorLoader does) so the global stream, which DA's coin flips use, stays shared."
        )


def raise_if_any_failed(error: BaseException | None) -> None:
    """Agree on failure: when any rank failed, every rank raises (its own error, or one naming the rank).

    Call it after a step that can fail on bad input (building the data and models, preparing the run
    folder) so that no rank goes on to wait in a collective for a rank that has stopped.
    """
    world = info()
    if not world.enabled:
        if error is not None:
            raise error
        return
    messages = gather_objects(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(rank, msg) for rank, msg in enumerate(messages) if msg is not None]
    if failed:
        from socratic.config import ConfigError  # late import: the engine does not need the config package

        rank, msg = failed[0]
        raise ConfigError(f"rank {rank} failed: {msg}")


def run_on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and give its result to every rank; its exception is raised on every rank."""
    world = info()
    if not world.enabled:
        return fn()
    result, error = None, None
    if world.is_main:
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
            error = err
    raise_if_any_failed(error)
    return broadcast_object(result)


def load_on_all_ranks(path: str | Path, load: Callable[[Path], T]) -> T:
    """`load(path)` on every rank; ranks that cannot see the file (no shared file system) get rank 0's copy."""
    path = Path(path)
    if not info().enabled:
        return load(path)
    if all_true(path.is_file()):
        return load(path)
    return broadcast_object(load(path) if info().is_main else None)


# --------------------------------------------------------------------------------------- model wrapping
class _TrainStep(nn.Module):
    """The trainable part of a distiller as one module, for DistributedDataParallel.

    Registers only the trainable modules (student and extras) as children, so DDP broadcasts, watches
    and all-reduces those and never the frozen teachers; `forward(x, y)` is the distiller's forward_train.
    """

    def __init__(self, distiller: Any) -> None:
        super().__init__()
        self.trainable = nn.ModuleDict(distiller.trainable_modules())
        object.__setattr__(self, "_distiller", distiller)  # not a child: teachers stay outside DDP

    def forward(self, x: torch.Tensor, y: torch.Tensor, ctx: Any = None) -> Any:
        return self._distiller.forward_train(x, y, ctx)


def wrap_distiller(distiller: Any, device: torch.device, *, find_unused_parameters: bool = False
                   ) -> nn.parallel.DistributedDataParallel:
    """DDP around the distiller's trainable modules; call the result as `ddp(x, y)` -> forward_train's output.

    DDP broadcasts rank 0's parameters and buffers once here (so every rank starts from the same model),
    then averages gradients during each backward. Code that needs the model without a gradient sync
    (Disagreement Augmentation's input gradients, evaluation) uses `distiller.student` directly.
    """
    step = _TrainStep(distiller)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(step, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def convert_sync_batchnorm(distiller: Any) -> None:
    """Replace the BatchNorm layers of the student and extras (not the teachers) by SyncBatchNorm, in place.

    Parameters and buffers are the same tensors, so state dicts (and checkpoints) keep their keys.
    """
    distiller.student = nn.SyncBatchNorm.convert_sync_batchnorm(distiller.student)
    for module in distiller.extra_modules().values():
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        if converted is not module:  # the extra module is itself a BatchNorm layer: cannot be swapped in place
            raise ValueError("runtime.sync_bn: an extra module that is a bare BatchNorm layer cannot be converted")


def shard_valid_count(total: int, rank: int, world_size: int) -> int:
    """Real (not wrap-around padding) samples in `rank`'s contiguous shard of `total` (TensorLoader's layout)."""
    per_rank = -(-total // world_size)
    return max(0, min(per_rank, total - rank * per_rank))

