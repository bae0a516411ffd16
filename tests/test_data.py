"""Tests of socratic.data on tiny files written in the real formats (no network, no shared data)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import socratic.data as sd
from socratic.data import (
    BatchAugment,
    DataFormatError,
    DatasetNotFoundError,
    ImageDataset,
    TensorLoader,
    default_augment,
    ensure_fashion_mnist,
    load_dataset,
    normalize,
    stratified_subset,
)
from socratic.data import cache as cache_mod
from socratic.data import fashion_mnist_setup as fm
from socratic.data import readers

# ------------------------------------------------------------------------------------------
# writers for the real formats
# ------------------------------------------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    """IDX: 0x00 0x00 <type 0x08=uint8> <ndim>, big-endian uint32 dims, then the data."""
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()
    if gz:
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_fashion(folder: Path, n_train: int = 30, n_test: int = 20, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        sfx = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", labels, gz)
        out[split] = (images, labels)
    return out


def write_pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(base: Path, per_batch: int = 4, bytes_keys: bool = False) -> dict:
    """torchvision's cifar-10-batches-py: data_batch_1..5, test_batch, batches.meta."""
    folder = base / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    out = {"train": ([], []), "test": ([], [])}
    for fname, split in [(f"data_batch_{i}", "train") for i in range(1, 6)] + [("test_batch", "test")]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        write_pickle(folder / fname, {key("batch_label"): fname, key("data"): data, key("labels"): labels})
        out[split][0].append(data)
        out[split][1].extend(labels)
    write_pickle(folder / "batches.meta", {key("label_names"): names, key("num_vis"): 3072})
    return {s: (np.concatenate(d).reshape(-1, 3, 32, 32), np.array(lbl)) for s, (d, lbl) in out.items()} | {
        "classes": names,
        "folder": folder,
    }


def make_cifar100(base: Path, n: int = 12) -> dict:
    """torchvision's cifar-100-python: train, test, meta with fine/coarse labels."""
    folder = base / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    fine = [f"class_{i:03d}" for i in range(100)]
    out = {}
    for split in ("train", "test"):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 100, n).tolist()
        write_pickle(folder / split, {"data": data, "fine_labels": labels, "coarse_labels": [x // 5 for x in labels]})
        out[split] = (data.reshape(-1, 3, 32, 32), np.array(labels))
    write_pickle(folder / "meta", {"fine_label_names": fine, "coarse_label_names": [f"c{i}" for i in range(20)]})
    out["classes"] = fine
    return out


def make_imagefolder(
    root: Path, counts: dict[str, dict[str, int]], size=(8, 6), mode: str = "RGB", seed: int = 0
) -> dict:
    """root/<split>/<class>/<i>.png with random pixels; returns the arrays per (split, class)."""
    rng = np.random.default_rng(seed)
    arrays: dict[tuple[str, str], list[np.ndarray]] = {}
    for split, per_class in counts.items():
        for cls, n in per_class.items():
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                arr = rng.integers(0, 256, shape, dtype=np.uint8)
                Image.fromarray(arr, mode).save(d / f"{i:04d}.png")
                arrays.setdefault((split, cls), []).append(arr)
    return arrays


def labelled_dataset(labels: list[int] | np.ndarray, num_classes: int, hw=(4, 4), channels: int = 3) -> ImageDataset:
    """An in-memory dataset of random pixels with the given labels (labels identify samples)."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n = len(labels)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, *hw), dtype=torch.uint8, generator=gen)
    classes = [f"c{i}" for i in range(num_classes)]
    return ImageDataset(images, labels, classes, (0.5,) * channels, (0.25,) * channels, "cifar10")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No network, no system dataset folders, no writes outside tmp_path."""

    def no_network(*a, **k):
        raise AssertionError("tests must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system" / "fashion-mnist")
    monkeypatch.setattr(fm, "DEFAULT_ROOT", tmp_path / "default" / "fashion_mnist")
    monkeypatch.setenv("SOCRATIC_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------------------------------
# readers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_gz_and_raw(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = write_idx(tmp_path / "x-idx3-ubyte", arr, gz=gz)
    out = readers.read_idx(p)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable
    raw = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03"  # the real magic number of an image file


def test_read_idx_bigendian_int32(tmp_path):
    arr = np.array([1, -2, 70000], dtype=">i4")
    p = tmp_path / "ints"
    p.write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + arr.tobytes())
    np.testing.assert_array_equal(readers.read_idx(p), [1, -2, 70000])


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"ab", "magic"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"ab", "truncated"),
        (b"\x00\x00", "too short"),
        (gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"ab")[:-6], "gzip"),
    ],
)
def test_read_idx_corrupt(tmp_path, content, fragment):
    p = tmp_path / "bad-idx1-ubyte.gz"
    p.write_bytes(content)
    with pytest.raises(DataFormatError) as e:
        readers.read_idx(p)
    assert str(p) in str(e.value) and fragment in str(e.value)


def test_cifar_pickle_refuses_foreign_globals(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p = tmp_path / "data_batch_1"
    write_pickle(p, {"data": Evil(), "labels": []})
    with pytest.raises(DataFormatError, match="refusing"):
        readers.read_cifar_batch(p)


def test_imagefolder_mismatched_size_names_file(tmp_path):
    make_imagefolder(tmp_path / "f", {"train": {"a": 2, "b": 1}})
    odd = tmp_path / "f" / "train" / "b" / "odd.png"
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(odd)
    with pytest.raises(DataFormatError) as e:
        readers.read_imagefolder(tmp_path / "f" / "train")
    assert str(odd) in str(e.value) and "5x5" in str(e.value)


def test_imagefolder_mixed_gray_and_rgb_becomes_rgb(tmp_path):
    d = tmp_path / "f" / "train"
    (d / "a").mkdir(parents=True)
    (d / "b").mkdir(parents=True)
    gray = np.full((4, 4), 7, np.uint8)
    Image.fromarray(gray, "L").save(d / "a" / "0.png")
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8), "RGB").save(d / "b" / "0.png")
    images, labels, classes = readers.read_imagefolder(d)
    assert images.shape == (2, 3, 4, 4) and (images[0] == 7).all() and (images[1] == 9).all()
    assert classes == ["a", "b"] and labels.tolist() == [0, 1]


# ------------------------------------------------------------------------------------------
# load_dataset per format
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_root(tmp_path, gz):
    ref = make_fashion(tmp_path / "fm", gz=gz)
    for split in ("train", "test", "val"):
        ds = load_dataset("fashion_mnist", root=tmp_path / "fm", split=split, cache_dir=tmp_path / "c")
        images, labels = ref["test" if split == "val" else split]
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(images), 1, 28, 28)
        assert ds.labels.dtype == torch.int64
        np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)
        np.testing.assert_array_equal(ds.labels.numpy(), labels)
        assert ds.classes == sd.FASHION_MNIST_CLASSES and ds.num_classes == 10
        assert ds.image_shape == (1, 28, 28) and len(ds) == len(images)
        assert ds.mean == (0.2860,) and ds.std == (0.3530,)
        assert ds.split == ("test" if split == "val" else split)


def test_fashion_mnist_found_in_system_dir(tmp_path):
    make_fashion(fm.SYSTEM_DIR)
    ds = load_dataset("fashion_mnist", split="test", cache_dir=tmp_path / "c")
    assert len(ds) == 20


@pytest.mark.parametrize("bytes_keys", [False, True])
@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_cifar10_pickles(tmp_path, bytes_keys, point_at):
    ref = make_cifar10(tmp_path / "c10", bytes_keys=bytes_keys)
    root = tmp_path / "c10" if point_at == "parent" else ref["folder"]
    for split in ("train", "test"):
        ds = load_dataset("cifar10", root=root, split=split, cache_dir=tmp_path / "cache")
        images, labels = ref[split]
        assert ds.images.shape == (len(images), 3, 32, 32) and ds.images.dtype == torch.uint8
        assert len(ds) == (20 if split == "train" else 4)
        np.testing.assert_array_equal(ds.images.numpy(), images)
        np.testing.assert_array_equal(ds.labels.numpy(), labels)
        assert ds.classes == ref["classes"]
        assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)


def test_cifar100_pickles(tmp_path):
    ref = make_cifar100(tmp_path / "c100")
    ds = load_dataset("cifar100", root=tmp_path / "c100", split="test", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(ds.images.numpy(), ref["test"][0])
    np.testing.assert_array_equal(ds.labels.numpy(), ref["test"][1])  # fine labels
    assert ds.num_classes == 100 and ds.classes[7] == "class_007"
    assert ds.mean == (0.5071, 0.4867, 0.4408) and ds.std == (0.2675, 0.2565, 0.2761)


def test_imagefolder_rgb(tmp_path):
    counts = {"train": {"zebra": 2, "ant": 3, "mole": 1}, "test": {"ant": 1, "zebra": 2}}
    arrays = make_imagefolder(tmp_path / "imgs", counts)
    ds = load_dataset("imagefolder", root=tmp_path / "imgs", split="train", cache_dir=tmp_path / "c")
    assert ds.classes == ["ant", "mole", "zebra"]  # alphabetical
    assert ds.images.shape == (6, 3, 6, 8) and ds.labels.tolist() == [0, 0, 0, 1, 2, 2]
    expected = np.stack(arrays[("train", "ant")] + arrays[("train", "mole")] + arrays[("train", "zebra")])
    np.testing.assert_array_equal(ds.images.permute(0, 2, 3, 1).numpy(), expected)
    x = expected.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(ds.mean, x.mean(0), atol=1e-9)
    np.testing.assert_allclose(ds.std, x.std(0), atol=1e-9)
    test = load_dataset("imagefolder", root=tmp_path / "imgs", split="val", cache_dir=tmp_path / "c")
    assert test.classes == ds.classes and test.labels.tolist() == [0, 2, 2]  # train's indices
    assert test.mean == ds.mean and test.std == ds.std  # training statistics


def test_imagefolder_gray_and_class_mismatch(tmp_path):
    make_imagefolder(tmp_path / "g", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "c": 1}}, mode="L")
    ds = load_dataset("imagefolder", root=tmp_path / "g", cache_dir=tmp_path / "c")
    assert ds.image_shape == (1, 6, 8) and len(ds.mean) == 1
    with pytest.raises(DataFormatError, match="'c'"):
        load_dataset("imagefolder", root=tmp_path / "g", split="test", cache_dir=tmp_path / "c")


# ------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------


def test_unknown_name_and_split():
    with pytest.raises(ValueError) as e:
        load_dataset("mnist")
    for valid in ("fashion_mnist", "cifar10", "cifar100", "imagefolder"):
        assert valid in str(e.value)
    with pytest.raises(ValueError) as e:
        load_dataset("cifar10", split="dev")
    assert "train" in str(e.value) and "test" in str(e.value)


def test_missing_fashion_mnist_names_every_place(tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(fm, "download_fashion_mnist", lambda root: called.append(root))
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("fashion_mnist", root=tmp_path / "mine", cache_dir=tmp_path / "c")
    assert isinstance(e.value, FileNotFoundError)
    msg = str(e.value)
    assert str(tmp_path / "mine") in msg
    # a root the user names is the only place searched: no silent fallback to another copy
    assert str(fm.SYSTEM_DIR) not in msg.split("To get it")[0]
    assert "apt-get install dataset-fashion-mnist" in msg and "download=True" in msg
    assert called == []  # never downloads without download=True
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setattr(fm, "DEFAULT_ROOT", tmp_path / "default")
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("fashion_mnist", cache_dir=tmp_path / "c")
    for place in (tmp_path / "system", tmp_path / "default"):
        assert str(place) in str(e.value)


def test_fashion_mnist_download_only_when_asked(tmp_path, monkeypatch):
    def fake_download(root):
        make_fashion(Path(root))
        return Path(root)

    monkeypatch.setattr(fm, "download_fashion_mnist", fake_download)
    ds = load_dataset("fashion_mnist", root=tmp_path / "dl", download=True, cache_dir=tmp_path / "c")
    assert len(ds) == 30 and (tmp_path / "dl" / "train-images-idx3-ubyte.gz").is_file()


def test_missing_cifar_and_imagefolder(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("cifar100", root=tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "cifar-100-python") in msg and str(tmp_path / "nowhere") in msg
    assert "cifar-100-python.tar.gz" in msg and "download=True" in msg
    monkeypatch.setitem(__import__("sys").modules, "torchvision", None)  # not importable
    with pytest.raises(DatasetNotFoundError, match="torchvision"):
        load_dataset("cifar10", download=True)
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("imagefolder", root=tmp_path / "imgs", split="test")
    assert str(tmp_path / "imgs" / "test") in str(e.value)
    with pytest.raises(DatasetNotFoundError, match="needs a root.*--root"):
        load_dataset("imagefolder")


def test_cifar_download_goes_through_torchvision(tmp_path, monkeypatch):
    import sys
    import types

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            make_cifar10(Path(root))

    tv = types.ModuleType("torchvision")
    tv.datasets = types.SimpleNamespace(CIFAR10=FakeCIFAR10, CIFAR100=None)
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", tv.datasets)
    with pytest.raises(DatasetNotFoundError):
        load_dataset("cifar10", split="test")  # download=False: never calls torchvision
    assert calls == []
    ds = load_dataset("cifar10", split="test", download=True, cache_dir=tmp_path / "c")
    assert calls == [(str(Path("data") / "cifar10"), False, True)] and len(ds) == 4


# ------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------


def test_cache_is_used_invalidated_and_rebuilt(tmp_path, monkeypatch):
    make_fashion(tmp_path / "fm")
    cdir = tmp_path / "c"
    first = load_dataset("fashion_mnist", root=tmp_path / "fm", cache_dir=cdir)
    entries = list(cdir.glob("fashion_mnist-train-*.pt"))
    assert len(entries) == 1 and not list(cdir.glob("*.tmp"))

    real_read = readers.read_idx

    def boom(path):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(readers, "read_idx", boom)
    again = load_dataset("fashion_mnist", root=tmp_path / "fm", cache_dir=cdir)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert again.classes == first.classes and again.mean == first.mean

    # Corrupt entry: warned about, deleted and rebuilt from the source files.
    monkeypatch.setattr(readers, "read_idx", real_read)
    entries[0].write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="corrupt cache"):
        rebuilt = load_dataset("fashion_mnist", root=tmp_path / "fm", cache_dir=cdir)
    assert torch.equal(rebuilt.images, first.images)
    assert torch.load(entries[0], weights_only=True)["images"].shape == first.images.shape

    # A changed source file gives a new key (new decode), not the stale pixels.
    make_fashion(tmp_path / "fm", seed=5)
    os.utime(tmp_path / "fm" / "train-images-idx3-ubyte.gz", ns=(1, 1))
    changed = load_dataset("fashion_mnist", root=tmp_path / "fm", cache_dir=cdir)
    assert not torch.equal(changed.images, first.images)
    assert len(list(cdir.glob("fashion_mnist-train-*.pt"))) == 2


def test_cache_dir_resolution(tmp_path, monkeypatch):
    assert cache_mod.resolve_cache_dir(tmp_path / "x") == tmp_path / "x"
    assert cache_mod.resolve_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("SOCRATIC_CACHE")
    assert cache_mod.resolve_cache_dir() == Path.home() / ".cache" / "socratic"
    monkeypatch.setenv("SOCRATIC_CACHE", str(tmp_path / "env-cache"))
    make_fashion(tmp_path / "fm")
    load_dataset("fashion_mnist", root=tmp_path / "fm", split="test")
    assert list((tmp_path / "env-cache").glob("fashion_mnist-test-*.pt"))


def test_imagefolder_cache_keeps_stats(tmp_path, monkeypatch):
    make_imagefolder(tmp_path / "imgs", {"train": {"a": 3, "b": 2}, "test": {"a": 1, "b": 1}})
    a = load_dataset("imagefolder", root=tmp_path / "imgs", split="test", cache_dir=tmp_path / "c")
    monkeypatch.setattr(readers, "read_imagefolder", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    b = load_dataset("imagefolder", root=tmp_path / "imgs", split="test", cache_dir=tmp_path / "c")
    t = load_dataset("imagefolder", root=tmp_path / "imgs", split="train", cache_dir=tmp_path / "c")
    assert a.mean == b.mean == t.mean and a.std == b.std == t.std
    assert torch.equal(a.images, b.images)


# ------------------------------------------------------------------------------------------
# normalisation constants
# ------------------------------------------------------------------------------------------


def test_normalization_constants():
    assert sd.normalization("fashion_mnist") == ((0.2860,), (0.3530,))
    assert sd.normalization("cifar10") == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert sd.normalization("cifar100") == ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    with pytest.raises(ValueError):
        sd.normalization("imagefolder")


def test_normalize_formula():
    x = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)  # (1, 2, 1, 2)
    out = normalize(x, (0.5, 0.2), (0.25, 0.1))
    assert out.dtype == torch.float32
    expected = torch.tensor([[[[-2.0, 2.0]], [[0.0, 2.0]]]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(normalize(x.float() / 255, (0.5, 0.2), (0.25, 0.1)), expected)


# ------------------------------------------------------------------------------------------
# stratified subset
# ------------------------------------------------------------------------------------------


def test_stratified_subset_proportions_and_determinism():
    labels = [0] * 60 + [1] * 30 + [2] * 10
    ds = labelled_dataset(np.random.default_rng(0).permutation(labels), 3)
    sub = stratified_subset(ds, fraction=0.5, seed=3)
    assert sub.class_counts().tolist() == [30, 15, 5]
    sub2 = stratified_subset(ds, count=17, seed=3)
    assert len(sub2) == 17 and sub2.class_counts().tolist() == [10, 5, 2]
    tiny = stratified_subset(ds, count=3)
    assert tiny.class_counts().tolist() == [1, 1, 1]
    again = stratified_subset(ds, fraction=0.5, seed=3)
    assert torch.equal(sub.images, again.images) and torch.equal(sub.labels, again.labels)
    other = stratified_subset(ds, fraction=0.5, seed=4)
    assert not torch.equal(sub.images, other.images)
    assert sub.classes == ds.classes and sub.mean == ds.mean and sub.name == ds.name
    assert len(stratified_subset(ds, fraction=1.0)) == 100


@pytest.mark.parametrize(
    "kwargs, shown",
    [({"fraction": 0.0}, "0.0"), ({"fraction": 1.5}, "1.5"), ({"count": 2}, "2"), ({"count": 101}, "101"),
     ({"fraction": -0.1}, "-0.1")],
)
def test_stratified_subset_bad_values(kwargs, shown):
    ds = labelled_dataset([0] * 60 + [1] * 30 + [2] * 10, 3)
    with pytest.raises(ValueError) as e:
        stratified_subset(ds, **kwargs)
    assert shown in str(e.value)
    with pytest.raises(ValueError):
        stratified_subset(ds)


# ------------------------------------------------------------------------------------------
# augmentation
# ------------------------------------------------------------------------------------------


def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img moved by (dy, dx) with zero fill: out[y, x] = img[y + dy, x + dx]."""
    c, h, w = img.shape
    out = torch.zeros_like(img)
    ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
    yd, xd = slice(max(0, dy), min(h, h + dy)), slice(max(0, dx), min(w, w + dx))
    out[:, ys, xs] = img[:, yd, xd]
    return out


def test_augment_crops_are_zero_filled_shifts_and_flips_mirror():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)  # no zeros inside
    out = BatchAugment(crop_padding=2, hflip=True)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    seen_flip, seen_shift = set(), set()
    for i in range(len(x)):
        matches = [
            (dy, dx, flip)
            for flip in (False, True)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(out[i], _shifted(x[i].flip(-1) if flip else x[i], dy, dx))
        ]
        assert matches, f"sample {i} is not a zero-filled shift (optionally mirrored) of its input"
        seen_flip.add(matches[0][2])
        seen_shift.add(matches[0][:2])
    assert seen_flip == {False, True} and len(seen_shift) > 5


def test_augment_flip_only_and_float_and_determinism():
    x = torch.rand(32, 1, 5, 7, generator=torch.Generator().manual_seed(0))
    aug = BatchAugment(crop_padding=0, hflip=True)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32
    flipped = [torch.equal(o, s.flip(-1)) for o, s in zip(out, x)]
    same = [torch.equal(o, s) for o, s in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)
    crop = BatchAugment(4)
    y = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    a = crop(y, torch.Generator().manual_seed(7))
    b = crop(y, torch.Generator().manual_seed(7))
    c = crop(y, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(BatchAugment(0, hflip=False)(y, torch.Generator()), y)


def test_default_augment():
    assert (default_augment("cifar10").crop_padding, default_augment("cifar10").hflip) == (4, True)
    assert default_augment("cifar100").crop_padding == 4 and default_augment("imagefolder").hflip
    assert (default_augment("fashion_mnist").crop_padding, default_augment("fashion_mnist").hflip) == (2, True)
    with pytest.raises(ValueError):
        default_augment("svhn")


# ------------------------------------------------------------------------------------------
# loader
# ------------------------------------------------------------------------------------------


def _epoch(loader: TensorLoader) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    xs, ys = zip(*list(loader))
    return list(xs), list(ys)


def test_loader_each_sample_once_and_normalised():
    ds = labelled_dataset(np.arange(23), 23)
    loader = TensorLoader(ds, 5, shuffle=True, augment=None, seed=0)
    assert len(loader) == 5
    xs, ys = _epoch(loader)
    assert [len(y) for y in ys] == [5, 5, 5, 5, 3]
    y = torch.cat(ys)
    assert y.dtype == torch.int64 and sorted(y.tolist()) == list(range(23))
    assert y.tolist() != list(range(23))  # shuffled
    x = torch.cat(xs)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, normalize(ds.images[y], ds.mean, ds.std))
    dl = TensorLoader(ds, 5, shuffle=False, drop_last=True)
    assert len(dl) == 4 and torch.cat(_epoch(dl)[1]).tolist() == list(range(20))


def test_loader_epochs_are_reproducible():
    ds = labelled_dataset(np.arange(40) % 4, 4, hw=(8, 8))
    make = lambda seed=0: TensorLoader(ds, 8, shuffle=True, augment=BatchAugment(2), seed=seed)  # noqa: E731
    a, b = make(), make()
    a.set_epoch(3)
    b.set_epoch(3)
    xa, ya = _epoch(a)
    xb, yb = _epoch(b)
    assert all(torch.equal(p, q) for p, q in zip(xa, xb)) and all(torch.equal(p, q) for p, q in zip(ya, yb))
    b.set_epoch(4)
    assert not torch.equal(torch.cat(_epoch(b)[0]), torch.cat(xa))
    # Iterating without set_epoch advances the epoch; set_epoch(0) replays the first one.
    c = make()
    first, second = torch.cat(_epoch(c)[0]), torch.cat(_epoch(c)[0])
    assert not torch.equal(first, second)
    c.set_epoch(0)
    assert torch.equal(torch.cat(_epoch(c)[0]), first)
    assert not torch.equal(torch.cat(_epoch(make(seed=1))[0]), first)


def test_loader_rank_sharding_partitions_the_permutation():
    ds = labelled_dataset(np.arange(10), 10)
    loaders = [TensorLoader(ds, 3, shuffle=True, seed=5, rank=r, world_size=3) for r in range(3)]
    for ld in loaders:
        ld.set_epoch(2)
    per_rank = [torch.cat(_epoch(ld)[1]) for ld in loaders]
    assert {len(ld) for ld in loaders} == {2} and [len(p) for p in per_rank] == [4, 4, 4]
    single = TensorLoader(ds, 3, shuffle=True, seed=5)
    perm = single.indices(2)
    assert torch.equal(torch.cat(per_rank), torch.cat([perm, perm[:2]]))  # padded by wrapping
    assert set(torch.cat(per_rank).tolist()) == set(range(10))


def test_loader_channels_last_and_validation():
    ds = labelled_dataset(np.arange(6) % 2, 2, hw=(4, 4))
    threads = torch.get_num_threads()
    x, y = next(iter(TensorLoader(ds, 4, channels_last=True, pin_memory=True, prep_threads=threads + 1)))
    assert x.is_contiguous(memory_format=torch.channels_last) and x.shape == (4, 3, 4, 4)
    assert torch.get_num_threads() == threads  # restored before the batch is handed out
    with pytest.raises(ValueError):
        TensorLoader(ds, 0)
    with pytest.raises(ValueError):
        TensorLoader(ds, 2, rank=2, world_size=2)


# ------------------------------------------------------------------------------------------
# ensure_fashion_mnist
# ------------------------------------------------------------------------------------------


@pytest.fixture
def fm_calls(monkeypatch):
    calls: list[str] = []

    def apt():
        calls.append("apt")
        make_fashion(fm.SYSTEM_DIR)

    def download(root):
        calls.append("download")
        make_fashion(Path(root))
        return Path(root)

    monkeypatch.setattr(fm, "apt_install", apt)
    monkeypatch.setattr(fm, "download_fashion_mnist", download)
    return calls


def test_ensure_uses_existing_files(tmp_path, fm_calls, monkeypatch):
    monkeypatch.setattr(fm, "can_use_apt", lambda: True)
    make_fashion(tmp_path / "root")
    assert ensure_fashion_mnist(tmp_path / "root") == tmp_path / "root"
    make_fashion(fm.SYSTEM_DIR)
    assert ensure_fashion_mnist(tmp_path / "other") == fm.SYSTEM_DIR
    assert fm_calls == []


def test_ensure_prefers_apt_when_root(tmp_path, fm_calls, monkeypatch):
    monkeypatch.setattr(fm, "can_use_apt", lambda: True)
    assert ensure_fashion_mnist(tmp_path / "root") == fm.SYSTEM_DIR
    assert fm_calls == ["apt"]


@pytest.mark.parametrize("apt_available, use_apt", [(False, True), (True, False)])
def test_ensure_downloads_without_apt(tmp_path, fm_calls, monkeypatch, apt_available, use_apt):
    monkeypatch.setattr(fm, "can_use_apt", lambda: apt_available)
    assert ensure_fashion_mnist(tmp_path / "root", use_apt=use_apt) == tmp_path / "root"
    assert fm_calls == ["download"]


def test_ensure_fails_with_instructions(tmp_path, monkeypatch):
    def failing_apt():
        raise OSError("apt exploded")

    def failing_download(root):
        raise OSError("no internet")

    monkeypatch.setattr(fm, "can_use_apt", lambda: True)
    monkeypatch.setattr(fm, "apt_install", failing_apt)
    monkeypatch.setattr(fm, "download_fashion_mnist", failing_download)
    with pytest.raises(DatasetNotFoundError) as e:
        ensure_fashion_mnist(tmp_path / "root")
    msg = str(e.value)
    assert str(tmp_path / "root") in msg and str(fm.SYSTEM_DIR) in msg
    assert "apt exploded" in msg and "no internet" in msg and "apt-get install dataset-fashion-mnist" in msg


def test_download_fashion_mnist_validates(tmp_path, monkeypatch):
    src = tmp_path / "mirror"
    make_fashion(src)
    fetched = []

    def fake_fetch(url, dest, timeout=60.0):
        fetched.append(url)
        dest.write_bytes((src / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(fm, "_fetch", fake_fetch)
    monkeypatch.setattr(fm, "EXPECTED_COUNTS", {"train": 30, "test": 20})
    assert fm.download_fashion_mnist(tmp_path / "dl") == tmp_path / "dl"
    assert len(fetched) == 4 and all(u.startswith(fm.BASE_URL) for u in fetched)
    monkeypatch.setattr(fm, "EXPECTED_COUNTS", {"train": 60000, "test": 10000})
    with pytest.raises(OSError, match="expected 60000"):
        fm.download_fashion_mnist(tmp_path / "dl")
