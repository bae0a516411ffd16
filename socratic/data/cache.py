"""Decode once, then reload decoded uint8 tensors from disk.

Decoding 50k JPEGs takes tens of seconds; loading the same pixels from a `torch.save` file takes a
fraction of one. An entry is identified by the dataset name, split, resolved source folder,
the name, size + mtime of every source file, and whatever else the loader says changes the result (`extra`:
an image folder's class list, whether unreadable files are skipped), so editing, adding or replacing a file,
or adding an empty class folder, makes a new entry instead of silently serving stale data. Entries are written
atomically (temporary file in the same folder, then `os.replace`), so concurrent ranks or an interrupted run never
leave a half-written file under the final name; a file that still fails to load is deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

CACHE_VERSION = 1  # bump when the payload layout or a decoder's output changes
CACHE_ENV = "SOCRATIC_CACHE"


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: the argument, else `$SOCRATIC_CACHE`, else `~/.cache/socratic`."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "socratic"


def cache_key(name: str, split: str, source: str | Path, files: Iterable[str | Path],
              extra: dict[str, Any] | None = None) -> str:
    """Hex digest of (version, name, split, resolved source, each file's path, size and mtime, and `extra`, a
    JSON-able description of anything else the decoded result depends on)."""
    source = Path(source).resolve()
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}\0{name}\0{split}\0{source}\0".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if extra:  # None/empty keeps the keys of loaders without extra inputs unchanged
        h.update(b"extra\0" + json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:24]


def cache_path(cache_dir: str | Path | None, name: str, split: str, key: str) -> Path:
    """Where the entry for (name, split, key) lives."""
    return resolve_cache_dir(cache_dir) / f"{name}-{split}-{key}.pt"


_REQUIRED = {"images", "labels", "classes", "mean", "std", "name"}


def _valid(payload: Any) -> bool:
    """Structural check of a loaded entry, so a truncated-but-parsable file is not trusted."""
    if not isinstance(payload, dict) or not _REQUIRED <= payload.keys():
        return False
    images, labels = payload["images"], payload["labels"]
    return (
        isinstance(images, torch.Tensor)
        and images.dtype == torch.uint8
        and images.ndim == 4
        and isinstance(labels, torch.Tensor)
        and labels.dtype == torch.int64
        and labels.shape == (images.shape[0],)
        and isinstance(payload["classes"], list)
        and len(payload["mean"]) == len(payload["std"]) == images.shape[1]
    )


def load_cached(path: str | Path) -> dict[str, Any] | None:
    """The entry at `path`, or None when it is missing or unreadable (then it is deleted)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if _valid(payload):
            return payload
        problem = "unexpected content"
    except Exception as e:  # any unpickling/zip error means "rebuild", never a crash
        problem = f"{type(e).__name__}: {e}"
    warnings.warn(f"ignoring corrupt cache file {path} ({problem}); rebuilding it", stacklevel=3)
    try:
        path.unlink()
    except OSError:
        pass
    return None


def save_cached(path: str | Path, payload: dict[str, Any]) -> bool:
    """Write `payload` atomically; False (with a warning) when the folder is not writable."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide a shared cache from others
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True
    except OSError as e:
        warnings.warn(f"could not write dataset cache {path} ({e}); continuing without it", stacklevel=3)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False


def cached(
    name: str,
    split: str,
    source: str | Path,
    files: Iterable[str | Path],
    build: Callable[[], dict[str, Any]],
    cache_dir: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The cached entry for these source files (and `extra`, see `cache_key`), calling `build()` and storing
    it on a miss."""
    path = cache_path(cache_dir, name, split, cache_key(name, split, source, files, extra))
    payload = load_cached(path)
    if payload is None:
        payload = build()
        save_cached(path, payload)
    return payload
