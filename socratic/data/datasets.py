"""`ImageDataset` (decoded uint8 tensors in memory) and `load_dataset` (locate, decode, cache).

Everything a training run needs fits in memory for these datasets (CIFAR train is 150 MB as
uint8), so a dataset is just two tensors plus metadata; batching and augmentation happen on whole
tensors in `loader.py` instead of per-sample Python code.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import cache as _cache
from . import fashion_mnist_setup as _fm
from . import readers
from .constants import DATASET_NAMES, FASHION_MNIST_CLASSES, NORMALIZATION, SPLIT_ALIASES
from .errors import DatasetNotFoundError, DataFormatError


@dataclass(eq=False, repr=False)
class ImageDataset:
    """A labelled image dataset held as tensors.

    images: uint8 (N, C, H, W); labels: int64 (N,); classes: names indexed by label;
    mean/std: per-channel normalisation over [0, 1] pixels; name: dataset name (as accepted by
    `load_dataset` and `default_augment`); split: "train" or "test".
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    split: str = "train"

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int64 of shape ({self.images.shape[0]},), got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )
        self.classes = list(self.classes)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if not len(self.mean) == len(self.std) == self.images.shape[1]:
            raise ValueError(
                f"mean/std need one value per channel ({self.images.shape[1]}), got {self.mean}/{self.std}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """(uint8 image (C, H, W), label): enough for torch's DataLoader if someone wants it."""
        return self.images[index], int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def class_counts(self) -> torch.Tensor:
        """Number of samples per class, int64 (num_classes,)."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes})"
        )


def compute_mean_std(images: torch.Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 (N, C, H, W) images scaled to [0, 1].

    Accumulates in float64 over chunks so memory stays small. A constant channel gets std 1e-6
    rather than 0 so normalising never divides by zero.
    """
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float64).transpose(0, 1).reshape(c, -1)
        total += x.sum(dim=1)
        total_sq += (x * x).sum(dim=1)
    n = images.shape[0] * images.shape[2] * images.shape[3]
    if n == 0:
        raise ValueError("cannot compute mean/std of an empty dataset")
    mean = total / n
    var = (total_sq / n - mean * mean).clamp_min(0.0)
    mean, std = mean / 255.0, var.sqrt() / 255.0
    return tuple(float(m) for m in mean), tuple(max(float(s), 1e-6) for s in std)


def _check_name_split(name: str, split: str) -> tuple[str, str]:
    key = name.lower().replace("-", "_")
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if split not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLIT_ALIASES)} (val = test)")
    return key, SPLIT_ALIASES[split]


def _payload(name: str, split: str, images: np.ndarray, labels: np.ndarray, classes: list[str],
             mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
    return {
        "images": torch.from_numpy(np.ascontiguousarray(images)),
        "labels": torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        "classes": list(classes),
        "mean": tuple(mean),
        "std": tuple(std),
        "name": name,
        "split": split,
    }


# --- Fashion-MNIST -------------------------------------------------------------------------


def _load_fashion_mnist(root: str | Path | None, split: str, cache_dir: Any, download: bool) -> dict[str, Any]:
    folder = _fm.find_fashion_mnist(root, split)
    if folder is None and download:
        target = Path(root) if root is not None else _fm.DEFAULT_ROOT
        try:
            _fm.download_fashion_mnist(target)
        except Exception as e:
            raise _fm.not_found_error(root, split, f"Download into {target} failed: {e}") from e
        folder = _fm.find_fashion_mnist(root, split)
    if folder is None:
        raise _fm.not_found_error(root, split)
    files = _fm.split_files(folder, split)
    assert files is not None
    img_path, lbl_path = (p.resolve() for p in files)

    def build() -> dict[str, Any]:
        images = readers.read_idx(img_path)
        labels = readers.read_idx(lbl_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataFormatError(f"{img_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataFormatError(f"{lbl_path}: expected {len(images)} labels, got shape {labels.shape}")
        if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataFormatError(f"{lbl_path}: label {labels.max()} out of range 0..9")
        mean, std = NORMALIZATION["fashion_mnist"]
        return _payload("fashion_mnist", split, images[:, None], labels.astype(np.int64),
                        FASHION_MNIST_CLASSES, mean, std)

    return _cache.cached("fashion_mnist", split, folder, [img_path, lbl_path], build, cache_dir)


# --- CIFAR-10 / CIFAR-100 --------------------------------------------------------------------


def _cifar_bases(name: str, root: str | Path | None) -> list[Path]:
    return [Path(root)] if root is not None else [Path("data") / name]


def _find_cifar(name: str, root: str | Path | None, split: str) -> tuple[Path | None, list[Path]]:
    folder_name = str(readers.CIFAR_LAYOUTS[name]["folder"])
    looked: list[Path] = []
    for base in _cifar_bases(name, root):
        for cand in (base / folder_name, base):
            looked.append(cand)
            batches, meta = readers.cifar_files(cand, name, split)
            if meta.is_file() and all(b.is_file() for b in batches):
                return cand, looked
    return None, looked


def _download_cifar(name: str, base: Path, split: str) -> None:
    try:
        import torchvision.datasets as tvd  # optional extra
    except ImportError as e:
        raise DatasetNotFoundError(
            f"download=True for {name} needs torchvision (pip install 'socratic-kd[vision]'), which "
            f"is not importable ({e}). Alternatively download {readers.CIFAR_LAYOUTS[name]['url']} "
            f"and extract it into {base}."
        ) from e
    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    base.mkdir(parents=True, exist_ok=True)
    try:
        cls(root=str(base), train=(split == "train"), download=True)
    except Exception as e:  # network errors, checksum failures: report with the manual route
        raise DatasetNotFoundError(
            f"downloading {name} into {base} with torchvision failed ({e}). Alternatively download "
            f"{readers.CIFAR_LAYOUTS[name]['url']} and extract it into {base}."
        ) from e


def _load_cifar(name: str, root: str | Path | None, split: str, cache_dir: Any, download: bool) -> dict[str, Any]:
    folder, looked = _find_cifar(name, root, split)
    if folder is None and download:
        _download_cifar(name, _cifar_bases(name, root)[0], split)
        folder, looked = _find_cifar(name, root, split)
    if folder is None:
        layout = readers.CIFAR_LAYOUTS[name]
        need = ", ".join(list(layout[split]) + [str(layout["meta"])])  # type: ignore[arg-type]
        base = _cifar_bases(name, root)[0]
        raise DatasetNotFoundError(
            f"Could not find the {split} split of {name} (files {need}). Looked in:\n"
            + "\n".join(f"  - {p.resolve()}" for p in looked)
            + f"\nTo get it:\n  - load_dataset({name!r}, root={str(base)!r}, download=True) with internet "
            f"access and torchvision installed\n  - or download {layout['url']} and extract it into "
            f"{base} (giving {base / str(layout['folder'])}/)\n"
            f"  - for a folder of images (<root>/train/<class>/*.png) use the 'imagefolder' dataset"
        )
    batches, meta = readers.cifar_files(folder, name, split)
    files = [p.resolve() for p in [*batches, meta]]

    def build() -> dict[str, Any]:
        images, labels, classes = readers.read_cifar(folder, name, split)
        mean, std = NORMALIZATION[name]
        return _payload(name, split, images, labels, classes, mean, std)

    return _cache.cached(name, split, folder, files, build, cache_dir)


# --- ImageFolder ---------------------------------------------------------------------------


def _imagefolder_split_dir(root: Path, split: str) -> tuple[Path | None, list[Path]]:
    names = ["train"] if split == "train" else ["test", "val"]
    looked = [root / n for n in names]
    return next((p for p in looked if p.is_dir()), None), looked


def _load_imagefolder(root: str | Path | None, split: str, cache_dir: Any) -> dict[str, Any]:
    if root is None:
        raise DatasetNotFoundError("the 'imagefolder' dataset needs a root: a folder containing train/ and test/ "
                                   "(data.root in a config, --root on the command line)")
    root = Path(root).resolve()
    split_dir, looked = _imagefolder_split_dir(root, split)
    if split_dir is None:
        raise DatasetNotFoundError(
            f"Could not find the {split} split of the image folder {root}. Looked for:\n"
            + "\n".join(f"  - {p}" for p in looked)
            + f"\nExpected layout: {root}/train/<class>/<image>.png and {root}/test/<class>/<image>.png "
            "(all images the same size; class folders sorted alphabetically give the label indices)."
        )
    train_dir = root / "train"
    # The training split defines class indices and normalisation for every split.
    classes = readers.find_classes(train_dir if train_dir.is_dir() else split_dir)
    files = [p for p, _ in readers.list_image_files(split_dir, classes)]
    if split != "train" and train_dir.is_dir():
        files += [p for p, _ in readers.list_image_files(train_dir, classes)]

    def build() -> dict[str, Any]:
        images, labels, _ = readers.read_imagefolder(split_dir, classes)
        if split == "train" or not train_dir.is_dir():
            if split != "train":
                warnings.warn(f"{root} has no train/ folder: normalising with the {split} split's own statistics")
            mean, std = compute_mean_std(torch.from_numpy(images))
        else:
            train = load_dataset("imagefolder", root, "train", cache_dir)
            mean, std = train.mean, train.std
            if train.image_shape[0] != images.shape[1]:
                raise DataFormatError(
                    f"{split_dir}: images have {images.shape[1]} channel(s) but {train_dir} has "
                    f"{train.image_shape[0]}"
                )
        return _payload("imagefolder", split, images, labels, classes, mean, std)

    return _cache.cached("imagefolder", split, split_dir, files, build, cache_dir)


# --- public entry point --------------------------------------------------------------------


def load_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    cache_dir: str | Path | None = None,
    download: bool = False,
) -> ImageDataset:
    """Load a dataset split as uint8 tensors, decoding it once and caching the result.

    name: fashion_mnist | cifar10 | cifar100 | imagefolder. root: the folder with the dataset's
    files (fashion_mnist: the IDX files, default search root -> /usr/share/datasets/fashion-mnist
    -> data/fashion_mnist; cifar*: torchvision's cifar-10-batches-py / cifar-100-python folder or
    its parent, default data/<name>; imagefolder: the folder holding train/ and test/).
    split: train | test (val is an alias of test). Nothing is downloaded unless download=True.
    Raises DatasetNotFoundError (a FileNotFoundError) naming where it looked and how to get the
    data, ValueError for unknown names or splits.
    """
    name, split = _check_name_split(name, split)
    if name == "fashion_mnist":
        payload = _load_fashion_mnist(root, split, cache_dir, download)
    elif name in ("cifar10", "cifar100"):
        payload = _load_cifar(name, root, split, cache_dir, download)
    else:
        payload = _load_imagefolder(root, split, cache_dir)
    return ImageDataset(
        images=payload["images"],
        labels=payload["labels"],
        classes=payload["classes"],
        mean=payload["mean"],
        std=payload["std"],
        name=payload["name"],
        split=payload.get("split", split),
    )
