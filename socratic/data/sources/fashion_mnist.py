"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): 28x28 grayscale, 10 classes, IDX files (gzipped or raw)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from socratic.registry import DATASETS

from .. import cache as _cache
from .. import fashion_mnist_setup as _fm
from .. import readers
from ..datasets import LoadOptions, make_payload
from ..errors import DataFormatError

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
MEAN, STD = (0.2860,), (0.3530,)  # of the training split, over [0, 1] pixels


# The objects fill most of the 28x28 frame (about two thirds of the training images touch the top edge), so
# the shift is 2 px (7% of the width; CIFAR's 4 px is 12.5%). Flips are kept: all ten classes keep their label
# when mirrored (the shoes all face left in the data, so flips add unseen but harmless orientations).
@DATASETS.register("fashion_mnist", mean=MEAN, std=STD,
                   augment={"name": "crop_flip", "padding": 2, "flip": True}, classes=FASHION_MNIST_CLASSES,
                   install=_fm.ensure_fashion_mnist,
                   description="Fashion-MNIST: 60k/10k 28x28 grayscale images of 10 kinds of clothing")
def load_fashion_mnist(root: str | Path | None, split: str, options: LoadOptions) -> dict[str, Any]:
    """Find the IDX files (the given root only, else Debian's package folder, else data/fashion_mnist),
    downloading them only with `options.download`."""
    folder = _fm.find_fashion_mnist(root, split)
    if folder is None and options.download:
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
        return make_payload("fashion_mnist", split, images[:, None], labels.astype(np.int64),
                            FASHION_MNIST_CLASSES, MEAN, STD)

    return _cache.cached("fashion_mnist", split, folder, [img_path, lbl_path], build, options.cache_dir)
