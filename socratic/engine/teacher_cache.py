"""The teacher-output cache: compute a frozen teacher's outputs on an epoch's batches once, replay them after.

A training epoch's batches are a pure function of (data, augmentation, seed, epoch, batch size, shard), and a
frozen teacher in eval mode is a pure function of its weights and the numerics it runs with. So the outputs a
method reads (`Distiller.teacher_cache_fields`: logits, the pooled embedding, a stage's feature map) are the same
in every run that shares those inputs: the methods and seeds of a table, the trials of a search, a resumed run.

Layout, under the cache folder (`teacher_cache.dir`, default `$SOCRATIC_CACHE/teacher_outputs`):

    <key>/key.json                       what the key was made of (for `socratic cache list`)
    <key>/e<epoch>.<field>/meta.json     one entry: a field of one teacher over one epoch, rows in batch order
    <key>/e<epoch>.<field>/<array>.bin   raw little-endian arrays, read memory-mapped (torch.from_file)

`<key>` hashes everything that decides the outputs (`stream_description` and `teacher_description`: the training
images' and labels' content, normalisation, augmentation options, seed, batch size, shard, the teacher's
checkpoint file hash, architecture, precision, memory format, device, torch version and thread count). An entry
is written into a hidden temporary folder and renamed into place when the epoch is complete, so a reader never
sees a partial entry, and concurrent writers of the same entry (two seeds of a table never are; two runs of one
config may be) each publish a complete copy, the first rename winning. Every entry also holds each batch's label
and an exact integer checksum of its input, checked on replay: a batch that differs (a key that missed
something) runs live with a warning instead of being served stale outputs.

Exact storage keeps the outputs' dtype, values and memory format, so a cached run is bit-identical to an uncached
one. `topk: k` keeps each sample's k largest logits (and the mean of the others, which fill the other classes):
smaller, and it changes the numbers (measured in benchmarks/results/performance.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from socratic.distillers.base import TeacherReplay

CACHE_VERSION = 1  # bump when the entry layout or the meaning of a field changes
SUBDIR = "teacher_outputs"
CACHE_ENV = "SOCRATIC_CACHE"
_TMP = ".tmp-"
_DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64,
                                                     torch.int16, torch.int32, torch.int64, torch.uint8)}


def cache_root(directory: str | Path | None = None) -> Path:
    """The cache folder: `directory`, else `$SOCRATIC_CACHE/teacher_outputs`, else `~/.cache/socratic/...`."""
    if directory is not None:
        return Path(directory).expanduser()
    env = os.environ.get(CACHE_ENV)
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "socratic") / SUBDIR


# ---------------------------------------------------------------------------------------------------- keys
def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content (a teacher checkpoint: its weights, not its name or date)."""
    h = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensor_sha256(*tensors: Tensor) -> str:
    """The SHA-256 of tensors' shapes, dtypes and bytes (the training images and labels)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}:{t.dtype}\n".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def stream_description(images: Tensor, labels: Tensor, mean: Sequence[float], std: Sequence[float],
                       augment: dict[str, Any], *, seed: int, batch_size: int, shuffle: bool, drop_last: bool,
                       rank: int, world_size: int, channels_last: bool) -> dict[str, Any]:
    """What decides a training loader's batches (`socratic.data.TensorLoader`) apart from the epoch."""
    return {"data": tensor_sha256(images, labels), "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "augment": augment, "seed": int(seed), "batch_size": int(batch_size), "shuffle": bool(shuffle),
            "drop_last": bool(drop_last), "rank": int(rank), "world_size": int(world_size),
            "channels_last": bool(channels_last)}


def numerics_description(device: torch.device, precision: str, deterministic: bool) -> dict[str, Any]:
    """What decides a fixed network's floating-point results on a fixed input: the resolved precision, the device
    and its kernels, torch's version and thread count, deterministic algorithms."""
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        hardware = torch.backends.cpu.get_cpu_capability()
    else:
        hardware = device.type
    return {"device": device.type, "hardware": hardware, "precision": precision, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "deterministic": bool(deterministic)}


def teacher_description(name: str, kwargs: dict[str, Any], checkpoint: str | Path) -> dict[str, Any]:
    """A teacher by its architecture and the hash of its checkpoint file."""
    return {"model": name, "kwargs": dict(kwargs), "checkpoint_sha256": file_sha256(checkpoint),
            "checkpoint": str(checkpoint)}


def make_key(description: dict[str, Any]) -> str:
    """24 hex digits of the SHA-256 of a description (the file name `checkpoint` is shown, not hashed)."""
    hashed = {k: v for k, v in description.items() if k != "teacher"}
    hashed["teacher"] = {k: v for k, v in description.get("teacher", {}).items() if k != "checkpoint"}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ----------------------------------------------------------------------------------------- field codecs
def disk_field(field: str, topk: int | None) -> str:
    """The entry name of a field: logits stored top-k are another entry than exact ones."""
    return f"{field}_top{topk}" if field == "logits" and topk else field


def encode(field: str, value: Tensor, topk: int | None) -> dict[str, Tensor]:
    """The arrays stored for one batch of a field (rows = samples)."""
    value = value.detach()
    if field != "logits" or not topk:
        return {"data": value}
    classes = value.shape[1]
    values, indices = value.topk(topk, dim=1)
    rest = (value.float().sum(dim=1, keepdim=True) - values.float().sum(dim=1, keepdim=True)) / (classes - topk)
    index_dtype = torch.int16 if classes <= 32767 else torch.int32
    return {"values": values, "indices": indices.to(index_dtype), "rest": rest}


def decode(field: str, arrays: dict[str, Tensor], meta: dict[str, Any], device: torch.device) -> Tensor:
    """The field's tensor for one batch from its stored rows, on `device`, in the recorded memory format."""
    if "data" in arrays:
        out = arrays["data"].to(device, copy=True)
        if meta.get("channels_last") and out.dim() == 4:
            out = out.contiguous(memory_format=torch.channels_last)
        return out
    values = arrays["values"].to(device)
    full = arrays["rest"].to(device, values.dtype).expand(values.shape[0], int(meta["classes"])).clone()
    return full.scatter_(1, arrays["indices"].to(device, torch.int64), values)


def input_checksum(x: Tensor) -> int:
    """An exact, order-free checksum of a float32 batch: the sum of its bit patterns as integers."""
    bits = x.detach().contiguous().view(torch.int32) if x.dtype == torch.float32 else x.detach().float().view(
        torch.int32)
    return int(bits.to(torch.int64).sum())


# ----------------------------------------------------------------------------------------------- entries
def _bytes(t: Tensor) -> memoryview:
    return memoryview(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


class _EntryWriter:
    """Streams one entry (a field of a teacher over an epoch) into a hidden folder; `publish` renames it."""

    def __init__(self, final: Path, meta: dict[str, Any]) -> None:
        self.final, self.meta = final, meta
        self.tmp = final.parent / f"{_TMP}{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir(parents=True)
        self.files: dict[str, Any] = {}
        self.arrays: dict[str, dict[str, Any]] = {}

    def append(self, arrays: dict[str, Tensor]) -> None:
        """Append rows to each named array (the same dtype and trailing shape every time)."""
        for name, t in arrays.items():
            spec = {"dtype": str(t.dtype).removeprefix("torch."), "shape": [0, *t.shape[1:]]}
            if name not in self.files:
                self.files[name] = open(self.tmp / f"{name}.bin", "wb")  # noqa: SIM115 - closed in publish/abort
                self.arrays[name] = spec
            elif self.arrays[name]["dtype"] != spec["dtype"] or self.arrays[name]["shape"][1:] != spec["shape"][1:]:
                raise ValueError(f"teacher cache: {self.final.name}/{name} changed from {self.arrays[name]} to {spec}")
            self.files[name].write(_bytes(t))
            self.arrays[name]["shape"][0] += t.shape[0]

    def publish(self) -> bool:
        """Close, fsync and rename into place; False (the entry is dropped) when another writer was first."""
        for file in self.files.values():
            file.flush()
            os.fsync(file.fileno())
            file.close()
        self.files = {}
        with open(self.tmp / "meta.json", "w") as file:
            json.dump({**self.meta, "arrays": self.arrays}, file)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.rename(self.tmp, self.final)  # atomic; fails when the entry exists (another writer published it)
            return True
        except OSError:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False

    def abort(self) -> None:
        for file in self.files.values():
            file.close()
        self.files = {}
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_entry(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
    """(meta, arrays memory-mapped) of a complete entry; None when missing, partial or not of this version."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("version") != CACHE_VERSION:
            return None
        arrays = {}
        for name, spec in meta["arrays"].items():
            dtype = _DTYPES[spec["dtype"]]
            numel = math.prod(spec["shape"])
            file = path / f"{name}.bin"
            if file.stat().st_size != numel * dtype.itemsize:
                return None
            arrays[name] = torch.from_file(str(file), shared=False, size=numel, dtype=dtype).view(spec["shape"])
        return meta, arrays
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None


# ------------------------------------------------------------------------------------------------- cache
@dataclass
class EpochStats:
    replayed: int = 0  # teacher-batches served from the cache
    live: int = 0  # teacher-batches computed (recorded or not)


class TeacherCache:
    """The cache of one run's teachers: `open_epoch(epoch, batches)` gives that epoch's session.

    stream / numerics: `stream_description` / `numerics_description` of the run; teachers: one
    `teacher_description` per teacher; fields: `Distiller.teacher_cache_fields()` (per teacher; an empty tuple
    leaves that teacher uncached); topk: None (exact) or the logits kept per sample.
    """

    def __init__(self, root: str | Path, stream: dict[str, Any], numerics: dict[str, Any],
                 teachers: Sequence[dict[str, Any]], fields: Sequence[Sequence[str]], topk: int | None = None) -> None:
        if len(fields) != len(teachers):
            raise ValueError(f"teacher cache: {len(fields)} field lists for {len(teachers)} teachers")
        self.root = Path(root)
        self.topk = topk
        self.fields = [tuple(f) for f in fields]
        # what a live teacher records: its method's fields, and its logits, which come with any forward and are
        # small, so a feature method's run also fills the cache for the logit methods of the same table
        self.record_fields = [tuple(dict.fromkeys([*f, "logits"])) if f else () for f in self.fields]
        self.descriptions = [{"version": CACHE_VERSION, "stream": stream, "numerics": numerics, "teacher": t}
                             for t in teachers]
        self.keys = [make_key(d) for d in self.descriptions]

    def lossy(self, field: str, value: Tensor) -> Tensor:
        """What storing and replaying does to a live output (top-k logits; other fields are exact), so a run that
        records trains on the same numbers as one that replays."""
        if field != "logits" or not self.topk:
            return value
        meta = {"classes": value.shape[1]}
        return decode(field, encode(field, value, self.topk), meta, value.device)

    def folder(self, index: int) -> Path:
        return self.root / self.keys[index]

    def entry_path(self, index: int, epoch: int, field: str) -> Path:
        return self.folder(index) / f"e{epoch}.{disk_field(field, self.topk)}"

    def write_key(self, index: int) -> None:
        path = self.folder(index) / "key.json"
        if path.exists():
            return
        tmp = path.with_name(f"{_TMP}key-{os.getpid()}-{uuid.uuid4().hex[:8]}.json")
        tmp.write_text(json.dumps(self.descriptions[index], indent=1, sort_keys=True, default=str))
        os.replace(tmp, path)

    def open_epoch(self, epoch: int, batches: int, device: torch.device) -> "EpochSession":
        return EpochSession(self, epoch, batches, device)


class EpochSession:
    """One epoch of the cache: teachers whose entries are all complete are replayed, the others recorded.

    Per step: `replay = session.begin(x, y)` before the training step (a `TeacherReplay` the distiller serves
    from and records into), `session.end(replay, y)` after it; `close(complete)` at the end of the epoch
    publishes what was recorded when every batch was seen, and drops it otherwise.
    """

    def __init__(self, cache: TeacherCache, epoch: int, batches: int, device: torch.device) -> None:
        self.cache, self.epoch, self.batches, self.device = cache, epoch, batches, device
        self.replay: dict[int, dict[str, tuple[dict[str, Any], dict[str, Tensor]]]] = {}
        self.checks: dict[str, Tensor] | None = None  # the replayed entries' batch checks (rows, checksum, labels)
        self.writers: dict[int, dict[str, _EntryWriter]] = {}
        self.stats = EpochStats()
        self.step = self.row = self.label_row = 0
        self.live = False  # a batch did not match the replayed entries: the rest of the epoch runs live
        for index, fields in enumerate(cache.fields):
            if not fields:
                continue
            entries = {f: read_entry(cache.entry_path(index, epoch, f))
                       for f in (*cache.record_fields[index], "batches")}
            complete = {f: e for f, e in entries.items() if e is not None and e[0]["batches"] == batches}
            if all(f in complete for f in (*fields, "batches")):
                self.replay[index] = {f: complete[f] for f in fields}
                if self.checks is None:
                    self.checks = complete["batches"][1]
                continue
            try:
                cache.folder(index).mkdir(parents=True, exist_ok=True)
                cache.write_key(index)
                self.writers[index] = {f: _EntryWriter(cache.entry_path(index, epoch, f), self._meta(f))
                                       for f in entries if f not in complete}
            except OSError as err:
                warnings.warn(f"teacher cache: cannot write under {cache.root} ({err}); teacher {index} runs live",
                              stacklevel=2)

    def _meta(self, field: str) -> dict[str, Any]:
        return {"version": CACHE_VERSION, "epoch": self.epoch, "field": field, "batches": self.batches,
                "topk": self.cache.topk if field == "logits" else None}

    def _matches(self, x: Tensor, y: Tensor) -> bool:
        checks = self.checks
        assert checks is not None
        if self.step >= checks["rows"].shape[0] or int(checks["rows"][self.step]) != x.shape[0]:
            return False
        labels = checks["labels"][self.label_row:self.label_row + y.shape[0]]
        return (int(checks["checksum"][self.step]) == input_checksum(x)
                and torch.equal(labels, y.detach().cpu().to(torch.int64)))

    def begin(self, x: Tensor, y: Tensor) -> TeacherReplay:
        """The replay of this step's batch `x` (labels `y`): cached outputs of the replayed teachers, and the
        fields to record of the others."""
        replayed: dict[int, dict[str, Tensor]] = {}
        if self.replay and not self.live:
            if self._matches(x, y):
                rows = slice(self.row, self.row + x.shape[0])
                for index, entries in self.replay.items():
                    replayed[index] = {f: decode(f, {n: a[rows] for n, a in arrays.items()}, meta, self.device)
                                       for f, (meta, arrays) in entries.items()}
            else:
                warnings.warn(f"teacher cache: batch {self.step} of epoch {self.epoch} is not the batch the entry "
                              f"under {self.cache.root} was recorded from; the rest of this epoch runs the teachers "
                              "live (`socratic cache clear` removes stale entries)", stacklevel=2)
                self.live = True
        if self.live:  # nothing more is replayed this epoch
            self.replay = {}
        wanted = {i: self.cache.record_fields[i] for i in self.writers}
        return TeacherReplay(x, replayed, wanted, lossy=self.cache.lossy if self.cache.topk else None)

    def end(self, replay: TeacherReplay, y: Tensor) -> None:
        """Record what the step computed (the distiller filled `replay.recorded`) and count the step."""
        x = replay.batch
        for index, writers in list(self.writers.items()):
            try:
                self._append(writers, replay.recorded[index], x, y)
            except OSError as err:  # a full or read-only disk: this teacher's entries are dropped, training goes on
                warnings.warn(f"teacher cache: cannot write under {self.cache.root} ({err}); teacher {index}'s "
                              f"outputs of epoch {self.epoch} are not cached", stacklevel=2)
                for writer in writers.values():
                    writer.abort()
                del self.writers[index]
        used = sum(1 for f in self.cache.fields if f)
        self.stats.replayed += len(replay.served)
        self.stats.live += used - len(replay.served)
        self.step += 1
        self.row += x.shape[0]
        self.label_row += y.shape[0]

    def _append(self, writers: dict[str, _EntryWriter], outputs: dict[str, Tensor], x: Tensor, y: Tensor) -> None:
        for field, writer in writers.items():
            if field == "batches":
                writer.append({"rows": torch.tensor([x.shape[0]]), "checksum": torch.tensor([input_checksum(x)]),
                               "labels": y.detach().to(torch.int64)})
                continue
            value = outputs[field]
            if value.dim() == 4 and not value.is_contiguous():
                writer.meta["channels_last"] = value.is_contiguous(memory_format=torch.channels_last)
            if field == "logits":
                writer.meta["classes"] = int(value.shape[1])
            writer.append(encode(field, value, self.cache.topk))

    def close(self, complete: bool) -> None:
        """Publish the recorded entries when the whole epoch was seen, else drop them."""
        publish = complete and self.step == self.batches
        for writers in self.writers.values():
            for writer in writers.values():
                try:
                    if publish:
                        writer.publish()
                    else:
                        writer.abort()
                except OSError as err:
                    warnings.warn(f"teacher cache: cannot publish {writer.final} ({err}); not cached", stacklevel=2)
                    writer.abort()
        self.writers = {}


# ------------------------------------------------------------------------------------------ list / clear
def _is_key(path: Path) -> bool:
    return path.is_dir() and len(path.name) == 24 and all(c in "0123456789abcdef" for c in path.name)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def list_cache(root: str | Path) -> list[dict[str, Any]]:
    """One row per key under `root`: key, teacher, checkpoint, epochs, fields, bytes, partial (entries being
    written, or left by a killed run)."""
    root = Path(root)
    rows = []
    for folder in sorted(p for p in root.iterdir() if _is_key(p)) if root.is_dir() else []:
        try:
            description = json.loads((folder / "key.json").read_text())
        except (OSError, ValueError):
            description = {}
        teacher = description.get("teacher", {})
        epochs, fields = set(), set()
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.name.startswith(_TMP) and entry.name.startswith("e"):
                epoch, _, field = entry.name[1:].partition(".")
                if epoch.isdigit() and field != "batches":
                    epochs.add(int(epoch))
                    fields.add(field)
        rows.append({"key": folder.name, "teacher": teacher.get("model", "?"),
                     "checkpoint": teacher.get("checkpoint", "?"),
                     "seed": description.get("stream", {}).get("seed"),
                     "precision": description.get("numerics", {}).get("precision"),
                     "epochs": sorted(epochs), "fields": sorted(fields), "bytes": _size(folder),
                     "partial": sum(1 for e in folder.iterdir() if e.name.startswith(_TMP))})
    return rows


def clear_cache(root: str | Path, keys: Sequence[str] = (), partial_only: bool = False,
                older_than_s: float = 0.0) -> int:
    """Remove the cache's keys (all, or those in `keys`) under `root`, or with `partial_only` only the
    half-written entries (of killed runs: those not modified for `older_than_s` seconds); only folders this
    module makes are touched. Returns the bytes freed."""
    root = Path(root)
    if not root.is_dir():
        return 0
    freed = 0
    now = time.time()
    for folder in (p for p in root.iterdir() if _is_key(p)):
        if keys and folder.name not in keys:
            continue
        targets = ([e for e in folder.iterdir() if e.name.startswith(_TMP) and now - e.stat().st_mtime >= older_than_s]
                   if partial_only else [folder])
        for target in targets:
            size = _size(target)
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
            freed += size
    return freed
