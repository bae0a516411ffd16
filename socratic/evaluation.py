"""Evaluate a saved checkpoint: rebuild its model from the checkpoint's metadata, then measure accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from socratic.data import ImageDataset, TensorLoader, load_dataset
from socratic.engine.checkpoint import CheckpointError, load_checkpoint, load_weights
from socratic.engine.evaluate import evaluate
from socratic.engine.runtime import select_device
from socratic.models import create_model


def load_checkpoint_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint written by socratic train/distill, rebuilt from its `meta`, with its weights
    (on the CPU, in eval mode), and that metadata."""
    meta = load_checkpoint(path).get("meta")
    if not meta or "model_name" not in meta:
        raise CheckpointError(f"{path} has no socratic metadata (model name, classes): "
                              "use checkpoints written by socratic train/distill")
    model = create_model(meta["model_name"], num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                         **meta.get("model_kwargs", {}))
    load_weights(model, path)
    return model.eval(), meta


def checkpoint_dataset(path: str | Path, meta: dict[str, Any], dataset: str | None, root: str | None,
                       split: str) -> ImageDataset:
    """The split of the dataset a checkpoint was trained on (or `dataset`), from `root` or the training run's
    data root; a class count that differs from the checkpoint's is an error."""
    name = dataset or meta["dataset"]
    data = load_dataset(name, root=root or (meta.get("data_root") if name == meta["dataset"] else None), split=split)
    if data.num_classes != meta["num_classes"]:
        raise CheckpointError(f"{path} was trained for {meta['num_classes']} classes, "
                              f"the {split} split of {name} has {data.num_classes}")
    return data


def evaluate_checkpoint(path: str | Path, *, dataset: str | None = None, root: str | None = None,
                        split: str = "test", batch_size: int = 256, device: str = "auto",
                        precision: str = "fp32") -> dict[str, Any]:
    """Top-1/top-5/loss of the checkpoint's student on a dataset split (default: the one it was trained on)."""
    model, meta = load_checkpoint_model(path)
    data = checkpoint_dataset(path, meta, dataset, root, split)
    dev = select_device(device)
    loader = TensorLoader(data, batch_size, shuffle=False, augment=None, device=dev)
    result = evaluate(model.to(dev), loader, dev, precision)
    return {"checkpoint": str(path), "model": meta["model_name"], "split": split, "samples": len(data), **result}
