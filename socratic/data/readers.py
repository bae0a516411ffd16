"""Pure file-format readers: bytes on disk in, uint8 numpy arrays out.

Nothing here knows about caches, default locations or downloads; `datasets.py` decides *which*
files to read, these functions only know *how*. Every format problem raises `DataFormatError`
naming the file, so a corrupt download is reported as such instead of as a reshape error.
"""

from __future__ import annotations

import gzip
import importlib
import os
import pickle
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataFormatError

# --------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
# --------------------------------------------------------------------------------------------

# Third magic byte -> element type; multi-byte types are big-endian in the file.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's content, transparently gunzipped when it starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head != _GZIP_MAGIC:
            return f.read()
        try:
            with gzip.GzipFile(fileobj=f) as g:
                return g.read()
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
            raise DataFormatError(f"{path}: corrupt or truncated gzip file ({e})") from e


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into an array of its declared type and shape.

    The header is validated (zero bytes, known type code, at least one dimension) and the payload
    length must match the declared dimensions exactly, which catches truncated downloads.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataFormatError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataFormatError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} "
            "(expected 0x0000TTNN with type TT in 08/09/0B/0C/0D/0E and NN >= 1 dimensions)"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims, dtype=np.int64))
    expected = count * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFormatError(
            f"{path}: IDX payload is {len(raw) - header} bytes but dimensions {dims} "
            f"need {expected} (truncated or corrupt file)"
        )
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)  # native order, writable


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 python pickles (torchvision's cifar-10-batches-py / cifar-100-python)
# --------------------------------------------------------------------------------------------

CIFAR_LAYOUTS: dict[str, dict[str, object]] = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    },
}

# The only globals a CIFAR pickle needs: numpy array reconstruction (numpy 1 and 2 module names)
# and the bytes helper Python-2 pickles use. Anything else is refused, so a hostile "dataset"
# file cannot run code when it is read.
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D102 - pickle protocol
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy.core.") or module.startswith("numpy._core."):
            # numpy 2 renamed numpy.core -> numpy._core (the old name warns); try both.
            tail = module.split(".", 2)[2]
            for prefix in ("numpy._core.", "numpy.core."):
                try:
                    return getattr(importlib.import_module(prefix + tail), name)
                except (ImportError, AttributeError):
                    continue
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, object]:
    """Load a CIFAR pickle with the restricted unpickler; keys decoded to str."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataFormatError(f"{path}: not a readable CIFAR pickle ({e})") from e
    if not isinstance(obj, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file -> (images uint8 (N, 3, 32, 32), labels int64 (N,)).

    Accepts CIFAR-10 batches (`labels`) and CIFAR-100 files (`fine_labels`; the coarse labels
    are ignored).
    """
    path = Path(path)
    d = _unpickle(path)
    if "data" not in d:
        raise DataFormatError(f"{path}: CIFAR batch without a 'data' entry (keys: {sorted(d)})")
    label_key = "labels" if "labels" in d else "fine_labels" if "fine_labels" in d else None
    if label_key is None:
        raise DataFormatError(f"{path}: CIFAR batch without 'labels' or 'fine_labels'")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.size % 3072:
        raise DataFormatError(
            f"{path}: 'data' must be a uint8 array of N x 3072 values, got "
            f"{type(data).__name__} {getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}"
        )
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32))
    labels = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
    if len(labels) != len(images):
        raise DataFormatError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def read_cifar_meta(path: str | Path) -> list[str]:
    """Class names from `batches.meta` (CIFAR-10, `label_names`) or `meta` (CIFAR-100, fine)."""
    path = Path(path)
    d = _unpickle(path)
    for key in ("label_names", "fine_label_names"):
        if key in d:
            return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in d[key]]
    raise DataFormatError(f"{path}: no 'label_names' or 'fine_label_names' in meta file")


def cifar_files(folder: str | Path, variant: str, split: str) -> tuple[list[Path], Path]:
    """The batch files and meta file of `split` in a torchvision-layout CIFAR folder."""
    layout = CIFAR_LAYOUTS[variant]
    folder = Path(folder)
    return [folder / n for n in layout[split]], folder / str(layout["meta"])  # type: ignore[union-attr]


def read_cifar(
    folder: str | Path, variant: str, split: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All batches of one split -> (images (N, 3, 32, 32) uint8, labels int64, class names)."""
    batches, meta = cifar_files(folder, variant, split)
    parts = [read_cifar_batch(p) for p in batches]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    classes = read_cifar_meta(meta)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataFormatError(
            f"{folder}: labels range {labels.min()}..{labels.max()} but meta lists {len(classes)} classes"
        )
    return images, labels, classes


# --------------------------------------------------------------------------------------------
# ImageFolder: <split>/<class>/<image>
# --------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".gif"}
)
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def find_classes(folder: str | Path) -> list[str]:
    """Class names of an ImageFolder split: its sub-directories, sorted, hidden ones skipped."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def list_image_files(folder: str | Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(path, class index) of every image file, classes in the given order, files sorted by name.

    Sub-directories of `folder` that are not in `classes` raise, because silently dropping them
    (or renumbering) would mislabel a test split whose classes differ from the training split's.
    """
    folder = Path(folder)
    unknown = sorted(set(find_classes(folder)) - set(classes))
    if unknown:
        raise DataFormatError(
            f"{folder}: class folders {unknown} are not among the dataset's classes {list(classes)}"
        )
    out: list[tuple[Path, int]] = []
    for idx, cls in enumerate(classes):
        d = folder / cls
        if not d.is_dir():
            continue
        with os.scandir(d) as it:
            names = sorted(
                e.name
                for e in it
                if not e.name.startswith(".")
                and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
                and e.is_file()
            )
        out.extend((d / n, idx) for n in names)
    return out


def _decode(path: Path, mode: str | None) -> np.ndarray:
    """One image -> HxW (gray) or HxWx3 (RGB) uint8 array. mode None keeps gray images gray."""
    try:
        with Image.open(path) as im:
            target = mode or ("L" if im.mode in _GRAY_MODES else "RGB")
            if im.mode != target:
                im = im.convert(target)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataFormatError(f"{path}: cannot decode image ({e})") from e


def read_imagefolder(
    folder: str | Path,
    classes: Sequence[str] | None = None,
    mode: str | None = None,
    skip_unreadable: bool = False,
    skipped: list[Path] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode an ImageFolder split -> (images uint8 (N, C, H, W), labels int64 (N,), classes).

    `classes` defaults to the sorted sub-directories (pass the training split's list when reading
    a test split so indices agree). `mode` "L" or "RGB" forces the channel count; None gives
    1 channel when every image is grayscale and 3 otherwise. All images must have the same size;
    the first one that differs is named in the error. A file that cannot be decoded (truncated,
    not an image) is a `DataFormatError` naming it, or with `skip_unreadable` is left out and
    appended to `skipped` (when given).
    """
    folder = Path(folder)
    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode must be None, 'L' or 'RGB', got {mode!r}")
    classes = list(classes) if classes is not None else find_classes(folder)
    files = list_image_files(folder, classes)
    if not files:
        raise DataFormatError(
            f"{folder}: no images found (expected {folder}/<class>/<image> with extensions "
            f"{sorted(IMAGE_EXTENSIONS)})"
        )
    skipped = [] if skipped is None else skipped
    images: np.ndarray | None = None
    labels: list[int] = []
    channels, h, w, first_path = 0, 0, 0, files[0][0]
    for path, label in files:
        try:
            arr = _decode(path, mode if mode or images is None else ("RGB" if channels == 3 else None))
        except DataFormatError:
            if not skip_unreadable:
                raise
            skipped.append(path)
            continue
        if images is None:  # the first readable image sets size and (at first) channels
            h, w = arr.shape[:2]
            channels, first_path = (1 if arr.ndim == 2 else 3), path
            images = np.empty((len(files), channels, h, w), dtype=np.uint8)
        if arr.shape[:2] != (h, w):
            raise DataFormatError(
                f"{path}: image is {arr.shape[1]}x{arr.shape[0]} (WxH) but {first_path} is "
                f"{w}x{h}; all images of an ImageFolder must share one size (resize them first)"
            )
        i = len(labels)
        if arr.ndim == 2:
            images[i, 0] = arr
        else:
            if channels == 1:  # first colour image after gray ones: widen what we have so far
                images = np.repeat(images, 3, axis=1)
                channels = 3
            images[i] = arr.transpose(2, 0, 1)
        labels.append(label)
    if images is None:
        raise DataFormatError(f"{folder}: none of its {len(files)} image files could be decoded (e.g. {skipped[0]})")
    if len(labels) < len(files):
        images = images[: len(labels)].copy()
    return images, np.asarray(labels, dtype=np.int64), classes
