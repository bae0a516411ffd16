"""Where a study lives, so that several worker processes (or machines) share it and a killed search resumes.

* default: a SQLite file `<output_dir>/<study>/study.db` (Optuna's RDBStorage);
* any Optuna RDB URL: `sqlite:///path.db`, `postgresql://user:pass@host/db`, `mysql+pymysql://...`;
* `journal:FILE` (or a `.log`/`.journal` path): Optuna's JournalStorage on a file, with an open()-based
  lock that also works on NFS.

Trials left RUNNING by a killed worker: with an RDB storage Optuna's heartbeat marks a trial whose worker
stopped beating for `grace_period` seconds as FAIL (at the start of any worker's next trial, and while a
worker waits for the last trials), and `RetryHeartbeatStaleTrialCallback` (`RetryFailedTrialCallback` before
Optuna 4.9) queues it again with the same parameters. Optuna's journal storage has no heartbeat, so for it
socratic writes its own: each running trial stores the time in a system attribute every `heartbeat` seconds
and workers fail and re-queue trials whose time is older than the grace period (the clocks of the machines
sharing a journal file must agree, e.g. NTP).
"""

from __future__ import annotations

import copy
import inspect
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from socratic.config import ConfigError

HEARTBEAT_ATTR = "socratic:heartbeat"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as err:
        raise ConfigError("socratic search needs Optuna: pip install 'socratic-kd[hpo]' (optuna>=3.4)") from err
    return optuna


@dataclass
class StorageHandle:
    """An open Optuna storage and how its stale trials are handled."""

    storage: Any
    kind: str  # rdb | journal
    description: str  # the URL with any password hidden, or the journal file
    heartbeat: int | None  # seconds between heartbeats (None: off)
    grace_period: int | None  # seconds without a heartbeat after which a RUNNING trial is failed
    retry: Any = None  # the retry callback (journal: called by socratic; rdb: held by the storage)

    @property
    def own_heartbeat(self) -> bool:
        """True when socratic (not Optuna) keeps the heartbeat: journal storages."""
        return self.kind == "journal" and self.heartbeat is not None


def hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL: show it as it is
        return url


def resolve_storage(spec: str | None, study_dir: Path) -> tuple[str, str]:
    """(kind, target): an RDB URL or a journal file path, from `--storage` (None = the default SQLite file)."""
    if spec is None or spec == "":
        return "rdb", f"sqlite:///{(study_dir / 'study.db').resolve()}"
    if spec.startswith("journal:"):
        path = spec[len("journal:"):]
        if not path:
            raise ConfigError("--storage journal: needs a file, e.g. journal:runs/my_study/journal.log")
        return "journal", str(Path(path).resolve())
    if "://" in spec:
        return "rdb", spec
    path = Path(spec)
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return "rdb", f"sqlite:///{path.resolve()}"
    if path.suffix in (".log", ".journal"):
        return "journal", str(path.resolve())
    raise ConfigError(f"--storage {spec!r}: use an Optuna RDB URL (sqlite:///study.db, postgresql://user@host/db), "
                      f"a .db file, or journal:FILE for a journal file")


def retry_callback(max_retry: int | None) -> Any:
    """Optuna's callback that re-queues a stale trial with the same parameters (name depends on the version)."""
    storages = _optuna().storages
    cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" since Optuna 2.8
        return cls(max_retry=max_retry)


def open_storage(spec: str | None, study_dir: Path, *, heartbeat: int | None = 60, grace_period: int | None = None,
                 max_retry: int | None = 3) -> StorageHandle:
    """Open (creating if needed) the storage `spec` names; `heartbeat` None or 0 turns stale-trial handling off."""
    optuna = _optuna()
    kind, target = resolve_storage(spec, study_dir)
    heartbeat = int(heartbeat) if heartbeat else None
    if grace_period is not None and grace_period <= 0:
        raise ConfigError(f"--grace-period must be > 0 seconds, got {grace_period}")
    if heartbeat is not None and grace_period is None:
        grace_period = 2 * heartbeat  # Optuna's default
    retry = retry_callback(max_retry) if heartbeat else None
    if kind == "journal":
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        journal = getattr(optuna.storages, "journal", None)
        backend_cls = getattr(journal, "JournalFileBackend", None) or optuna.storages.JournalFileStorage
        lock_cls = getattr(journal, "JournalFileOpenLock", None) or optuna.storages.JournalFileOpenLock
        storage = optuna.storages.JournalStorage(backend_cls(target, lock_obj=lock_cls(target)))
        return StorageHandle(storage, "journal", target, heartbeat, grace_period, retry)
    kwargs: dict[str, Any] = {}
    if target.startswith("sqlite"):
        if target.startswith("sqlite:///"):
            Path(target[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # several workers writing one file
    if heartbeat:
        kwargs.update(heartbeat_interval=heartbeat, grace_period=grace_period)
        names = inspect.signature(optuna.storages.RDBStorage).parameters
        kwargs["heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in names
               else "failed_trial_callback"] = retry
    description = hide_password(target)
    try:
        storage = optuna.storages.RDBStorage(target, **kwargs)
    except ImportError as err:
        raise ConfigError(f"--storage {description}: the database driver is missing ({err}); e.g. "
                          f"pip install psycopg2-binary for postgresql://") from err
    except Exception as err:  # noqa: BLE001 - connection refused, bad URL, ...
        raise ConfigError(f"--storage {description}: cannot open the study storage: {err}") from err
    return StorageHandle(storage, "rdb", description, heartbeat, grace_period, retry)


class JournalHeartbeat:
    """socratic's heartbeat for a trial in a journal storage: the time, as a system attribute, every `interval` s."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="socratic-heartbeat", daemon=True)

    def beat(self) -> bool:
        try:
            self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())
            return True
        except Exception:  # noqa: BLE001 - the trial finished (or was failed by another worker): stop beating
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self.beat():
                return

    def __enter__(self) -> "JournalHeartbeat":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def fail_stale_trials(study: Any, handle: StorageHandle) -> list[int]:
    """Fail (and re-queue) RUNNING trials whose worker stopped beating; returns the failed trial numbers."""
    optuna = _optuna()
    if handle.heartbeat is None:
        return []
    if handle.kind == "rdb":
        before = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))}
        return sorted(before & after)
    failed = []
    now = time.time()
    storage = study._storage  # noqa: SLF001 - as optuna.storages.fail_stale_trials does
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        last = trial.system_attrs.get(HEARTBEAT_ATTR)
        if last is None:
            last = trial.datetime_start.timestamp() if trial.datetime_start else now
        if now - float(last) <= handle.grace_period:
            continue
        try:
            changed = storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)  # noqa: SLF001
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished, or failed by another worker in the meantime
        if changed:
            failed.append(trial.number)
            if handle.retry is not None:
                handle.retry(study, copy.deepcopy(storage.get_trial(trial._trial_id)))  # noqa: SLF001
    return failed
