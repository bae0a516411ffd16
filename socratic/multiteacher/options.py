"""The options shared by every multi-teacher method (`method: {name: aver | ebkd | camkd | aekd | mtkd_rl, ...}`):
the loss of the MTKD-RL paper's Eq. (2), each strategy's own knobs, and MTKD-RL's agent."""

from __future__ import annotations

from dataclasses import dataclass, field

from socratic.config.schema import optional_component
from socratic.registry import METHODS, Options

CAMKD_FEATURE_WEIGHTS = ("confidence", "equal")
AEKD_FEATURES = ("gradient", "equal")
LAYOUTS = ("per_teacher", "shared")
COMBINES = ("mean", "dynamic", "none")
REWARDS = ("paper", "paper_literal", "reference")
UPDATES = ("paper", "reference")
AGENT_OPTIMIZERS = ("sgd", "adam")


@dataclass
class AgentOptions(Options):
    """MTKD-RL's agent (Yang et al., "Multi-Teacher Knowledge Distillation with Reinforcement Learning for Visual
    Recognition", AAAI 2025); defaults follow the paper, the reference code's choices are selectable."""

    name: str = "agent"
    layout: str = "per_teacher"  # per_teacher (paper: one MLP per teacher)
    #                              | shared (reference: one MLP over all states)
    hidden: int = 128  # hidden width of the agent MLP(s)
    lr: float = 0.1  # agent learning rate (reference: SGD 0.1, constant)
    optimizer: str = "sgd"  # sgd (no momentum, as the reference) | adam
    combine: str = "mean"  # mean of agent, confidence and divergence weights | dynamic (learned mix)
    #                        | none (agent only)
    reward: str = "paper"  # paper (Eq. 5 + Eq. 7) | paper_literal (Eq. 7 as printed)
    #                        | reference (z-score, clamp [0, 1])
    update: str = "paper"  # paper (Eq. 6: ascent on R * w) | reference (reward-weighted BCE of w towards 1)
    update_every: int = 0  # also update after every N student batches (reference: 1000); 0 = only at epoch ends
    warmup_epochs: int = 1  # Algorithm 1: epochs with all weights 1 before the agent acts (then pre-trained on them)

    def check(self, prefix: str) -> None:
        for key, allowed in (("layout", LAYOUTS), ("combine", COMBINES), ("reward", REWARDS), ("update", UPDATES),
                             ("optimizer", AGENT_OPTIMIZERS)):
            self.require_choice(prefix, key, allowed)
        self.require_positive(prefix, "hidden", "lr")
        self.require_non_negative(prefix, "update_every", "warmup_epochs")


@dataclass
class MultiTeacherOptions(Options):
    """Multi-teacher distillation (docs/methods/multiteacher.md):
    loss = CE + alpha * sum_m w_l^m KL_m + beta * sum_m w_f^m MSE(r_m(F_S), F_Tm), the MTKD-RL paper's Eq. (2);
    `name` selects the teacher-weighting strategy."""

    name: str = "aver"
    alpha: float = 1.0  # weight of the teacher-weighted logit KD term
    beta: float = 5.0  # weight of the teacher-weighted feature (FitNet MSE) term
    temperature: float = 4.0  # KD temperature T of every KL term
    feature_loss: bool = True  # the feature term; false = logit KD only
    feature_layer: int = -1  # index into Features.stages of student and teachers (-1 = the last stage)
    reference_scale: bool = True  # ebkd/camkd: divide their weighted sums by M, as their reference code does
    entropy_temperature: float = 1.0  # ebkd: softmax temperature of the teacher entropies
    camkd_feature_weights: str = "confidence"  # camkd feature term: confidence (CE of r_m(F_S) through T_m's head)
    #                                            | equal
    aekd_c: float = 0.6  # aekd: upper bound C of each teacher weight (nu = 1 / (C * M))
    aekd_normalize: bool = False  # aekd: L2-normalise the gradients before the SVM (reference --svm_norm)
    aekd_features: str = "gradient"  # aekd feature term: gradient (same rule on the feature gradients) | equal
    agent: AgentOptions = field(default_factory=AgentOptions)  # mtkd_rl only
    # the per-teacher logit loss: null = T^2 KL at `temperature`; or a logit method's section, e.g. {name: dkd,
    # beta: 8} or {name: dist}: its distillation term against each teacher, weighted, and its ce_weight
    logit_loss: Options | None = optional_component(METHODS)

    def check(self, prefix: str) -> None:
        """Raise a ValueError naming the key (`method.agent.lr`, ...) and what is valid."""
        self.require_non_negative(prefix, "alpha", "beta")
        self.require_positive(prefix, "temperature", "entropy_temperature", "aekd_c")
        if self.aekd_c > 1:
            raise ValueError(f"{prefix}.aekd_c is an upper bound on weights that sum to 1: use a value in (0, 1], "
                             f"got {self.aekd_c}")
        self.require_choice(prefix, "camkd_feature_weights", CAMKD_FEATURE_WEIGHTS)
        self.require_choice(prefix, "aekd_features", AEKD_FEATURES)
        self.agent.check(f"{prefix}.agent")
        if self.logit_loss is not None:
            usable = [e.name for e in METHODS.entries() if e.meta.get("per_teacher_loss")]
            if not METHODS.get(self.logit_loss.name).meta.get("per_teacher_loss"):
                raise ValueError(f"{prefix}.logit_loss.name: '{self.logit_loss.name}' cannot be a per-teacher loss; "
                                 f"use one of {', '.join(usable)} (or null for the tempered KL)")
            self.logit_loss.check(f"{prefix}.logit_loss")
