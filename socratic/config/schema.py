"""Typed experiment configuration: one dataclass per config section.

The YAML keys are exactly the field names below; `docs/configs.md` lists them with their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    """Which dataset, where it lives, and how batches are made."""

    name: str = "fashion_mnist"  # fashion_mnist | cifar10 | cifar100 | imagefolder
    root: str | None = None  # folder with the files; None = the dataset's default places
    train_subset: float | None = None  # fraction in (0, 1], or a count > 1 of training images (stratified)
    subset_seed: int = 0
    batch_size: int = 64
    eval_batch_size: int = 256
    augment: bool = True  # random crop + horizontal flip on tensors
    download: bool = False  # allow a download when the data is missing (never in tests)
    cache_dir: str | None = None  # decoded-uint8 cache; None = $SOCRATIC_CACHE or ~/.cache/socratic


@dataclass
class ModelConfig:
    """A network from the registry (`socratic models` lists them), with optional weights."""

    name: str = "resnet8"
    checkpoint: str | None = None  # teachers: a checkpoint made by `socratic train`, or a state dict
    kwargs: dict = field(default_factory=dict)  # extra constructor arguments


@dataclass
class MethodConfig:
    """The distillation method and its loss weights (see `socratic.distillers`)."""

    name: str = "ce"  # ce | kd | fitnet
    temperature: float = 4.0  # KD temperature T
    ce_weight: float = 0.1  # weight of the cross-entropy on labels
    kd_weight: float = 0.9  # weight of T^2 * KL(teacher || student)
    hint_weight: float = 100.0  # FitNet: weight of the hint MSE
    hint_layer: int = 2  # FitNet: index into Features.stages (0 = stem output), as mdistiller's HINT_LAYER


@dataclass
class OptimConfig:
    """SGD and the learning-rate schedule."""

    epochs: int = 240
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
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 needs CUDA)
    channels_last: bool = False
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    num_threads: int | None = None  # torch CPU threads; None = torch's default
    progress: bool = True  # rich progress bars
    tensorboard: bool = True
    eval_every: int = 1  # evaluate every N epochs (and always at the last)


@dataclass
class DAConfig:
    """Disagreement Augmentation (Wong et al., "A Socratic Approach to Knowledge Distillation", ICCV 2025
    submission): a batch transform between the loader and the distiller; defaults are the paper's values."""

    enabled: bool = False
    steps: int = 1  # input optimisation steps per perturbed batch (paper: e = 1)
    lr: float = 0.01778  # input step size alpha, in normalised pixel units (paper: 0.01778)
    prob: float = 0.7374  # probability that a batch is perturbed (paper: p = 0.7374)
    objective: str = "l1_mse"  # l1_mse | kl | mse
    optimizer: str = "adam"  # adam (fresh Adam per batch, as the paper's code) | sign | sgd
    temperature: float = 1.0  # kl objective only
    clamp: list[float] | None = None  # [low, high] in [0, 1] pixel space; null = no clamp (paper)
    target: str | int = "mean"  # mean of the teachers' logits, or a teacher index
    after_every: int = 10  # measure the disagreement after the step on every n-th perturbed batch (0 = never)


@dataclass
class ExperimentConfig:
    """A whole run: data, student, teachers, method, optimisation, runtime."""

    name: str = "experiment"
    seed: int = 0
    output_dir: str = "runs"  # the run folder is <output_dir>/<name>/seed<seed>
    data: DataConfig = field(default_factory=DataConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    teachers: list[ModelConfig] = field(default_factory=list)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    da: DAConfig = field(default_factory=DAConfig)
