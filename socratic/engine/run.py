"""The run skeleton: the one run-folder helper and the one epoch loop that every kind of run uses.

Classification training (`socratic.engine.trainer.Trainer`), RL policy distillation
(`socratic.rl.distill.PolicyDistillationRun`) and the DQN runs are kinds of `Run`, as Stable-Baselines3's
algorithms fill in `BaseAlgorithm`: the kind supplies its epoch, its evaluation, its extra state and its
summary; the skeleton owns everything else.

API
---
``run_dir_for(output_dir, name, seed) -> Path``
    ``<output_dir>/<name>/seed<seed>``: the only place that spells a run folder's path.
``check_output_writable(output_dir)``
    Call it before loading any data: an output folder that cannot be written is an `OutputNotWritableError`.
``RunFolder(path, config, *, resume=False, overwrite=False, accept_config_changes=False, defaults=None,
            ignore=NON_NUMERIC_KEYS, read_saved=None)``
    The folder of one run. ``open()`` (or ``with folder:``) takes an exclusive lock on it for the whole run
    (``fcntl.flock`` on ``<output_dir>/<name>/.seed<seed>.lock``, which holds the PID; the kernel drops the
    lock when the process dies, so a lock file left by a killed run is simply taken over) -- a second writer
    (fresh, ``--resume`` or ``--overwrite``) gets a `RunLockedError` naming the PID. Then, under the lock:
    a fresh run (no ``config.yaml``) or ``overwrite`` builds the folder beside it and renames it into place
    (atomic: a run folder always has its ``config.yaml``); ``resume`` needs ``checkpoints/last.pt`` and the
    same config as the saved one for every key that affects numerics (all but `ignore`; a changed key is
    named as ``key: old -> new``; `read_saved` brings a saved config of an older layout into today's) unless
    ``accept_config_changes``, which rewrites ``config.yaml`` and appends the change to ``config_changes.jsonl``;
    orphaned ``.*.tmp`` files of an interrupted checkpoint write are removed. ``close()`` releases the lock.
    ``check()`` makes the same checks without the lock or any write: call it before loading data to fail fast.
    Files: ``config_path``, ``metrics_path`` (+ ``tb/``), ``last_path``, ``best_path``, ``summary_path``;
    ``save_checkpoint(state, "last" | "best")`` (atomic; a full disk is a `DiskFullError` naming the
    checkpoint to resume from), ``load_checkpoint("last" | "best", map_location)`` (``weights_only``),
    ``write_json(name, data)`` (atomic), ``remove()``.
``Run(folder, *, epochs, device, progress=True, tensorboard=True, console=None, step_callbacks=(),
      epoch_callbacks=())``
    ``fit() -> summary``: opens the folder (rank 0 only under torchrun), loads ``last.pt`` on ``--resume``
    (every rank), then for each remaining epoch: ``train_epoch`` -> ``evaluate`` -> best.pt when
    ``metrics[score_key]`` beats the best so far -> one line of ``metrics.jsonl`` (+ TensorBoard) ->
    ``last.pt`` -> ``epoch_line`` printed -> epoch callbacks ``(epoch, metrics)`` (they may raise to stop the
    run, e.g. optuna.TrialPruned; the folder keeps the epochs done). At the end ``summary(history,
    wall_time)`` goes to ``summary.json``. TensorBoard (``tb/``) gets every epoch metric under a grouped tag
    (``train/…``, ``val/…``, ``da/…``; `engine.logger.tensorboard_tag`), ``train/step_loss`` after each step
    and the config as hyperparameters, all on the global-step axis (``global_step`` is kept in ``last.pt``).
    A rich progress bar (epochs and steps, ETA, running loss) is shown when ``progress``. A `NonFiniteLossError`
    raised by the kind is re-raised with the last good checkpoint named (or, when there is none, the empty run
    folder removed).
    ``last.pt`` holds the kind's ``state_dict()`` plus the skeleton's ``epoch``, ``rng``
    (`engine.runtime.rng_state`: torch, CUDA, NumPy's and Python's global generators), ``best`` and
    ``resolved`` (`Run.resolved()`: settings as this machine resolved them -- the device type, and for
    classification the precision `auto` became; a resume that resolves them differently is refused like a
    config change).

A kind of run overrides:

* ``train_epoch(epoch, steps: StepProgress) -> metrics`` (required): one epoch; call
  ``steps.start(total, unit)`` once the number of steps is known and ``steps.step(loss, count)`` after each
  optimiser step (that advances the bar and runs the step callbacks ``(epoch, step)``, which may raise);
  ``steps.advance(count)`` moves the bar without a step (a collection phase started with its own ``start``).
* ``evaluate(epoch, metrics) -> metrics | None``: the evaluation of this epoch (None: not evaluated).
* ``state_dict() -> dict`` / ``load_state_dict(state)``: everything else a resume needs (weights, optimiser,
  private generators -- `generator_state` / `set_generator_state` for NumPy ones, counters); tensors and
  plain data only (``last.pt`` loads with ``weights_only=True``). ``load_state_dict`` gets the whole
  ``last.pt`` (``state["epoch"]`` is the epoch it ended); the skeleton restores the global RNGs after it.
* ``best_state(epoch, metrics) -> dict``: what ``best.pt`` holds (default: ``state_dict()``).
* ``summary(history, wall_time) -> dict``: ``summary.json`` (default: name the best epoch).
* ``epoch_line(metrics) -> str | None``: the line printed after each epoch (None: nothing).
* ``resolved() -> dict``: numerics settings as resolved on this machine (default: the device type); add any
  ``auto`` the kind resolves.
* class attributes ``score_key`` (the metric best.pt is chosen by, higher is better; None: no best.pt) and
  ``best_key`` (the metric that records the best score so far).

Under torchrun every rank runs ``fit``; only rank 0 (``self.is_main``) writes files; a kind that gathers
metrics over ranks does it in its own ``train_epoch`` / ``evaluate``.

Example (tests/test_run.py has it running)::

    class Regression(Run):
        score_key, best_key = "val_score", "best_val_score"

        def train_epoch(self, epoch, steps):
            steps.start(len(self.batches), unit="sample")
            for x, y in self.batches:
                loss = ...  # forward, backward, optimiser step
                steps.step(loss=float(loss), count=len(x))
            return {"train_loss": ...}

        def evaluate(self, epoch, metrics):
            return {"val_score": ...}

        def state_dict(self):
            return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

        def load_state_dict(self, state):
            self.net.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])

    check_output_writable(cfg.output_dir)
    folder = RunFolder(run_dir_for(cfg.output_dir, cfg.name, cfg.seed), config_as_dict, resume=resume,
                       overwrite=overwrite)
    folder.check()  # before loading data: busy, existing or changed folders fail at once
    summary = Regression(folder, epochs=cfg.epochs, device=device).fit()
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from socratic.config import ConfigError
from socratic.engine import distributed
from socratic.engine.checkpoint import load_checkpoint, save_checkpoint
from socratic.engine.logger import RunLogger, read_metrics
from socratic.engine.runtime import rng_state, set_rng_state

StepCallback = Callable[[int, int], None]  # (epoch, step) after each optimiser step; may raise to stop the run
EpochCallback = Callable[[int, dict[str, Any]], None]  # (epoch, metrics) after last.pt is written; may raise

# Config keys that do not change a run's numbers: they may change on --resume. Everything else (including
# runtime.precision, runtime.channels_last, runtime.deterministic) must match the saved config.
# runtime.device is compared by the device *type* the run used (kept in last.pt), not by its spelling.
NON_NUMERIC_KEYS: tuple[str, ...] = (
    "output_dir", "runtime.device", "runtime.num_threads", "runtime.progress", "runtime.tensorboard",
    "runtime.eval_every", "runtime.plot", "runtime.find_unused_parameters", "data.cache_dir", "data.download",
    "search", "teacher_cache",  # the cache's effect on the numbers (top-k or exact) is compared as resolved()
)

_MISSING = "(absent)"


# ------------------------------------------------------------------------------------------------ errors
class NonFiniteLossError(FloatingPointError):
    """A NaN/inf loss; the last good checkpoint on disk is kept (the CLI exits 1)."""


class RunFolderError(ConfigError):
    """A run folder that cannot be used as asked. A `ConfigError`, so every CLI maps it to exit code 2."""


class RunLockedError(RunFolderError):
    """Another process holds the run folder's lock."""


class OutputNotWritableError(RunFolderError):
    """`output_dir` cannot be written (checked before any data is loaded)."""


class DiskFullError(RunFolderError):
    """No space left on the device while writing the run folder; the previous checkpoint is intact."""


# ------------------------------------------------------------------------------------------------- paths
def run_dir_for(output_dir: str | Path, name: str, seed: int) -> Path:
    """`<output_dir>/<name>/seed<seed>`: where a run lives."""
    return Path(output_dir) / name / f"seed{seed}"


def check_output_writable(output_dir: str | Path) -> None:
    """Raise `OutputNotWritableError` unless files can be created in `output_dir` (or where it would be made).

    Creates nothing that stays: a temporary file is made and removed in the nearest folder that exists.
    """
    path = Path(output_dir).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputNotWritableError(f"output_dir {output_dir}: {existing} is a file, not a folder; "
                                     "set output_dir to a folder you can write")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".socratic-write-test."):
            pass
    except OSError as err:
        raise OutputNotWritableError(
            f"output_dir {output_dir} is not writable ({existing}: {err.strerror or err}); "
            "set output_dir to a folder you can write") from err


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` (an OSError, or torch's RuntimeError around one) means the device is full."""
    for cause in (err, err.__cause__, err.__context__):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
    text = str(err).lower()
    return "no space left" in text or "file write failed" in text or "disk quota" in text


def generator_state(rng: np.random.Generator) -> dict[str, Any]:
    """A NumPy Generator's state as plain data (loadable with weights_only)."""
    return rng.bit_generator.state


def set_generator_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(values, dict):
        return {prefix: values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted))
        else:
            flat[dotted] = value
    return flat


def config_changes(saved: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any] | None = None,
                   ignore: Iterable[str] = NON_NUMERIC_KEYS) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) for every key that differs, except `ignore`d keys (and keys
    below them). A key the saved config lacks counts with its value in `defaults` (a section added later)."""
    ignored = tuple(ignore)
    old, new, base = _flatten(saved), _flatten(current), _flatten(defaults or {})
    changes = []
    for key in sorted(set(old) | set(new)):
        if any(key == i or key.startswith(i + ".") for i in ignored):
            continue
        before = old.get(key, base.get(key, _MISSING))
        after = new.get(key, _MISSING)
        if before != after:
            changes.append((key, before, after))
    return changes


def format_changes(changes: Iterable[tuple[str, Any, Any]]) -> str:
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)


# ------------------------------------------------------------------------------------------------ the lock
class _FolderLock:
    """An exclusive `flock` on a lock file holding the holder's PID (released on close or process exit)."""

    def __init__(self, path: Path, folder: Path) -> None:
        self.path, self.folder = path, folder
        self.fd: int | None = None

    def check_free(self) -> None:
        """Raise `RunLockedError` if another holder has the lock; writes nothing (the lock is not kept)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunLockedError(self._busy_message(os.pread(fd, 32, 0).decode(errors="replace").strip())) from None
        finally:
            os.close(fd)  # closing drops the probe's lock

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                raise RunLockedError(self._busy_message(holder)) from None
            try:  # the previous holder may have unlinked the file between our open and our flock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def _busy_message(self, holder: str) -> str:
        alive = False
        if holder.isdigit():
            try:
                os.kill(int(holder), 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        who = f"process {holder}" if alive else (
            f"a child of process {holder} (which is no longer running; stop its leftover processes)"
            if holder else "another process")
        return (f"run folder {self.folder} is in use by {who} (lock {self.path}): one run folder has one "
                "writer; wait for that run to end, or stop it, before --resume or --overwrite")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still holding it: a waiting opener re-checks the inode
        os.close(self.fd)
        self.fd = None


# ----------------------------------------------------------------------------------------------- the folder
class RunFolder:
    """`<output_dir>/<name>/seed<seed>/`: config.yaml, metrics.jsonl, tb/, checkpoints/{last,best}.pt, summary.json.

    `config` is the resolved config as plain data; `defaults` the config of a default run (a key that a saved
    config lacks counts with its default); `ignore` the keys that may change on resume (see
    `NON_NUMERIC_KEYS`); `read_saved(saved) -> dict` the saved config.yaml in today's layout (a migration;
    default: as saved). See the module docstring for what `open()` does.
    """

    def __init__(self, path: str | Path, config: dict[str, Any], *, resume: bool = False, overwrite: bool = False,
                 accept_config_changes: bool = False, defaults: dict[str, Any] | None = None,
                 ignore: Iterable[str] = NON_NUMERIC_KEYS,
                 read_saved: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        if resume and overwrite:
            raise RunFolderError("--resume and --overwrite exclude each other: continue the run or replace it")
        self.path = Path(path)
        self.config = config
        self.resume, self.overwrite, self.accept_config_changes = resume, overwrite, accept_config_changes
        self.defaults = defaults
        self.ignore = tuple(ignore)
        self.read_saved = read_saved
        self.changes: list[tuple[str, Any, Any]] = []  # accepted config changes of this resume
        self._lock = _FolderLock(self.path.parent / f".{self.path.name}.lock", self.path)
        self.created = False  # whether open() made the folder (a NaN before any checkpoint removes it again)

    # paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_path(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def is_open(self) -> bool:
        return self._lock.fd is not None

    # life cycle
    def check(self) -> None:
        """The checks of `open()` without taking the lock or writing anything: call it before loading data,
        so that a busy folder, an existing run or a changed config fails at once (`open()` checks again)."""
        self._lock.check_free()
        self._validate()

    def open(self) -> RunFolder:
        """Lock the folder, then create it (fresh / overwrite) or check it (resume); see the module docstring."""
        if self.is_open:
            return self
        self._lock.acquire()
        try:
            self._remove_orphans()
            self.changes = self._validate()
            if not self.resume:
                self._create()
        except BaseException:
            self._lock.release()
            raise
        return self

    def close(self) -> None:
        """Release the lock (idempotent)."""
        self._lock.release()

    def __enter__(self) -> RunFolder:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _validate(self) -> list[tuple[str, Any, Any]]:
        """Raise unless the folder can be used as asked; on resume, return the (accepted) config changes."""
        if not self.resume:
            if self.config_path.exists() and not self.overwrite:
                raise RunFolderError(f"run folder {self.path} exists: pass --resume to continue it or --overwrite "
                                     "to replace it")
            return []
        if not self.last_path.exists():
            raise RunFolderError(f"--resume: no checkpoint to resume at {self.last_path}")
        if not self.config_path.is_file():
            raise RunFolderError(f"--resume: {self.path} has no config.yaml, so it is not a run folder")
        saved = yaml.safe_load(self.config_path.read_text()) or {}
        if self.read_saved is not None:
            saved = self.read_saved(saved)
        changes = config_changes(saved, self.config, self.defaults, self.ignore)
        if changes and not self.accept_config_changes:
            raise self._changed_error(changes)
        return changes

    def _create(self) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
        staging = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".new"))
        try:
            (staging / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
            os.rename(staging, self.path)
        except BaseException as err:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(err, OSError) and is_disk_full(err):
                raise DiskFullError(f"no space left on the device while creating the run folder {self.path}; "
                                    "free space and run again") from err
            raise
        self.created = True

    def _changed_error(self, changes: list[tuple[str, Any, Any]]) -> RunFolderError:
        return RunFolderError(
            f"cannot resume {self.path}: the config differs from the saved one in {format_changes(changes)}. "
            "These keys change the run's numbers, so the resumed run would not match an uninterrupted one: "
            "resume with the saved values, start a new run (another name, or --overwrite), or pass "
            "--accept-config-changes to continue with the change recorded in config_changes.jsonl")

    def accept(self, changes: list[tuple[str, Any, Any]]) -> None:
        """Refuse `changes` found by the run (e.g. the device type in last.pt), or with `accept_config_changes`
        keep them for `record_changes`."""
        if not self.accept_config_changes:
            raise self._changed_error(changes)
        self.changes.extend(changes)

    def record_changes(self, epoch: int) -> None:
        """Write the accepted changes to config_changes.jsonl and the new config to config.yaml."""
        if not self.changes:
            return
        record = {"resumed_after_epoch": epoch, "time": datetime.datetime.now(datetime.UTC).isoformat(),
                  "pid": os.getpid(), "changes": [{"key": k, "old": o, "new": n} for k, o, n in self.changes]}
        with (self.path / "config_changes.jsonl").open("a") as file:
            file.write(json.dumps(record, default=str) + "\n")
        self._write_text(self.config_path, yaml.safe_dump(self.config, sort_keys=False))

    def _remove_orphans(self) -> None:
        """Temporary files of a write that was interrupted (`.last.pt.<random>.tmp`), and half-made folders."""
        for folder in (self.path, self.checkpoint_dir):
            if folder.is_dir():
                for orphan in folder.glob(".*.tmp"):
                    orphan.unlink(missing_ok=True)
        if self.path.parent.is_dir():
            for staging in self.path.parent.glob(f".{self.path.name}.*.new"):
                shutil.rmtree(staging, ignore_errors=True)

    def remove(self) -> None:
        """Delete the run folder (and `<output_dir>/<name>` if that leaves it empty)."""
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            leftovers = [p for p in self.path.parent.iterdir() if p != self._lock.path]
            if not leftovers:
                self._lock.release()
                self.path.parent.rmdir()

    # files
    def save_checkpoint(self, state: dict[str, Any], which: str = "last", *, resume_hint: str = "") -> None:
        """Atomically write `checkpoints/<which>.pt`; a full disk is a `DiskFullError` (`resume_hint` names
        the checkpoint that is still intact)."""
        path = self.checkpoint_dir / f"{which}.pt"
        try:
            save_checkpoint(state, path)
        except (OSError, RuntimeError) as err:
            if not is_disk_full(err):
                raise
            raise DiskFullError(f"no space left on the device while writing {path}; {resume_hint}") from err

    def load_checkpoint(self, which: str = "last", map_location: str | torch.device = "cpu") -> dict[str, Any]:
        return load_checkpoint(self.checkpoint_dir / f"{which}.pt", map_location=map_location)

    def write_json(self, name: str, data: Any) -> Path:
        """Atomically write `<run>/<name>` as indented JSON."""
        path = self.path / name
        self._write_text(path, json.dumps(data, indent=2) + "\n")
        return path

    @staticmethod
    def _write_text(path: Path, text: str) -> None:
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as file:
                file.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# -------------------------------------------------------------------------------------------- the progress
class StepProgress:
    """The steps of one epoch: a bar with speed, running loss and ETA; `step()` runs the step callbacks."""

    def __init__(self, progress: Progress, epoch: int, epochs: int, callbacks: list[StepCallback],
                 on_step: Callable[[float | None], None] | None = None) -> None:
        self.progress, self.epoch, self.epochs, self.callbacks = progress, epoch, epochs, callbacks
        self.on_step = on_step  # the skeleton's per-step logging (TensorBoard), before the callbacks
        self.task: TaskID | None = None
        self.steps = 0
        self.unit = "step"
        self._loss_sum = 0.0
        self._loss_count = 0
        self._items = 0
        self._start = time.perf_counter()

    def start(self, total: int | None, unit: str = "step", description: str | None = None) -> None:
        """(Re)start the bar once the epoch's number of steps is known; `unit` names the items counted."""
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.unit = unit
        self._items, self._start = 0, time.perf_counter()
        self.task = self.progress.add_task(description or f"epoch {self.epoch}/{self.epochs}", total=total,
                                           speed="", loss="")

    def advance(self, count: int) -> None:
        """Move the bar by `count` items without a step (e.g. states collected before the updates)."""
        if self.task is None:
            self.start(None)
        self._items += count
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        self.progress.update(self.task, advance=count, speed=f"{self._items / elapsed:,.0f} {self.unit}/s")

    def step(self, loss: float | None = None, count: int = 0) -> None:
        """After one optimiser step: advance the bar (`count` items for the speed), then the step callbacks."""
        if self.task is None:
            self.start(None)
        if loss is not None and math.isfinite(loss):
            self._loss_sum += loss
            self._loss_count += 1
        self._items += count
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        speed = f"{self._items / elapsed:,.0f} {self.unit}/s" if count else ""
        running = f"loss {self._loss_sum / self._loss_count:.4g}" if self._loss_count else ""
        self.progress.update(self.task, advance=1, speed=speed, loss=running)
        step, self.steps = self.steps, self.steps + 1
        if self.on_step is not None:
            self.on_step(loss)
        for callback in self.callbacks:
            callback(self.epoch, step)

    def close(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


# ------------------------------------------------------------------------------------------------ the run
class Run:
    """The epoch loop of every kind of run (see the module docstring for what a kind overrides)."""

    score_key: str | None = None  # metric that picks best.pt (higher is better); None: no best.pt
    best_key: str = "best_score"  # metric that records the best score so far

    def __init__(self, folder: RunFolder, *, epochs: int, device: torch.device | str = "cpu", progress: bool = True,
                 tensorboard: bool = True, console: Console | None = None,
                 step_callbacks: Iterable[StepCallback] = (), epoch_callbacks: Iterable[EpochCallback] = ()) -> None:
        self.folder = folder
        self.epochs = int(epochs)
        self.device = torch.device(device)
        self.show_progress, self.tensorboard = progress, tensorboard
        self.console = console or Console(stderr=True)
        self.step_callbacks = list(step_callbacks)
        self.epoch_callbacks = list(epoch_callbacks)
        self.dist = distributed.info()
        self.start_epoch = 1
        self.best_score = -math.inf
        self.best_epoch: int | None = None
        self.saved_epoch: int | None = None  # epoch of the last.pt on disk (None: none yet)
        self.global_step = 0  # optimiser steps so far (StepProgress.step calls), TensorBoard's x axis
        self._logger: RunLogger | None = None

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def run_dir(self) -> Path:
        return self.folder.path

    # ----------------------------------------------------------------------------- hooks of a kind of run
    def train_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        raise NotImplementedError

    def evaluate(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any] | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def best_state(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return self.state_dict()

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        return {"epochs": len(history), "best_epoch": self.best_epoch, self.best_key: self.best_score,
                "wall_time_this_session": wall_time}

    def epoch_line(self, metrics: dict[str, Any]) -> str | None:
        return None

    def resolved(self) -> dict[str, Any]:
        """Numerics settings as this machine resolves them, kept in last.pt and compared on resume."""
        return {"runtime.device (device type)": self.device.type}

    # ---------------------------------------------------------------------------------------- the skeleton
    def _checkpoint(self, epoch: int) -> dict[str, Any]:
        state = self.state_dict()
        state.update(epoch=epoch, rng=rng_state(), resolved=self.resolved(), global_step=self.global_step,
                     best={"score": self.best_score, "epoch": self.best_epoch})
        return state

    def _resume(self) -> None:
        state = distributed.load_on_all_ranks(self.folder.last_path,
                                              lambda path: load_checkpoint(path, map_location=self.device))
        saved, now = state.get("resolved", {}), self.resolved()
        changed = [(key, saved[key], value) for key, value in now.items() if key in saved and saved[key] != value]
        if changed:
            self.folder.accept(changed)
        self.load_state_dict(state)
        best = state.get("best") or {"score": state.get("best_top1", -math.inf), "epoch": None}  # before run.py
        self.best_score, self.best_epoch = float(best["score"]), best["epoch"]
        set_rng_state(state["rng"])
        self.start_epoch = int(state["epoch"]) + 1
        self.saved_epoch = int(state["epoch"])
        self.global_step = int(state.get("global_step", 0))  # 0: a last.pt from before per-step logging
        if self.is_main:
            self.folder.record_changes(self.saved_epoch)

    def _resume_hint(self) -> str:
        if self.saved_epoch is None:
            return "no checkpoint was written yet: free space and start the run again with --overwrite"
        return (f"the previous checkpoint {self.folder.last_path} (epoch {self.saved_epoch}) is intact: free "
                "space and continue from it with --resume")

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=self.console, disable=not (self.show_progress and self.is_main), transient=True,
        )

    def fit(self) -> dict[str, Any]:
        """Train from the first (or resumed) epoch to the last; returns the summary (also in summary.json).

        Under torchrun every rank returns rank 0's summary; only rank 0 writes files and prints.
        """
        distributed.run_on_main(lambda: (self.folder.open(), None)[1])
        logger = None
        try:
            if self.folder.resume:
                self._resume()
            if self.is_main:
                logger = RunLogger(self.folder.path, self.tensorboard, start_step=self.global_step)
                logger.truncate_after(self.start_epoch - 1)
                if self.saved_epoch is None:
                    logger.log_hparams(self.folder.config, [k for k in (self.score_key, self.best_key) if k])
                self._logger = logger
                resumed = f", resumed after epoch {self.saved_epoch}" if self.saved_epoch is not None else ""
                self.console.print(f"run folder {self.folder.path}{resumed}", highlight=False, soft_wrap=True)
            wall_start = time.perf_counter()
            self._loop(logger)
            wall_time = time.perf_counter() - wall_start
            summary = distributed.run_on_main(lambda: self._write_summary(wall_time))
            if self.is_main:
                self.console.print(f"done: {self.folder.summary_path}", highlight=False, soft_wrap=True)
            return summary
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"{err}{self._after_non_finite()}") from None
        except (OSError, RuntimeError) as err:
            if isinstance(err, DiskFullError) or not is_disk_full(err):
                raise
            raise DiskFullError(f"no space left on the device while writing {self.folder.path}: {err}; "
                                f"{self._resume_hint()}") from err
        finally:
            if logger is not None:
                logger.close()
                self._logger = None
            if self.is_main:
                self.folder.close()

    def _after_non_finite(self) -> str:
        if self.saved_epoch is not None:
            return (f" The last good checkpoint is {self.folder.last_path} (epoch {self.saved_epoch}); continue "
                    "from it with --resume (with a changed config: --resume --accept-config-changes).")
        removed = ""
        if self.is_main and self.folder.created:
            self.folder.remove()
            removed = f"; the run folder {self.folder.path} was removed"
        return (" There is no last good checkpoint: the run stopped before its first epoch ended"
                f"{removed}. Fix the cause (e.g. a smaller optim.lr) and start again.")

    def _loop(self, logger: RunLogger | None) -> None:
        with self._progress() as progress:
            overall = progress.add_task("run", total=self.epochs, completed=self.start_epoch - 1, speed="", loss="")
            for epoch in range(self.start_epoch, self.epochs + 1):
                steps = StepProgress(progress, epoch, self.epochs, self.step_callbacks, on_step=self._log_step)
                try:
                    metrics: dict[str, Any] = {"epoch": epoch, **self.train_epoch(epoch, steps)}
                finally:
                    steps.close()
                evaluated = self.evaluate(epoch, metrics)
                if evaluated is not None:
                    metrics.update(evaluated)
                    self._update_best(epoch, metrics)
                if self.is_main:
                    logger.log_epoch(metrics, global_step=self.global_step)
                    self.folder.save_checkpoint(self._checkpoint(epoch), "last", resume_hint=self._resume_hint())
                    line = self.epoch_line(metrics)
                    if line:
                        self.console.print(line, highlight=False, soft_wrap=True)
                self.saved_epoch = epoch
                progress.update(overall, advance=1)
                distributed.barrier()  # the others wait until rank 0 has written the epoch
                for callback in self.epoch_callbacks:
                    callback(epoch, metrics)

    def _log_step(self, loss: float | None) -> None:
        """After each optimiser step: count it and write `train/step_loss` to TensorBoard (rank 0)."""
        self.global_step += 1
        if self._logger is not None and loss is not None and math.isfinite(loss):
            self._logger.log_step({"train/step_loss": loss}, self.global_step)

    def _update_best(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self.score_key is None or self.score_key not in metrics:
            return
        score = float(metrics[self.score_key])
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            if self.is_main:
                self.folder.save_checkpoint(self.best_state(epoch, metrics), "best", resume_hint=self._resume_hint())
        metrics[self.best_key] = self.best_score

    def _write_summary(self, wall_time: float) -> dict[str, Any]:
        summary = self.summary(read_metrics(self.folder.metrics_path), wall_time)
        self.folder.write_json("summary.json", summary)
        return summary


__all__ = [
    "DiskFullError", "EpochCallback", "NON_NUMERIC_KEYS", "NonFiniteLossError", "OutputNotWritableError", "Run",
    "RunFolder", "RunFolderError", "RunLockedError", "StepCallback", "StepProgress", "check_output_writable",
    "config_changes", "format_changes", "generator_state", "is_disk_full", "run_dir_for", "set_generator_state",
]
