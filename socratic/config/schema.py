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
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 needs CUDA)
    channels_last: bool = False
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    num_threads: int | None = None  # torch CPU threads; None = torch's default
    progress: bool = True  # rich progress bars
    tensorboard: bool = True
    eval_every: int = 1  # evaluate every N epochs (and always at the last)
    sync_bn: bool = False  # under torchrun: SyncBatchNorm in the student and extras (CUDA only; docs/distributed.md)
    find_unused_parameters: bool = False  # under torchrun: DDP option for trainable parameters a step may not use


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
    target: str | int = "mean"  # mean of the teachers' logits, a teacher index, or weighted (multi-teacher methods)
    after_every: int = 10  # measure the disagreement after the step on every n-th perturbed batch (0 = never)


@dataclass
class AgentConfig:
    """MTKD-RL's agent (Yang et al., "Multi-Teacher Knowledge Distillation with Reinforcement Learning for Visual
    Recognition", AAAI 2025); defaults follow the paper, the reference code's choices are selectable."""

    layout: str = "per_teacher"  # per_teacher (paper: one MLP per teacher) | shared (reference: one MLP over all states)
    hidden: int = 128  # hidden width of the agent MLP(s)
    lr: float = 0.1  # agent learning rate (reference: SGD 0.1, constant)
    optimizer: str = "sgd"  # sgd (no momentum, as the reference) | adam
    combine: str = "mean"  # mean of agent, confidence and divergence weights | dynamic (learned mix) | none (agent only)
    reward: str = "paper"  # paper (Eq. 5 + Eq. 7) | paper_literal (Eq. 7 as printed) | reference (z-score, clamp [0, 1])
    update: str = "paper"  # paper (Eq. 6: ascent on R * w) | reference (reward-weighted BCE of w towards 1)
    update_every: int = 0  # also update after every N student batches (reference: 1000); 0 = only at epoch ends
    warmup_epochs: int = 1  # Algorithm 1: epochs with all weights 1 before the agent acts (then pre-trained on them)


@dataclass
class MultiTeacherConfig:
    """Multi-teacher distillation (methods aver, ebkd, camkd, aekd, mtkd_rl; docs/methods/multiteacher.md):
    loss = CE + alpha * sum_m w_l^m KL_m + beta * sum_m w_f^m MSE(r_m(F_S), F_Tm), the MTKD-RL paper's Eq. (2)."""

    alpha: float = 1.0  # weight of the teacher-weighted logit KD term
    beta: float = 5.0  # weight of the teacher-weighted feature (FitNet MSE) term
    temperature: float = 4.0  # KD temperature T of every KL term
    feature_loss: bool = True  # the feature term; false = logit KD only
    feature_layer: int = -1  # index into Features.stages of student and teachers (-1 = the last stage)
    reference_scale: bool = True  # ebkd/camkd: divide their weighted sums by M, as their reference code does
    entropy_temperature: float = 1.0  # ebkd: softmax temperature of the teacher entropies
    camkd_feature_weights: str = "confidence"  # camkd feature term: confidence (CE of r_m(F_S) through T_m's head) | equal
    aekd_c: float = 0.6  # aekd: upper bound C of each teacher weight (nu = 1 / (C * M))
    aekd_normalize: bool = False  # aekd: L2-normalise the gradients before the SVM (reference --svm_norm)
    aekd_features: str = "gradient"  # aekd feature term: gradient (same rule on the feature gradients) | equal
    agent: AgentConfig = field(default_factory=AgentConfig)


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
    multiteacher: MultiTeacherConfig = field(default_factory=MultiTeacherConfig)
