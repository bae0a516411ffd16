"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009): 32x32 RGB, torchvision's python-pickle layout, read with a
restricted unpickler (`socratic.data.readers`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from socratic.registry import DATASETS

from .. import cache as _cache
from .. import readers
from ..datasets import LoadOptions, make_payload
from ..errors import DatasetNotFoundError

CROP_FLIP = {"name": "crop_flip", "padding": 4, "flip": True}
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def _bases(name: str, root: str | Path | None) -> list[Path]:
    return [Path(root)] if root is not None else [Path("data") / name]


def _find(name: str, root: str | Path | None, split: str) -> tuple[Path | None, list[Path]]:
    folder_name = str(readers.CIFAR_LAYOUTS[name]["folder"])
    looked: list[Path] = []
    for base in _bases(name, root):
        for cand in (base / folder_name, base):
            looked.append(cand)
            batches, meta = readers.cifar_files(cand, name, split)
            if meta.is_file() and all(b.is_file() for b in batches):
                return cand, looked
    return None, looked


def _download(name: str, base: Path, split: str) -> None:
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


def load_cifar(name: str, root: str | Path | None, split: str, options: LoadOptions) -> dict[str, Any]:
    """One split of CIFAR-10 or CIFAR-100 from `root` (the extracted folder or its parent; default
    data/<name>), downloading through torchvision only with `options.download`."""
    folder, looked = _find(name, root, split)
    if folder is None and options.download:
        _download(name, _bases(name, root)[0], split)
        folder, looked = _find(name, root, split)
    if folder is None:
        layout = readers.CIFAR_LAYOUTS[name]
        need = ", ".join(list(layout[split]) + [str(layout["meta"])])  # type: ignore[arg-type]
        base = _bases(name, root)[0]
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
    mean, std = DATASETS.get(name).meta["mean"], DATASETS.get(name).meta["std"]

    def build() -> dict[str, Any]:
        images, labels, classes = readers.read_cifar(folder, name, split)
        return make_payload(name, split, images, labels, classes, mean, std)

    return _cache.cached(name, split, folder, files, build, options.cache_dir)


@DATASETS.register("cifar10", mean=CIFAR10_MEAN, std=CIFAR10_STD, augment=CROP_FLIP,
                   description="CIFAR-10: 50k/10k 32x32 RGB images of 10 classes")
def load_cifar10(root: str | Path | None, split: str, options: LoadOptions) -> dict[str, Any]:
    return load_cifar("cifar10", root, split, options)


@DATASETS.register("cifar100", mean=CIFAR100_MEAN, std=CIFAR100_STD, augment=CROP_FLIP,
                   description="CIFAR-100: 50k/10k 32x32 RGB images of 100 (fine) classes")
def load_cifar100(root: str | Path | None, split: str, options: LoadOptions) -> dict[str, Any]:
    return load_cifar("cifar100", root, split, options)
