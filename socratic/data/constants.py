"""Per-dataset normalisation constants and class names.

The means/stds are the usual per-channel statistics of the *training* split over pixels scaled to
[0, 1]; they are fixed here (rather than recomputed) so every run and every paper comparison uses
the same numbers. ImageFolder datasets have no canonical values: theirs are computed from the
training images when the folder is first decoded and stored in the cache (see `datasets.py`).
"""

from __future__ import annotations

NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}

FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

DATASET_NAMES: tuple[str, ...] = ("fashion_mnist", "cifar10", "cifar100", "imagefolder")

SPLITS: tuple[str, ...] = ("train", "test")
SPLIT_ALIASES: dict[str, str] = {"train": "train", "test": "test", "val": "test"}


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a dataset with fixed constants; ValueError for one without (e.g. imagefolder)."""
    try:
        return NORMALIZATION[name]
    except KeyError:
        raise ValueError(
            f"no fixed normalisation constants for dataset {name!r}; known: {sorted(NORMALIZATION)}"
        ) from None
