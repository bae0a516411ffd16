"""Typed experiment configuration: one dataclass per config section.

The YAML keys are exactly the field names below; `docs/configs.md` lists them with their meaning. Sections that
select a component (`method`, `data.augment`) are tagged unions: their `name` picks the component in
`socratic.registry`, and that component's own options dataclass gives the other keys, their defaults and checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from socratic.registry import AUGMENTATIONS, METHODS, Options, Registry


def component(registry: Registry, default: str) -> Any:
    """A config field holding the options of one component of `registry`, selected by its `name` key."""
    return field(default_factory=lambda: registry.default_options(default),
                 metadata={"registry": registry, "default": default})


def optional_component(registry: Registry) -> Any:
    """Like `component`, but absent (None, or `null` in YAML) unless a config names one."""
    return field(default=None, metadata={"registry": registry, "default": None, "optional": True})


@dataclass
class DataConfig:
    """Which dataset, where it lives, and how batches are made."""

    name: str = "fashion_mnist"  # a registered dataset (socratic.registry.DATASETS): fashion_mnist, cifar10, ...
    root: str | None = None  # folder with the files; None = the dataset's default places
    train_subset: float | None = None  # fraction in (0, 1], or a count > 1 of training images (stratified)
    subset_seed: int = 0
    batch_size: int = 64
    eval_batch_size: int = 256
    # the training batch transform (socratic.registry.AUGMENTATIONS); not given = the dataset's default
    augment: Options = component(AUGMENTATIONS, "crop_flip")
    download: bool = False  # allow a download when the data is missing (never in tests)
    cache_dir: str | None = None  # decoded-uint8 cache; None = $SOCRATIC_CACHE or ~/.cache/socratic
    allow_empty_classes: bool = False  # imagefolder: accept a class folder without images (else an error naming it)
    skip_unreadable: bool = False  # skip image files that cannot be decoded (counted in a warning) instead of failing


@dataclass
class ModelConfig:
    """A network from the registry (`socratic models` lists them), with optional weights."""

    name: str = "resnet8"
    checkpoint: str | None = None  # teachers: a checkpoint made by `socratic train`, or a state dict
    kwargs: dict = field(default_factory=dict)  # extra constructor arguments


@dataclass
class OptimConfig:
    """The optimiser and the learning-rate schedule."""

    epochs: int = 240
    optimizer: str = "sgd"  # sgd | adam | rmsprop
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])  # 1-indexed epochs
    gamma: float = 0.1  # multistep decay factor
    warmup_epochs: int = 0  # linear warm-up from lr/warmup_epochs+1 to lr
    min_lr: float = 0.0  # cosine floor


@dataclass
class RuntimeConfig:
    """Where and how the computation runs."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 where the hardware has it natively, else fp32) | fp32 | bf16 | fp16 (CUDA)
    channels_last: bool = False
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    num_threads: int | None = None  # torch CPU threads; None = torch's default
    progress: bool = True  # rich progress bars
    tensorboard: bool = True
    eval_every: int = 1  # evaluate every N epochs (and always at the last)
    sync_bn: bool = False  # under torchrun: SyncBatchNorm in the student and extras (CUDA only; docs/distributed.md)
    find_unused_parameters: bool = False  # under torchrun: DDP option for trainable parameters a step may not use

    def check(self, prefix: str = "runtime") -> None:
        """A device this machine cannot run is refused with the config, before anything is loaded."""
        match = re.fullmatch(r"(cpu|mps|cuda)(?::(\d+))?", self.device)
        if self.device != "auto" and match is None:
            raise ValueError(f"{prefix}.device: '{self.device}' is not a device (use auto, cpu, cuda, cuda:N or mps)")
        if match is None or match.group(1) == "cpu":
            return
        import torch

        if match.group(1) == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"{prefix}.device: '{self.device}' asks for CUDA but this machine has no CUDA device "
                                 f"(torch {torch.__version__}, CUDA available: no); use auto or cpu")
            index = int(match.group(2) or 0)
            if index >= torch.cuda.device_count():
                raise ValueError(f"{prefix}.device: '{self.device}' but this machine has "
                                 f"{torch.cuda.device_count()} CUDA device(s): "
                                 f"use cuda:0..{torch.cuda.device_count() - 1}")
        elif not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ValueError(f"{prefix}.device: 'mps' but Apple's MPS backend is not available here; use auto or cpu")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class DAConfig:
    """Disagreement Augmentation (Wong et al., "A Socratic Approach to Knowledge Distillation", ICCV 2025
    submission): a batch transform between the loader and the distiller; defaults are the paper's values
    (Sec. 4.1: e = 1, alpha = 0.01778, p = 0.7374). RL policy distillation uses the same section with its own
    presets (socratic.rl.config)."""

    OBJECTIVES = ("l1_mse", "kl", "mse")
    OPTIMIZERS = ("adam", "sign", "sgd")
    SELECT_BY = ("largest", "smallest")

    enabled: bool = False
    steps: int = 1  # input optimisation steps per perturbed batch (paper: e = 1)
    lr: float = 0.01778  # input step size alpha, in normalised pixel units (paper: 0.01778)
    prob: float = 0.7374  # probability that a batch is perturbed (paper: p = 0.7374)
    objective: str = "l1_mse"  # l1_mse | kl | mse
    optimizer: str = "adam"  # adam (fresh Adam per batch, as the paper's code) | sign | sgd
    temperature: float = 1.0  # kl objective only
    clamp: list[float] | None = None  # [low, high] in [0, 1] pixel space; null = no clamp (paper)
    target: str | int = "mean"  # mean of the teachers' logits, a teacher index, or weighted (multi-teacher methods)
    after_every: int = 10  # measure the disagreement after the step on every n-th perturbed batch (0 = never)
    select: float = 1.0  # fraction of a perturbed batch's samples that are moved (1 = all: the paper's DA)
    select_by: str = "largest"  # largest | smallest: which clean-batch disagreement is selected when select < 1

    def check(self, prefix: str = "da") -> None:
        """Raise a ValueError naming the key (`da.prob`, ...) and what is valid when an option is out of range;
        checked even when disabled, so a typo never waits for the day it is enabled."""
        if not _is_int(self.steps) or self.steps < 0:
            raise ValueError(f"{prefix}.steps must be an integer >= 0 (input optimisation steps per batch), "
                             f"got {self.steps!r}")
        if not _is_number(self.lr) or not self.lr > 0:
            raise ValueError(f"{prefix}.lr must be a number > 0 (the input step size alpha), got {self.lr!r}")
        if not _is_number(self.prob) or not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"{prefix}.prob must be a probability in [0, 1], got {self.prob!r}")
        if self.objective not in self.OBJECTIVES:
            raise ValueError(f"{prefix}.objective: {self.objective!r} is not one of {', '.join(self.OBJECTIVES)}")
        if self.optimizer not in self.OPTIMIZERS:
            raise ValueError(f"{prefix}.optimizer: {self.optimizer!r} is not one of {', '.join(self.OPTIMIZERS)}")
        if not _is_number(self.temperature) or not self.temperature > 0:
            raise ValueError(f"{prefix}.temperature must be a number > 0, got {self.temperature!r}")
        clamp = self.clamp
        if clamp is not None:
            ok = (isinstance(clamp, (list, tuple)) and len(clamp) == 2 and all(_is_number(v) for v in clamp)
                  and 0.0 <= clamp[0] < clamp[1] <= 1.0)
            if not ok:
                raise ValueError(f"{prefix}.clamp must be null or [low, high] with 0 <= low < high <= 1 "
                                 f"(pixel range in [0, 1]), got {clamp!r}")
        target = self.target
        if not (target in ("mean", "weighted") or (_is_int(target) and target >= 0)):
            raise ValueError(f"{prefix}.target must be 'mean' (the teachers' mean logits), 'weighted' (the teachers' "
                             f"logits weighted by a multi-teacher method) or a teacher index 0, 1, ..., got {target!r}")
        if not _is_int(self.after_every) or self.after_every < 0:
            raise ValueError(f"{prefix}.after_every must be an integer >= 0 (0 = never measure the disagreement "
                             f"after the step), got {self.after_every!r}")
        if not _is_number(self.select) or not 0.0 < self.select <= 1.0:
            raise ValueError(f"{prefix}.select must be a number in (0, 1] (the fraction of a perturbed batch's samples "
                             f"that are moved; 1 = all of them), got {self.select!r}")
        if self.select_by not in self.SELECT_BY:
            raise ValueError(f"{prefix}.select_by: {self.select_by!r} is not one of {', '.join(self.SELECT_BY)} "
                             "(the samples of largest or smallest disagreement on the clean batch)")


@dataclass
class TeacherCacheConfig:
    """The teacher-output cache (docs/performance.md): each epoch's batches are a function of (seed, epoch), so the
    teachers' outputs on them are computed once, stored on disk and replayed by every later run that would compute
    the same ones (the methods and seeds of a table, the trials of a search). Off until asked for."""

    enabled: bool = False
    dir: str | None = None  # where entries live; None = $SOCRATIC_CACHE/teacher_outputs or ~/.cache/socratic/...
    topk: int | None = None  # None: exact logits (training bit-identical to no cache); k: keep each sample's k
    #                          largest logits and set the others to their mean (smaller, changes the numbers)

    def check(self, prefix: str = "teacher_cache") -> None:
        """A ValueError naming the key when a value is out of range."""
        if not isinstance(self.enabled, bool):
            raise ValueError(f"{prefix}.enabled must be true or false, got {self.enabled!r}")
        if self.topk is not None and (not _is_int(self.topk) or self.topk < 1):
            raise ValueError(f"{prefix}.topk must be null (exact logits) or an integer >= 1 (logits kept per "
                             f"sample), got {self.topk!r}")


@dataclass
class SearchConfig:
    """What a hyperparameter search (`socratic search`) optimises: a key of the run's per-epoch metrics."""

    objective: str = "val_top1"  # any numeric key of metrics.jsonl (RL runs: eval_score_mean)
    direction: str = "maximize"  # maximize | minimize


@dataclass
class ExperimentConfig:
    """A whole run: data, student, teachers, method, optimisation, runtime."""

    name: str = "experiment"
    seed: int = 0
    output_dir: str = "runs"  # the run folder is <output_dir>/<name>/seed<seed>
    data: DataConfig = field(default_factory=DataConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    teachers: list[ModelConfig] = field(default_factory=list)
    method: Options = component(METHODS, "ce")  # the method's own options: docs/methods/
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    da: DAConfig = field(default_factory=DAConfig)
    teacher_cache: TeacherCacheConfig = field(default_factory=TeacherCacheConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
