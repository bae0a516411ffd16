"""`run_stage(stage, cfg)`: check a stage's inputs, build its run and fit it (`socratic dataset-distill STAGE`).

Everything that can fail on bad input -- the output folder, a missing or unfinished earlier stage (named with the
command that makes it), a run folder that exists or is busy, a changed config on --resume -- fails before the
stage's run folder is created.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from socratic.config import ConfigError
from socratic.data.loader import derive_seed
from socratic.distill_data.config import (MKDTConfig, STAGES, mkdt_config_from_dict, mkdt_config_to_dict, percent,
                                          stage_dir, stage_label)
from socratic.distill_data.inputs import (MissingStageError, PretrainingSet, check_same_images, command,
                                          load_pretraining_set, read_tensors, require_file)
from socratic.engine.run import NON_NUMERIC_KEYS, EpochCallback, Run, RunFolder, check_output_writable
from socratic.engine.runtime import setup_run
from socratic.config.loader import resolve_saved

# the sections each stage reads; a change elsewhere does not stop a --resume of that stage
READS = {
    "teacher": ("data", "teacher", "eval"),
    "experts": ("data", "student", "experts"),
    "select": ("data", "student", "experts", "select"),
    "distill": ("data", "student", "experts", "select", "distill"),
    "eval": ("data", "student", "select", "distill", "eval"),
}
SECTIONS = ("data", "teacher", "student", "experts", "select", "distill", "eval")


def stage_folder(stage: str, cfg: MKDTConfig, *, resume: bool = False, overwrite: bool = False,
                 accept_config_changes: bool = False) -> RunFolder:
    """The (unopened) run folder of `stage` for `cfg`."""
    ignore = (*NON_NUMERIC_KEYS, *(s for s in SECTIONS if s not in READS[stage]))

    def read_saved(saved: dict[str, Any]) -> dict[str, Any]:
        return resolve_saved(saved, mkdt_config_from_dict)

    return RunFolder(stage_dir(cfg, stage), mkdt_config_to_dict(cfg), resume=resume, overwrite=overwrite,
                     accept_config_changes=accept_config_changes, defaults=mkdt_config_to_dict(MKDTConfig()),
                     ignore=ignore, read_saved=read_saved)


def _representations(cfg: MKDTConfig, data: PretrainingSet, config_path: str) -> torch.Tensor:
    path = require_file(cfg, "teacher", "representations.pt", "teacher", config_path)
    saved = read_tensors(path)
    check_same_images(path, saved["indices"], data)
    return saved["representations"]


def _experts(cfg: MKDTConfig, config_path: str) -> list[Path]:
    from socratic.distill_data.experts import expert_files

    summary = require_file(cfg, "experts", "summary.json", "experts", config_path)
    files = expert_files(summary.parent)
    if not files:
        raise MissingStageError(f"{summary.parent / 'experts'} has no expert_*.pt: "
                                f"run `{command('experts', config_path)}` --overwrite")
    return files


def _flat_student(cfg: MKDTConfig, data: PretrainingSet, dim: int, experts: list[Path], device: torch.device) -> Any:
    from socratic.distill_data.distill import load_trajectory
    from socratic.distill_data.experts import build_student
    from socratic.distill_data.matching import FlatModel

    flat = FlatModel(build_student(cfg, data.dataset.image_shape[0], dim, 0).to(device))
    saved = load_trajectory(experts[0])
    if saved.shape[1] != flat.size:
        raise ConfigError(f"{experts[0]} holds {saved.shape[1]} parameters but the student ({cfg.student.name}, "
                          f"{cfg.student.kwargs}) has {flat.size}: student.* must be the experts' one")
    if saved.shape[0] < cfg.experts.epochs + 1:
        raise ConfigError(f"{experts[0]} has {saved.shape[0] - 1} epochs, fewer than experts.epochs "
                          f"({cfg.experts.epochs})")
    return flat


def random_subset(n: int, fraction: float, seed: int) -> torch.Tensor:
    """round(fraction * n) distinct indices drawn with `seed` (at least one)."""
    count = max(1, round(fraction * n))
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, 11)))[:count]


def _high_loss(cfg: MKDTConfig, data: PretrainingSet, fraction: float, config_path: str) -> torch.Tensor:
    path = require_file(cfg, "select", "high_loss.pt", "select", config_path)
    saved = read_tensors(path)
    check_same_images(path, saved["pretraining_indices"], data)
    key = percent(fraction)
    if key not in saved["indices"]:
        raise ConfigError(f"{path} has the fractions {sorted(saved['indices'])}, not {key}: add {fraction} to "
                          f"select.fractions and run `{command('select', config_path)} --overwrite`")
    return saved["indices"][key]


def build_stage(stage: str, cfg: MKDTConfig, folder: RunFolder, config_path: str, device: torch.device,
                console: Console | None, epoch_callbacks: Iterable[EpochCallback]) -> Run:
    """The run of `stage` with its inputs loaded (errors for missing inputs come before any data is loaded)."""
    kwargs: dict[str, Any] = {"device": device, "console": console, "epoch_callbacks": epoch_callbacks}
    if stage == "eval" and cfg.eval.source in ("mkdt", "mkdt_random_init"):
        init = "high_loss" if cfg.eval.source == "mkdt" else "random"
        label = stage_label(cfg, "distill", init=init, fraction=cfg.eval.fraction)
        path = require_file(cfg, label, "distilled.pt", "distill", config_path
                            + f" distill.init={init} distill.fraction={cfg.eval.fraction}")
        from socratic.distill_data.evaluation import EvalRun

        data = load_pretraining_set(cfg)
        saved = read_tensors(path)
        lr = cfg.eval.lr if cfg.eval.lr is not None else float(saved["syn_lr"])
        return EvalRun(cfg, folder, saved["images"], saved["targets"], lr, data.dataset.image_shape[0], **kwargs)
    data = load_pretraining_set(cfg)
    if stage == "teacher":
        from socratic.distill_data.teacher import TeacherRun

        return TeacherRun(cfg, folder, data, **kwargs)
    if stage == "eval" and cfg.eval.source == "none":
        from socratic.distill_data.evaluation import EvalRun

        return EvalRun(cfg, folder, None, None, cfg.eval.lr or 0.1, data.dataset.image_shape[0], **kwargs)
    reps = _representations(cfg, data, config_path)
    if stage == "experts":
        from socratic.distill_data.experts import ExpertsRun

        return ExpertsRun(cfg, folder, data, reps, **kwargs)
    if stage == "eval":  # a real subset with its teacher representations
        from socratic.distill_data.evaluation import EvalRun

        if cfg.eval.source == "high_loss":
            idx = _high_loss(cfg, data, cfg.eval.fraction, config_path)
        else:
            idx = random_subset(len(data), cfg.eval.fraction, cfg.seed)
        images = data.normalised()[idx]
        return EvalRun(cfg, folder, images, reps[idx], cfg.eval.lr or 0.1, data.dataset.image_shape[0], **kwargs)
    experts = _experts(cfg, config_path)
    if stage == "distill" and cfg.distill.init == "high_loss":
        init = _high_loss(cfg, data, cfg.distill.fraction, config_path)  # checked before the flat student is built
    flat = _flat_student(cfg, data, reps.shape[1], experts, device)
    if stage == "select":
        from socratic.distill_data.selection import SelectRun

        return SelectRun(cfg, folder, data, reps, experts, flat, **kwargs)
    from socratic.distill_data.distill import DistillRun

    if cfg.distill.init == "random":
        init = random_subset(len(data), cfg.distill.fraction, cfg.seed)
    images = data.normalised()[init]
    return DistillRun(cfg, folder, images, reps[init], init, experts, flat, mean=data.dataset.mean,
                      std=data.dataset.std, **kwargs)


def run_stage(stage: str, cfg: MKDTConfig, *, config_path: str = "CONFIG", resume: bool = False,
              overwrite: bool = False, accept_config_changes: bool = False, console: Console | None = None,
              epoch_callbacks: Iterable[EpochCallback] = ()) -> dict[str, Any]:
    """Run one stage of `cfg` (`STAGES`) in its run folder; returns its summary (also in summary.json).
    `config_path` is how error messages spell the config in the commands they suggest."""
    if stage not in STAGES:
        raise ConfigError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
    check_output_writable(cfg.output_dir)
    folder = stage_folder(stage, cfg, resume=resume, overwrite=overwrite, accept_config_changes=accept_config_changes)
    folder.check()
    device = setup_run(cfg.seed, cfg.runtime.device, cfg.runtime.num_threads, cfg.runtime.deterministic)
    run = build_stage(stage, cfg, folder, config_path, device, console, epoch_callbacks)
    return run.fit()


__all__ = ["READS", "build_stage", "random_subset", "run_stage", "stage_folder"]
