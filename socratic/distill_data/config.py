"""The typed config of `socratic dataset-distill STAGE CONFIG` (MKDT), and where each stage's run folder is.

One config describes the whole pipeline; each stage reads its own section (docs/methods/mkdt.md lists the keys).
Loading is the project's config machinery (`socratic.config.loader`): unknown keys and wrong types are a
`ConfigError` naming the dotted key, and `key.sub=value` overrides work as for every other command.

Run folders: stage S of config `name` lives in ``<output_dir>/<name>/<S label>/seed<seed>`` (`stage_dir`), with
labels ``teacher``, ``experts``, ``select``, ``distill-<init>-<p>pct`` and ``eval-<source>-<p>pct`` (``eval-none``).
A stage reads the stages before it from ``<source_dir or output_dir/name>/<label>/seed<source_seed or seed>``
(`source_stage_dir`), so that e.g. three evaluation seeds share one distilled set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from socratic.config import ConfigError, OptimConfig, RuntimeConfig, SearchConfig
from socratic.config.loader import (apply_overrides, build_dataclass, check_choice, check_non_negative,
                                    check_positive, read_yaml)
from socratic.config.schema import component
from socratic.engine.run import run_dir_for
from socratic.registry import AUGMENTATIONS, DATASETS, MODELS, Options

STAGES = ("teacher", "experts", "select", "distill", "eval")
OBJECTIVES = ("barlow_twins", "simclr")
INITS = ("high_loss", "random")
SOURCES = ("mkdt", "mkdt_random_init", "high_loss", "random", "none")
META_GRADIENTS = ("recompute", "unrolled")  # socratic.distill_data.matching (which needs torch)


@dataclass
class MKDTDataConfig:
    """The unlabelled pre-training set (the training split, optionally a stratified subset) and, for the linear
    probes, the same dataset's full training split (labels) and test split."""

    name: str = "cifar10"  # a registered dataset (socratic.registry.DATASETS)
    root: str | None = None
    train_subset: float | None = None  # fraction in (0, 1] or a count > 1 of training images (stratified)
    subset_seed: int = 0
    eval_batch_size: int = 500  # forward passes without gradients (representations, features)
    augment: Options = component(AUGMENTATIONS, "ssl_views")  # the teacher's two views
    download: bool = False
    cache_dir: str | None = None


@dataclass
class NetConfig:
    """A registered model and its constructor arguments."""

    name: str = "convnet"
    kwargs: dict = field(default_factory=dict)


def _teacher_optim() -> OptimConfig:
    return OptimConfig(epochs=800, optimizer="sgd", lr=0.3, momentum=0.9, weight_decay=1e-4, schedule="cosine",
                       milestones=[], warmup_epochs=10)


@dataclass
class TeacherConfig:
    """Stage `teacher`: a self-supervised encoder (its pooled embedding is the representation) + projector."""

    model: NetConfig = field(default_factory=lambda: NetConfig("resnet18_cifar"))
    objective: str = "barlow_twins"  # barlow_twins | simclr
    projector: list[int] = field(default_factory=lambda: [2048, 2048, 2048])  # Linear-BN-ReLU ... Linear widths
    lambd: float = 0.0051  # Barlow Twins: weight of the off-diagonal terms
    temperature: float = 0.5  # SimCLR: NT-Xent temperature
    batch_size: int = 512
    optim: OptimConfig = field(default_factory=_teacher_optim)
    probe_fractions: list[float] = field(default_factory=lambda: [0.01, 0.05])  # linear probes of the teacher


def _student() -> NetConfig:
    return NetConfig("convnet", {"depth": 3, "width": 128, "norm": "instancenorm"})


@dataclass
class ExpertsConfig:
    """Stage `experts`: K students trained by MSE to the teacher's representations, no augmentation."""

    num_experts: int = 100
    epochs: int = 20
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 256


@dataclass
class SelectConfig:
    """Stage `select`: the highest-loss examples under the experts' parameters after `epoch` epochs."""

    fractions: list[float] = field(default_factory=lambda: [0.02, 0.05])
    epoch: int = 1


@dataclass
class DistillSettings:
    """Stage `distill`: trajectory matching (defaults: the authors' CIFAR-10 2 % command)."""

    fraction: float = 0.02  # size of the synthetic set as a fraction of the pre-training set
    init: str = "high_loss"  # high_loss (the select stage's examples) | random (a random subset)
    iterations: int = 5000
    iterations_per_epoch: int = 100  # a run epoch: one metrics line, last.pt and distilled.pt
    syn_steps: int = 40  # N, inner student steps per iteration
    expert_epochs: int = 2  # M, the target is the expert's parameters M epochs after the start
    max_start_epoch: int = 2  # the start epoch t is drawn from 0 .. max_start_epoch - 1
    batch_syn: int = 256  # synthetic examples per inner step
    lr_img: float = 1000.0
    lr_labels: float = 1.0
    lr_lr: float = 1e-4
    syn_lr: float = 0.1  # the inner step size α at the start (learned)
    momentum: float = 0.5  # of the three SGD optimisers
    meta_grad: str = "recompute"  # recompute (constant activation memory) | unrolled


@dataclass
class EvalConfig:
    """Stage `eval`: pre-train a fresh student on a set by MSE, then linear probes (L-BFGS) on labelled subsets."""

    source: str = "mkdt"  # mkdt | mkdt_random_init | high_loss | random | none (no pre-training)
    fraction: float = 0.02  # the set's size (mkdt*: the distill stage of this fraction)
    pretrain_epochs: int = 20
    lr: float | None = None  # None: the learned step size for mkdt*, 0.1 for the subsets
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 256
    label_fractions: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.1, 0.5])
    probe_steps: int = 20  # L-BFGS outer steps
    probe_weight_decay: float = 1e-3  # the probe's CE + probe_weight_decay * ||W||^2


def _runtime() -> RuntimeConfig:
    return RuntimeConfig(device="auto")


def _search() -> SearchConfig:
    return SearchConfig(objective="match_loss", direction="minimize")


@dataclass
class MKDTConfig:
    """The whole pipeline; each stage reads its section."""

    name: str = "mkdt"
    seed: int = 0
    output_dir: str = "runs/mkdt"
    source_dir: str | None = None  # where the earlier stages' folders are (None: <output_dir>/<name>)
    source_seed: int | None = None  # the seed of the earlier stages' folders (None: seed)
    data: MKDTDataConfig = field(default_factory=MKDTDataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: NetConfig = field(default_factory=_student)  # the ConvNet of the experts, distillation and eval
    experts: ExpertsConfig = field(default_factory=ExpertsConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=_runtime)
    search: SearchConfig = field(default_factory=_search)


# ------------------------------------------------------------------------------------------------- folders
def percent(fraction: float) -> str:
    """0.02 -> '2pct' (folder labels)."""
    return f"{fraction * 100:g}pct"


def stage_label(cfg: MKDTConfig, stage: str, *, init: str | None = None, fraction: float | None = None) -> str:
    """The folder label of `stage`: teacher, experts, select, distill-<init>-<p>pct, eval-<source>-<p>pct
    (`init` / `fraction`: of another distillation than this config's)."""
    if stage == "distill":
        return f"distill-{init or cfg.distill.init}-{percent(fraction or cfg.distill.fraction)}"
    if stage == "eval":
        source = cfg.eval.source
        return "eval-none" if source == "none" else f"eval-{source}-{percent(cfg.eval.fraction)}"
    return stage


def stage_dir(cfg: MKDTConfig, stage: str) -> Path:
    """This config's run folder of `stage`."""
    return run_dir_for(Path(cfg.output_dir) / cfg.name, stage_label(cfg, stage), cfg.seed)


def source_stage_dir(cfg: MKDTConfig, label: str) -> Path:
    """The run folder of an earlier stage (by label) that this config reads."""
    base = Path(cfg.source_dir) if cfg.source_dir else Path(cfg.output_dir) / cfg.name
    return run_dir_for(base, label, cfg.seed if cfg.source_seed is None else cfg.source_seed)


# --------------------------------------------------------------------------------------------------- checks
def _fractions(key: str, values: list[float]) -> None:
    if not values:
        raise ConfigError(f"{key} must list at least one fraction in (0, 1]")
    for value in values:
        if not 0 < value <= 1:
            raise ConfigError(f"{key}: {value} is not a fraction in (0, 1]")


def _model(key: str, net: NetConfig) -> None:
    if net.name not in MODELS:
        raise ConfigError(f"{key}.name: unknown model {net.name!r}; valid: {', '.join(MODELS.names())}")


def validate_mkdt(cfg: MKDTConfig) -> None:
    """Value checks beyond types (every section, whichever stage runs: a typo never waits for its stage)."""
    if not cfg.name or "/" in cfg.name:
        raise ConfigError(f"name must be a plain folder name, got {cfg.name!r}")
    if cfg.data.name not in DATASETS:
        raise ConfigError(f"data.name: unknown dataset {cfg.data.name!r}; valid: {', '.join(DATASETS.names())}")
    subset = cfg.data.train_subset
    if subset is not None and not (0 < subset <= 1 or (subset > 1 and float(subset).is_integer())):
        raise ConfigError(f"data.train_subset must be a fraction in (0, 1] or a whole count > 1, got {subset}")
    check_positive({"data.eval_batch_size": cfg.data.eval_batch_size})
    views = AUGMENTATIONS.get(cfg.data.augment.name).meta.get("views", 1)
    if views != 2:
        raise ConfigError(f"data.augment: the teacher needs two views of each image (ssl_views), got "
                          f"{cfg.data.augment.name!r}")
    t = cfg.teacher
    _model("teacher.model", t.model)
    check_choice("teacher.objective", t.objective, OBJECTIVES)
    if not t.projector or any(w <= 0 for w in t.projector):
        raise ConfigError(f"teacher.projector must list positive layer widths, got {t.projector}")
    check_positive({"teacher.temperature": t.temperature, "teacher.batch_size": t.batch_size,
               "teacher.optim.epochs": t.optim.epochs, "teacher.optim.lr": t.optim.lr})
    check_non_negative({"teacher.lambd": t.lambd, "teacher.optim.weight_decay": t.optim.weight_decay})
    if t.batch_size < 2:
        raise ConfigError(f"teacher.batch_size must be >= 2 (batch statistics), got {t.batch_size}")
    check_choice("teacher.optim.optimizer", t.optim.optimizer, ("sgd", "adam", "rmsprop"))
    check_choice("teacher.optim.schedule", t.optim.schedule, ("multistep", "cosine", "constant"))
    _fractions("teacher.probe_fractions", t.probe_fractions)
    _model("student", cfg.student)
    e = cfg.experts
    check_positive({"experts.num_experts": e.num_experts, "experts.epochs": e.epochs, "experts.lr": e.lr,
               "experts.batch_size": e.batch_size})
    check_non_negative({"experts.momentum": e.momentum, "experts.weight_decay": e.weight_decay})
    _fractions("select.fractions", cfg.select.fractions)
    if not 0 <= cfg.select.epoch <= e.epochs:
        raise ConfigError(f"select.epoch must be in 0..experts.epochs ({e.epochs}), got {cfg.select.epoch}")
    d = cfg.distill
    _fractions("distill.fraction", [d.fraction])
    check_choice("distill.init", d.init, INITS)
    check_choice("distill.meta_grad", d.meta_grad, META_GRADIENTS)
    check_positive({f"distill.{k}": getattr(d, k) for k in ("iterations", "iterations_per_epoch", "syn_steps",
                                                        "expert_epochs", "max_start_epoch", "batch_syn", "lr_img",
                                                        "lr_labels", "lr_lr", "syn_lr")})
    check_non_negative({"distill.momentum": d.momentum})
    if d.iterations % d.iterations_per_epoch:
        raise ConfigError(f"distill.iterations ({d.iterations}) must be a multiple of distill.iterations_per_epoch "
                          f"({d.iterations_per_epoch})")
    if d.max_start_epoch - 1 + d.expert_epochs > e.epochs:
        raise ConfigError(f"distill.max_start_epoch - 1 + distill.expert_epochs ({d.max_start_epoch - 1} + "
                          f"{d.expert_epochs}) must be <= experts.epochs ({e.epochs}): the target epoch must exist")
    if d.init == "high_loss" and d.fraction not in cfg.select.fractions:
        raise ConfigError(f"distill.fraction {d.fraction} with distill.init high_loss needs it in select.fractions "
                          f"{cfg.select.fractions}")
    v = cfg.eval
    check_choice("eval.source", v.source, SOURCES)
    _fractions("eval.fraction", [v.fraction])
    check_positive({"eval.lr": v.lr, "eval.batch_size": v.batch_size, "eval.probe_steps": v.probe_steps})
    check_non_negative({"eval.pretrain_epochs": v.pretrain_epochs, "eval.momentum": v.momentum,
                   "eval.weight_decay": v.weight_decay, "eval.probe_weight_decay": v.probe_weight_decay})
    _fractions("eval.label_fractions", v.label_fractions)
    if v.source == "high_loss" and v.fraction not in cfg.select.fractions:
        raise ConfigError(f"eval.fraction {v.fraction} with eval.source high_loss needs it in select.fractions "
                          f"{cfg.select.fractions}")
    r = cfg.runtime
    try:
        r.check("runtime")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    check_positive({"runtime.num_threads": r.num_threads})
    for key in ("precision", "channels_last", "sync_bn", "find_unused_parameters", "eval_every"):
        if getattr(r, key) != getattr(RuntimeConfig(), key):
            raise ConfigError(f"runtime.{key} is not used by dataset-distill (fp32, one process): remove it")
    check_choice("search.direction", cfg.search.direction, ("maximize", "minimize"))


# ------------------------------------------------------------------------------------------------- loading
def mkdt_config_from_dict(values: dict) -> MKDTConfig:
    """Build and validate an `MKDTConfig` from plain data."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(values).__name__}")
    cfg = build_dataclass(MKDTConfig, values, "")
    validate_mkdt(cfg)
    return cfg


def load_mkdt_config(path: str | Path | None, overrides: list[str] | None = None) -> MKDTConfig:
    """Read a YAML config (defaults when `path` is None), apply dotted overrides, validate."""
    values = read_yaml(path) if path is not None else {}
    values = apply_overrides(values, list(overrides or []))
    return mkdt_config_from_dict(values)


def mkdt_config_to_dict(cfg: MKDTConfig) -> dict:
    return dataclasses.asdict(cfg)


__all__ = ["EvalConfig", "ExpertsConfig", "DistillSettings", "INITS", "MKDTConfig", "MKDTDataConfig", "NetConfig",
           "OBJECTIVES", "SOURCES", "STAGES", "SelectConfig", "TeacherConfig", "load_mkdt_config",
           "mkdt_config_from_dict", "mkdt_config_to_dict", "percent", "source_stage_dir", "stage_dir",
           "stage_label", "validate_mkdt"]
