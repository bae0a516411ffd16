"""What the stages read: the pre-training set as tensors, and the files of earlier stages (a missing one is a
`MissingStageError` naming the file and the command that makes it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from socratic.config import ConfigError
from socratic.data import ImageDataset, load_dataset, normalize, stratified_indices
from socratic.distill_data.config import MKDTConfig, source_stage_dir
from socratic.engine.checkpoint import load_checkpoint


class MissingStageError(ConfigError):
    """A stage started before a stage it needs has written its file (the CLI exits 2)."""


@dataclass
class PretrainingSet:
    """The unlabelled pre-training images: uint8 dataset (subset applied) and its indices in the training split."""

    dataset: ImageDataset
    indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.dataset)

    def normalised(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """All images as normalised float32 (N, C, H, W): what the experts, selection and distillation see."""
        return normalize(self.dataset.images, self.dataset.mean, self.dataset.std).to(device)

    def indexed(self) -> ImageDataset:
        """The same images with their position as the label, so a `TensorLoader` yields the indices of its
        batch (to gather the teacher's representations)."""
        d = self.dataset
        return ImageDataset(d.images, torch.arange(len(d)), d.classes, d.mean, d.std, d.name, d.split)


def load_split(cfg: MKDTConfig, split: str) -> ImageDataset:
    d = cfg.data
    return load_dataset(d.name, d.root, split, d.cache_dir, d.download)


def load_pretraining_set(cfg: MKDTConfig) -> PretrainingSet:
    """The training split, reduced to `data.train_subset` (stratified, `data.subset_seed`) when given."""
    train = load_split(cfg, "train")
    subset = cfg.data.train_subset
    if subset is None:
        return PretrainingSet(train, torch.arange(len(train)))
    kwargs = {"fraction": subset} if subset <= 1 else {"count": int(subset)}
    try:
        idx = stratified_indices(train.labels, train.num_classes, seed=cfg.data.subset_seed, **kwargs)
    except ValueError as err:
        raise ConfigError(f"data.train_subset: {err}") from err
    subset_ds = ImageDataset(train.images[idx], train.labels[idx], train.classes, train.mean, train.std, train.name,
                             train.split)
    return PretrainingSet(subset_ds, idx)


def command(stage: str, config_path: str) -> str:
    return f"socratic dataset-distill {stage} {config_path}"


def require_file(cfg: MKDTConfig, label: str, filename: str, stage: str, config_path: str) -> Path:
    """`<earlier stage folder>/<filename>`, or a `MissingStageError` naming it and the command that makes it.

    The earlier stage must also have finished (its summary.json exists): a half-done stage is named with the
    command that continues it."""
    folder = source_stage_dir(cfg, label)
    path = folder / filename
    hint = command(stage, config_path)
    if cfg.source_seed is not None and cfg.source_seed != cfg.seed:
        hint += f" seed={cfg.source_seed}"  # the earlier stage's own seed (later overrides win)
    if not path.exists():
        raise MissingStageError(f"{path} is missing: it is made by the '{stage}' stage; run `{hint}` first")
    if not (folder / "summary.json").exists():
        raise MissingStageError(f"the '{stage}' stage in {folder} has not finished (no summary.json): continue it "
                                f"with `{hint} --resume`")
    return path


def read_tensors(path: Path) -> dict[str, Any]:
    """A stage's file (weights_only: tensors and plain data)."""
    return load_checkpoint(path, map_location="cpu")


def check_same_images(path: Path, saved: torch.Tensor, current: PretrainingSet) -> None:
    """The earlier stage must have used the same pre-training images (data.* unchanged)."""
    if saved.shape != current.indices.shape or not torch.equal(saved, current.indices):
        raise ConfigError(f"{path} was made from other pre-training images ({saved.numel()} images) than this "
                          f"config selects ({len(current)}): data.name/root/train_subset/subset_seed must be the "
                          "ones of the earlier stages")


__all__ = ["MissingStageError", "PretrainingSet", "check_same_images", "command", "load_pretraining_set",
           "load_split", "read_tensors", "require_file"]
