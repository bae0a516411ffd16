"""From a validated config to a finished run: data, models, teachers, distiller, run folder, trainer.

Everything that can fail on bad input (an unwritable output_dir first, then data, models, teacher checkpoints)
is checked before the run folder is created, so a bad config never leaves a half-written run behind. The run
folder itself (lock, resume checks, files) is `socratic.engine.run.RunFolder`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import socratic
from socratic.config import ConfigError, ExperimentConfig, config_to_dict, resolve_saved
from socratic.config.schema import ModelConfig
from socratic.data import ImageDataset, TensorLoader, build_augment, load_dataset, stratified_subset
from socratic.distillers import Distiller, create_distiller
from socratic.engine import distributed
from socratic.engine.checkpoint import CheckpointError, load_weights
from socratic.engine.run import RunFolder, check_output_writable
from socratic.engine.run import run_dir_for as _run_dir
from socratic.engine.runtime import resolve_precision, setup_run
from socratic.engine.teacher_cache import (TeacherCache, cache_root, numerics_description, stream_description,
                                           teacher_description)
from socratic.engine.trainer import Augmentation, EpochCallback, StepCallback, Trainer
from socratic.models import create_model
from socratic.registry import METHODS


@dataclass
class Datasets:
    train: ImageDataset
    test: ImageDataset


def load_datasets(cfg: ExperimentConfig) -> Datasets:
    """The train (optionally a stratified subset) and test splits named by `cfg.data`."""
    data = cfg.data
    kwargs = dict(root=data.root, cache_dir=data.cache_dir, download=data.download,
                  allow_empty_classes=data.allow_empty_classes, skip_unreadable=data.skip_unreadable)
    train = load_dataset(data.name, split="train", **kwargs)
    test = load_dataset(data.name, split="test", **kwargs)
    if data.train_subset is not None:
        subset = data.train_subset
        if subset <= 1:
            train = stratified_subset(train, fraction=subset, seed=data.subset_seed)
        else:
            train = stratified_subset(train, count=int(subset), seed=data.subset_seed)
    return Datasets(train, test)


def make_loaders(cfg: ExperimentConfig, datasets: Datasets, device: torch.device, rank: int = 0,
                 world_size: int = 1, with_indices: bool = False) -> tuple[TensorLoader, TensorLoader]:
    """Train and test loaders; with world_size > 1 each takes rank's shard (data.batch_size is per process).
    `with_indices`: the train loader also yields each batch's dataset indices (a method registered with
    `sample_indices=True`, e.g. CRD)."""
    data = cfg.data
    augment = build_augment(data.augment)
    common = dict(device=device, channels_last=cfg.runtime.channels_last, rank=rank, world_size=world_size)
    train = TensorLoader(datasets.train, data.batch_size, shuffle=True, augment=augment, seed=cfg.seed,
                         with_indices=with_indices, **common)
    test = TensorLoader(datasets.test, data.eval_batch_size, shuffle=False, augment=None, seed=cfg.seed, **common)
    return train, test


def build_model(model_cfg: ModelConfig, num_classes: int, in_channels: int, key: str = "student") -> nn.Module:
    """Create the model a config entry names; an unknown name or bad kwargs is a ConfigError naming `key`."""
    try:
        return create_model(model_cfg.name, num_classes=num_classes, in_channels=in_channels, **model_cfg.kwargs)
    except ValueError as err:
        raise ConfigError(f"{key}.name: {err}") from err
    except TypeError as err:
        raise ConfigError(f"{key}.kwargs: {model_cfg.kwargs} do not fit '{model_cfg.name}' ({err})") from err


def load_teacher(model_cfg: ModelConfig, num_classes: int, in_channels: int, index: int = 0) -> nn.Module:
    """Build a teacher and load its checkpoint, refusing one made for another model or class count."""
    if not model_cfg.checkpoint:
        raise ConfigError(f"teachers.{index}.checkpoint is required")
    teacher = build_model(model_cfg, num_classes, in_channels, key=f"teachers.{index}")
    role = f"teachers.{index} ({model_cfg.name})"
    meta = load_weights(teacher, model_cfg.checkpoint, role=role)
    if meta.get("num_classes") not in (None, num_classes):
        raise CheckpointError(
            f"{role}: checkpoint {model_cfg.checkpoint} was trained for {meta['num_classes']} classes "
            f"but the dataset has {num_classes}"
        )
    if meta.get("model_name") not in (None, model_cfg.name):
        raise CheckpointError(
            f"{role}: checkpoint {model_cfg.checkpoint} holds a '{meta['model_name']}', not a '{model_cfg.name}'"
        )
    return teacher.eval()


def build_distiller(cfg: ExperimentConfig, num_classes: int, in_channels: int) -> Distiller:
    """The method of `cfg.method` around the student and the loaded teachers (each checked against the
    dataset's class count, so a pool always agrees)."""
    student = build_model(cfg.student, num_classes, in_channels)
    teachers = [load_teacher(t, num_classes, in_channels, i) for i, t in enumerate(cfg.teachers)]
    try:
        return create_distiller(cfg.method, student, teachers)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def build_augmentation(cfg: ExperimentConfig, dataset: ImageDataset) -> Augmentation | None:
    """The `da` section as a batch transform (None when disabled); clamping uses the loader's mean/std."""
    if not cfg.da.enabled:  # the loader checked that the method has targets (teachers, or DML's peers)
        return None
    from socratic.augment import DisagreementAugmentation

    try:
        return DisagreementAugmentation.from_config(cfg.da, mean=dataset.mean, std=dataset.std)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def build_teacher_cache(cfg: ExperimentConfig, distiller: Distiller, loader: TensorLoader, device: torch.device
                        ) -> TeacherCache | None:
    """The `teacher_cache` section as the run's `TeacherCache` (None when off); a method that reads its teachers
    in a way the cache cannot replay, or a top-k that keeps every class, is a ConfigError."""
    section = cfg.teacher_cache
    if not section.enabled:
        return None
    fields = distiller.teacher_cache_fields()
    if fields is None:
        able = [e.name for e in METHODS.entries()
                if getattr(e.factory, "teacher_cache_fields", None) is not Distiller.teacher_cache_fields]
        raise ConfigError(f"teacher_cache.enabled: method.name '{cfg.method.name}' reads its teachers' outputs in a "
                          f"way the teacher-output cache does not replay; the methods that use it: "
                          f"{', '.join(sorted(able))} (or set teacher_cache.enabled=false)")
    classes = loader.dataset.num_classes
    if section.topk is not None and section.topk >= classes:
        raise ConfigError(f"teacher_cache.topk={section.topk} keeps every logit of a {classes}-class dataset: use "
                          f"null (exact) or a value below {classes}")
    dataset = loader.dataset
    augment = config_to_dict(cfg)["data"]["augment"]
    stream = stream_description(dataset.images, dataset.labels, dataset.mean, dataset.std, augment, seed=loader.seed,
                                batch_size=loader.batch_size, shuffle=loader.shuffle, drop_last=loader.drop_last,
                                rank=loader.rank, world_size=loader.world_size, channels_last=loader.channels_last)
    numerics = numerics_description(device, resolve_precision(device, cfg.runtime.precision),
                                    cfg.runtime.deterministic)
    teachers = [teacher_description(t.name, t.kwargs, t.checkpoint) for t in cfg.teachers]
    return TeacherCache(cache_root(section.dir), stream, numerics, teachers, fields, topk=section.topk)


def run_dir_for(cfg: ExperimentConfig) -> Path:
    """`<output_dir>/<name>/seed<seed>` of this config."""
    return _run_dir(cfg.output_dir, cfg.name, cfg.seed)


def checkpoint_meta(cfg: ExperimentConfig, dataset: ImageDataset, device: torch.device) -> dict[str, Any]:
    """What a checkpoint must remember to be rebuilt and evaluated later (`socratic evaluate`), and the precision
    the run resolved `runtime.precision` to on this machine."""
    return {
        "precision": resolve_precision(device, cfg.runtime.precision),
        "model_name": cfg.student.name,
        "model_kwargs": dict(cfg.student.kwargs),
        "num_classes": dataset.num_classes,
        "in_channels": dataset.image_shape[0],
        "image_shape": list(dataset.image_shape),
        "dataset": cfg.data.name,
        "data_root": cfg.data.root,
        "classes": list(dataset.classes),
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "socratic_version": socratic.__version__,
    }


def run_folder(cfg: ExperimentConfig, *, resume: bool = False, overwrite: bool = False,
               accept_config_changes: bool = False) -> RunFolder:
    """The run folder of `cfg` (not yet opened): on resume every key but the `NON_NUMERIC_KEYS` must match."""
    return RunFolder(run_dir_for(cfg), config_to_dict(cfg), resume=resume, overwrite=overwrite,
                     accept_config_changes=accept_config_changes, read_saved=resolve_saved,
                     defaults=config_to_dict(ExperimentConfig()))  # a section added since the run has its defaults


def prepare_run_dir(cfg: ExperimentConfig, *, resume: bool, overwrite: bool) -> Path:
    """Create (or check, on resume) the run folder of `cfg` and return its path; the lock is released again
    (a run holds it through `Trainer.fit`)."""
    with run_folder(cfg, resume=resume, overwrite=overwrite) as folder:
        return folder.path


def run_experiment(cfg: ExperimentConfig, *, resume: bool = False, overwrite: bool = False,
                   callbacks: Iterable[StepCallback] = (), epoch_callbacks: Iterable[EpochCallback] = (),
                   accept_config_changes: bool = False) -> dict[str, Any]:
    """Train (or distil) as `cfg` says and return the run summary.

    Started by torchrun (WORLD_SIZE > 1), the process joins the process group, trains its shard with DDP
    and only rank 0 writes the run folder (docs/distributed.md); every rank returns the same summary.
    `epoch_callbacks` get (epoch, metrics) after each epoch (e.g. to report to a hyperparameter search).
    `accept_config_changes` lets a resumed run continue with a config whose numerics keys changed (recorded in
    the run folder's config_changes.jsonl).
    """
    with contextlib.ExitStack() as stack:
        try:
            world, dist_device = stack.enter_context(distributed.session(cfg.runtime.device))
        except ValueError as err:  # a device this (torchrun) process cannot use, or a broken torchrun environment
            raise ConfigError(str(err)) from err
        folder = run_folder(cfg, resume=resume, overwrite=overwrite, accept_config_changes=accept_config_changes)
        return _run(cfg, world, dist_device, folder, callbacks=callbacks, epoch_callbacks=epoch_callbacks)


def _run(cfg: ExperimentConfig, world: distributed.DistInfo, dist_device: torch.device | None, folder: RunFolder, *,
         callbacks: Iterable[StepCallback], epoch_callbacks: Iterable[EpochCallback]) -> dict[str, Any]:
    error: BaseException | None = None
    try:
        if world.is_main:  # before any data is loaded: a folder we cannot write, a busy folder, an existing run
            check_output_writable(cfg.output_dir)  # or a changed config on resume fail now, not after the loading
            folder.check()
        # The same seed on every rank: identical model init and a shared global RNG stream (DA's coin flips).
        device = setup_run(cfg.seed, cfg.runtime.device, cfg.runtime.num_threads, cfg.runtime.deterministic)
        device = dist_device or device  # under torchrun: this rank's device
        if world.enabled and cfg.runtime.sync_bn and device.type != "cuda":
            raise ConfigError("runtime.sync_bn needs CUDA devices (torch's SyncBatchNorm refuses CPU tensors): "
                              "set runtime.sync_bn=false for a CPU run")
        datasets = load_datasets(cfg)
        in_channels = datasets.train.image_shape[0]
        distiller = build_distiller(cfg, datasets.train.num_classes, in_channels)
        with_indices = bool(METHODS.get(cfg.method.name).meta.get("sample_indices", False))
        if with_indices and world.enabled:
            raise ConfigError(f"method.name '{cfg.method.name}' keeps a memory bank updated in place by each batch, "
                              "which is not kept in step across torchrun ranks: run it in one process")
        try:
            distiller.bind_train_set(datasets.train.labels)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        augmentation = build_augmentation(cfg, datasets.train)
        if augmentation is not None and cfg.da.target == "weighted":  # DA against the weighted teacher ensemble
            augmentation.teacher_weights = distiller.current_teacher_weights
        train_loader, test_loader = make_loaders(cfg, datasets, device, world.rank, world.world_size, with_indices)
        teacher_cache = build_teacher_cache(cfg, distiller, train_loader, device)
    except Exception as err:  # noqa: BLE001 - raised on every rank below
        error = err
    distributed.raise_if_any_failed(error)  # a bad config or a missing file stops every rank, not just one
    # Trainer.fit: rank 0 alone locks and makes (or checks) the run folder; its error is raised on every rank.
    trainer = Trainer(distiller, train_loader, test_loader, cfg, folder, device,
                      meta=checkpoint_meta(cfg, datasets.train, device), callbacks=callbacks,
                      augmentation=augmentation, epoch_callbacks=epoch_callbacks, teacher_cache=teacher_cache)
    return trainer.fit()
