"""A folder of images: <root>/train/<class>/<image> and <root>/test/<class>/<image> (or val/), all one size.

The training split's sorted class folders give the label indices of every split, and its pixel statistics
the normalisation (computed on the first decode and kept in the cache). The cache entry is keyed on the class
list and on every image file's name, size and mtime, so adding a class folder, or any change of a file, makes a
new entry. An empty class folder is refused (its class would exist with no example, silently changing the
class count) unless `allow_empty_classes`; an unreadable image is an error naming it unless
`skip_unreadable`, which skips such files and says how many.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from socratic.registry import DATASETS

from .. import cache as _cache
from .. import readers
from ..datasets import LoadOptions, compute_mean_std, load_dataset, make_payload
from ..errors import DataFormatError, DatasetNotFoundError


def _split_dir(root: Path, split: str) -> tuple[Path | None, list[Path]]:
    names = ["train"] if split == "train" else ["test", "val"]
    looked = [root / n for n in names]
    return next((p for p in looked if p.is_dir()), None), looked


def _listing(folder: Path, classes: list[str], allow_empty: bool) -> list[Path]:
    """The image files of one split; a class folder present but without images is refused unless allowed."""
    pairs = readers.list_image_files(folder, classes)
    if not allow_empty:
        found = {label for _, label in pairs}
        empty = [folder / c for i, c in enumerate(classes) if i not in found and (folder / c).is_dir()]
        if empty:
            raise DataFormatError(
                f"empty class folder {empty[0]}" + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
                + f": no images with extensions {sorted(readers.IMAGE_EXTENSIONS)}. Put images in it, remove it, "
                "or allow classes without examples (load_dataset(..., allow_empty_classes=True), config "
                "data.allow_empty_classes: true)"
            )
    return [p for p, _ in pairs]


@DATASETS.register("imagefolder", mean=None, std=None, augment={"name": "crop_flip", "padding": 4, "flip": True},
                   description="a folder of same-size images: <root>/train/<class>/* and <root>/test/<class>/*")
def load_imagefolder(root: str | Path | None, split: str, options: LoadOptions) -> dict[str, Any]:
    if root is None:
        raise DatasetNotFoundError("the 'imagefolder' dataset needs a root: a folder containing train/ and test/ "
                                   "(data.root in a config, --root on the command line)")
    root = Path(root).resolve()
    split_dir, looked = _split_dir(root, split)
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
    split_files = _listing(split_dir, classes, options.allow_empty_classes)
    files = list(split_files)
    if split != "train" and train_dir.is_dir():  # the test split is normalised with the training statistics
        files += _listing(train_dir, classes, options.allow_empty_classes)

    def build() -> dict[str, Any]:
        skipped: list[Path] = []
        images, labels, _ = readers.read_imagefolder(split_dir, classes, skip_unreadable=options.skip_unreadable,
                                                     skipped=skipped)
        if split == "train" or not train_dir.is_dir():
            if split != "train":
                warnings.warn(f"{root} has no train/ folder: normalising with the {split} split's own statistics")
            mean, std = compute_mean_std(torch.from_numpy(images))
        else:
            train = load_dataset("imagefolder", root, "train", options.cache_dir,
                                 allow_empty_classes=options.allow_empty_classes,
                                 skip_unreadable=options.skip_unreadable)
            mean, std = train.mean, train.std
            if train.image_shape[0] != images.shape[1]:
                raise DataFormatError(
                    f"{split_dir}: images have {images.shape[1]} channel(s) but {train_dir} has "
                    f"{train.image_shape[0]}"
                )
        payload = make_payload("imagefolder", split, images, labels, classes, mean, std)
        payload["skipped"] = [str(p) for p in skipped]
        return payload

    # what changes the decoded result besides the files: the class list (an empty class folder adds a class
    # but no file) and whether unreadable files are skipped (a skipping build must not serve a strict call)
    key_extra = {"classes": classes, "skip_unreadable": options.skip_unreadable}
    payload = _cache.cached("imagefolder", split, split_dir, files, build, options.cache_dir, extra=key_extra)
    skipped = payload.get("skipped") or []
    if skipped:
        warnings.warn(f"{split_dir}: skipped {len(skipped)} unreadable image file(s) of {len(split_files)} "
                      f"(skip_unreadable), e.g. {skipped[0]}")
    return payload
