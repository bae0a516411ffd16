"""Shared fixtures: tiny datasets written in the real on-disk formats, so no test touches the network."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array in the IDX format (magic 0x0000 08 <ndim>, big-endian sizes), gzipped."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def learnable_images(count: int, seed: int, num_classes: int = 10, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Noise images with a bright square whose position encodes the class: easy but not trivial."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % num_classes
    rng.shuffle(labels)
    images = rng.integers(0, 80, size=(count, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, 2 + row * 8: 8 + row * 8, 2 + col * 6: 8 + col * 6] = 230
    return images, labels.astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Fashion-MNIST-format folder: 400 train and 200 test 28x28 images of 10 classes."""
    root = tmp_path_factory.mktemp("fashion")
    for split, count, seed in (("train", 400, 0), ("t10k", 200, 1)):
        images, labels = learnable_images(count, seed)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture()
def run_config(tiny_fashion: Path, tmp_path: Path) -> dict:
    """Plain-data config of a fast run on the tiny dataset (tests copy and change it)."""
    return {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "data": {"name": "fashion_mnist", "root": str(tiny_fashion), "batch_size": 50, "eval_batch_size": 100,
                 "cache_dir": str(tmp_path / "cache")},
        "student": {"name": "resnet8"},
        "method": {"name": "ce"},
        "optim": {"epochs": 2, "lr": 0.05, "schedule": "cosine"},
        "runtime": {"device": "cpu", "progress": False, "deterministic": True},
    }


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded-dataset caches of the tests go to a temporary folder, never to ~/.cache/socratic."""
    monkeypatch.setenv("SOCRATIC_CACHE", str(tmp_path_factory.getbasetemp() / "socratic-cache"))


@pytest.fixture()
def one_torch_thread() -> None:
    """One torch thread for tests of tiny models: on 2 shared cores, two threads mostly wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def stopped_and_resumed():
    """`run(config, epoch, step) -> (full_dir, cut_dir)`: the classification run of `config` once uninterrupted
    (name `full`) and once stopped by an exception after optimiser step `step` of `epoch`, then resumed (`cut`)."""
    from socratic.config import config_from_dict
    from socratic.experiment import run_dir_for, run_experiment

    class Stopped(Exception):
        pass

    def stop_at(epoch: int, step: int):
        def callback(e: int, s: int) -> None:
            if (e, s) == (epoch, step):
                raise Stopped

        return callback

    def run(config: dict, epoch: int, step: int) -> tuple[Path, Path]:
        full, cut = (config_from_dict({**config, "name": name}) for name in ("full", "cut"))
        run_experiment(full)
        with pytest.raises(Stopped):
            run_experiment(cut, callbacks=[stop_at(epoch, step)])
        run_experiment(cut, resume=True)
        return run_dir_for(full), run_dir_for(cut)

    return run


class MethodRuns:
    """A one-epoch run of a method on 100 tiny images with seeded resnet8 teachers: `config(method, teachers=1,
    **sections)` is its config (plain data); calling it runs that config through the command line (`socratic
    distill`) once per variant (name -> overrides; default `plain` and `da`, DA at prob 1), each exiting 0, and
    returns {variant: run_dir}."""

    def __init__(self, run_config: dict, tmp_path: Path) -> None:
        self.run_config, self.tmp_path = run_config, tmp_path

    def config(self, method: dict, teachers: int = 1, **sections) -> dict:
        from socratic.engine.checkpoint import save_checkpoint
        from socratic.models import create_model

        paths = []
        for i in range(teachers):
            path = self.tmp_path / f"teacher{i}.pt"
            if not path.exists():
                torch.manual_seed(5 + i)
                save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                                 "meta": {"model_name": "resnet8", "num_classes": 10}}, path)
            paths.append({"name": "resnet8", "checkpoint": str(path)})
        base = self.run_config
        return {**base, "name": method["name"], "teachers": paths, "method": method,
                "data": {**base["data"], "train_subset": 100, "batch_size": 25},
                "optim": {**base["optim"], "epochs": 1},
                "runtime": {**base["runtime"], "tensorboard": False, "num_threads": 1}, **sections}

    def __call__(self, method: dict, teachers: int = 1, variants: dict[str, list[str]] | None = None,
                 **sections) -> dict:
        import yaml

        from socratic.cli import main
        from socratic.config import config_from_dict
        from socratic.experiment import run_dir_for

        config = self.config(method, teachers, **sections)
        path = self.tmp_path / f"{config['name']}.yaml"
        path.write_text(yaml.safe_dump(config))
        variants = {"plain": [], "da": ["da.enabled=true", "da.prob=1.0"]} if variants is None else variants
        dirs = {}
        for variant, overrides in variants.items():
            name = f"{config['name']}_{variant}"
            assert main(["distill", str(path), f"name={name}", *overrides]) == 0, variant
            dirs[variant] = run_dir_for(config_from_dict({**config, "name": name}))
        return dirs


@pytest.fixture()
def method_cli_runs(run_config: dict, tmp_path: Path) -> MethodRuns:
    """Tiny CLI runs of a method with and without DA (`MethodRuns`), shared by the method tests."""
    return MethodRuns(run_config, tmp_path)
