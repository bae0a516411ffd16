"""Finding, installing and downloading Fashion-MNIST's four IDX files.

Search order: the folder the user gave, Debian's `dataset-fashion-mnist` package
(`/usr/share/datasets/fashion-mnist`), then `data/fashion_mnist` under the working directory.
`ensure_fashion_mnist` goes one step further for the CLI's `data --install`: apt-get when we are
root on a Debian-like system, else a download from Zalando's original URLs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from .errors import DatasetNotFoundError

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_ROOT = Path("data/fashion_mnist")
APT_PACKAGE = "dataset-fashion-mnist"
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# split -> (images stem, labels stem); each may exist as <stem>.gz or <stem>.
FILE_STEMS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
EXPECTED_COUNTS = {"train": 60000, "test": 10000}


def _candidates(stem: str) -> list[str]:
    # Also the dotted spelling ("train-images.idx3-ubyte") some mirrors use.
    dotted = stem.replace("-idx", ".idx")
    return [stem + ".gz", stem, dotted + ".gz", dotted]


def split_files(folder: str | Path, split: str) -> tuple[Path, Path] | None:
    """(images, labels) files of `split` in `folder`, or None when either is missing."""
    folder = Path(folder)
    found = []
    for stem in FILE_STEMS[split]:
        path = next((folder / n for n in _candidates(stem) if (folder / n).is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def search_dirs(root: str | Path | None = None) -> list[Path]:
    """Folders searched, in order: an explicit root (and torchvision's root/FashionMNIST/raw) only;
    without one, the system folder then the project default. A root the user names is never
    silently replaced by another copy of the data."""
    if root is not None:
        return [Path(root), Path(root) / "FashionMNIST" / "raw"]
    return [SYSTEM_DIR, DEFAULT_ROOT]


def find_fashion_mnist(root: str | Path | None = None, split: str | None = None) -> Path | None:
    """First searched folder holding `split`'s files (both splits when split is None)."""
    splits = [split] if split else list(FILE_STEMS)
    for d in search_dirs(root):
        if all(split_files(d, s) is not None for s in splits):
            return d
    return None


def install_instructions(root: str | Path | None = None) -> str:
    """How to get the data, for error messages."""
    target = Path(root) if root is not None else DEFAULT_ROOT
    return (
        f"  - Debian/Ubuntu: sudo apt-get install {APT_PACKAGE}   (installs into {SYSTEM_DIR})\n"
        f"  - or `socratic data fashion_mnist --install`, or load_dataset(..., download=True) with "
        f"internet access (downloads into {target})\n"
        f"  - or copy train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        f"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz from {BASE_URL} into {target}"
    )


def not_found_error(root: str | Path | None, split: str | None, extra: str = "") -> DatasetNotFoundError:
    """A DatasetNotFoundError naming every folder searched and how to get the data."""
    what = f"the {split} split of Fashion-MNIST" if split else "Fashion-MNIST"
    looked = "\n".join(f"  - {d.resolve() if not d.is_absolute() else d}" for d in search_dirs(root))
    return DatasetNotFoundError(
        f"Could not find {what}. Looked in:\n{looked}\n"
        + (f"{extra}\n" if extra else "")
        + f"To get it:\n{install_instructions(root)}"
    )


def can_use_apt() -> bool:
    """True when apt-get exists and we are root (no sudo prompts from a library)."""
    return shutil.which("apt-get") is not None and hasattr(os, "geteuid") and os.geteuid() == 0


def apt_install() -> None:
    """`apt-get update` then `apt-get install -y dataset-fashion-mnist` (raises on failure)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", APT_PACKAGE], check=True, env=env)


def _fetch(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Download `url` to `dest` atomically (temporary file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            shutil.copyfileobj(r, f)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def download_fashion_mnist(root: str | Path = DEFAULT_ROOT) -> Path:
    """Download the four .gz files into `root` (skipping ones already there) and validate them.

    Validation reads every file and checks the expected image/label counts, so a truncated or
    wrong file fails here rather than at training time.
    """
    from .readers import read_idx  # local import: readers pulls in PIL/numpy

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, stems in FILE_STEMS.items():
        for stem in stems:
            dest = root / f"{stem}.gz"
            if not dest.is_file():
                _fetch(BASE_URL + dest.name, dest)
            n = len(read_idx(dest))
            if n != EXPECTED_COUNTS[split]:
                raise OSError(f"{dest}: {n} items, expected {EXPECTED_COUNTS[split]}")
    return root


def _existing(root: Path) -> Path | None:
    """`root` if it holds the files, else the system folder or the project default."""
    return find_fashion_mnist(root) or find_fashion_mnist(None)


def ensure_fashion_mnist(root: Path = DEFAULT_ROOT, use_apt: bool = True) -> Path:
    """Return a folder with all four Fashion-MNIST files, installing or downloading if needed.

    Order: existing files (system folder or `root`), then apt-get (only if `use_apt`, apt-get
    exists and we are root), then a download into `root`. Raises DatasetNotFoundError listing
    what was tried and how to get the data by hand.
    """
    found = _existing(root)
    if found is not None:
        return found
    tried: list[str] = []
    if use_apt:
        if can_use_apt():
            try:
                apt_install()
            except (OSError, subprocess.CalledProcessError) as e:
                tried.append(f"apt-get install {APT_PACKAGE} failed: {e}")
            else:
                found = _existing(root)
                if found is not None:
                    return found
                tried.append(f"apt-get install {APT_PACKAGE} ran but {SYSTEM_DIR} has no files")
        else:
            tried.append("apt-get skipped (not available or not running as root)")
    try:
        download_fashion_mnist(root)
    except Exception as e:  # URLError, timeouts, validation: all end in instructions
        tried.append(f"download from {BASE_URL} into {root} failed: {e}")
    else:
        found = find_fashion_mnist(root)
        if found is not None:
            return found
    raise not_found_error(root, None, "Tried:\n" + "\n".join(f"  - {t}" for t in tried))
