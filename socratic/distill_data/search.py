"""MKDT's distill stage as a kind of `socratic search` trial (`--kind dataset-distill`): a trial is the distill
stage of the base config with the sampled values (e.g. configs/search/mkdt_distill_lrs.yaml over the learning
rates), written to <study>/trial<N>/distill-<init>-<p>pct/seed<seed>, reading the earlier stages from
`source_dir`. The objective is `search.objective` (default: the epoch's mean matching loss, minimised)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from socratic.config import ConfigError
from socratic.distill_data.config import MKDTConfig, mkdt_config_from_dict, stage_dir


def _build(values: dict[str, Any]) -> MKDTConfig:
    cfg = mkdt_config_from_dict(values)
    if cfg.source_dir is None:
        raise ConfigError("a dataset-distill search needs source_dir=<the folder of the earlier stages>, e.g. "
                          "source_dir=runs/mkdt/<name> (trials write their own folders, which hold no teacher or "
                          "experts)")
    return cfg


def _run(cfg: MKDTConfig, *, resume: bool = False, epoch_callbacks: Any = (), **_: Any) -> dict[str, Any]:
    from socratic.distill_data.pipeline import run_stage

    return run_stage("distill", cfg, resume=resume, epoch_callbacks=epoch_callbacks)


def _run_dir(cfg: MKDTConfig) -> Path:
    return stage_dir(cfg, "distill")


def _epochs(cfg: MKDTConfig) -> int:
    return cfg.distill.iterations // cfg.distill.iterations_per_epoch


def dataset_distill_kind() -> dict[str, Any]:
    """The fields of `socratic.search.runner.RunKind` for the distill stage."""
    return {"build": _build, "run": _run, "run_dir": _run_dir, "epochs": _epochs}
