"""`ImageDataset` (decoded uint8 tensors in memory) and `load_dataset` (locate, decode, cache).

`load_dataset` looks the name up in `socratic.registry.DATASETS`; each dataset is one module of
`socratic.data.sources` that registers its loader with its normalisation and default augmentation.

Everything a training run needs fits in memory for these datasets (CIFAR train is 150 MB as
uint8), so a dataset is just two tensors plus metadata; batching and augmentation happen on whole
tensors in `loader.py` instead of per-sample Python code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from socratic.registry import DATASETS

from .constants import SPLIT_ALIASES


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


@dataclass(frozen=True)
class LoadOptions:
    """How a dataset's loader should behave, beyond root and split (`load_dataset`'s keyword arguments).

    cache_dir: where decoded splits are cached (None: `$SOCRATIC_CACHE` or ~/.cache/socratic).
    download: allow a download when the files are missing. allow_empty_classes: accept a class folder without
    images (imagefolder). skip_unreadable: skip image files that cannot be decoded, with a warning giving
    their count, instead of failing on the first (imagefolder).
    """

    cache_dir: str | Path | None = None
    download: bool = False
    allow_empty_classes: bool = False
    skip_unreadable: bool = False


def make_payload(name: str, split: str, images: np.ndarray, labels: np.ndarray, classes: list[str],
                 mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
    """What a dataset loader returns (and the cache stores): tensors, class names, normalisation, name, split."""
    return {
        "images": torch.from_numpy(np.ascontiguousarray(images)),
        "labels": torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        "classes": list(classes),
        "mean": tuple(mean),
        "std": tuple(std),
        "name": name,
        "split": split,
    }


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) a dataset registers as its default normalisation; ValueError for one that computes its
    own from the data (imagefolder) or an unknown name."""
    key = name.lower().replace("-", "_")
    meta = DATASETS.get(key).meta if key in DATASETS else {}
    if meta.get("mean") is None:
        fixed = sorted(e.name for e in DATASETS.entries() if e.meta.get("mean") is not None)
        raise ValueError(f"no fixed normalisation constants for dataset {name!r}; known: {fixed}")
    return tuple(meta["mean"]), tuple(meta["std"])


def _check_name_split(name: str, split: str) -> tuple[str, str]:
    key = name.lower().replace("-", "_")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS.names())}")
    if split not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLIT_ALIASES)} (val = test)")
    return key, SPLIT_ALIASES[split]


def load_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    cache_dir: str | Path | None = None,
    download: bool = False,
    *,
    allow_empty_classes: bool = False,
    skip_unreadable: bool = False,
) -> ImageDataset:
    """Load a dataset split as uint8 tensors, decoding it once and caching the result.

    name: a registered dataset (`socratic.registry.DATASETS.names()`: fashion_mnist, cifar10, cifar100,
    imagefolder, ...; each is one module of `socratic.data.sources`). root: the folder with the dataset's
    files (fashion_mnist: the IDX files, default search root -> /usr/share/datasets/fashion-mnist
    -> data/fashion_mnist; cifar*: torchvision's cifar-10-batches-py / cifar-100-python folder or
    its parent, default data/<name>; imagefolder: the folder holding train/ and test/).
    split: train | test (val is an alias of test). Nothing is downloaded unless download=True.
    allow_empty_classes / skip_unreadable: see `LoadOptions` (image folders).
    Raises DatasetNotFoundError (a FileNotFoundError) naming where it looked and how to get the
    data, DataFormatError naming a file or folder that is not what its format promises, ValueError for
    unknown names or splits.
    """
    name, split = _check_name_split(name, split)
    options = LoadOptions(cache_dir, download, allow_empty_classes, skip_unreadable)
    payload = DATASETS.create(name, root, split, options)
    return ImageDataset(
        images=payload["images"],
        labels=payload["labels"],
        classes=payload["classes"],
        mean=payload["mean"],
        std=payload["std"],
        name=payload["name"],
        split=payload.get("split", split),
    )
