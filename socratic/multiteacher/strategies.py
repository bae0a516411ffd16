"""Teacher-weighting strategies: per-sample weights (B, M) for the logit term and for the feature term of

    L = CE + alpha * mean_i sum_m w_l[i, m] KL_m(i) + beta * mean_i sum_m w_f[i, m] MSE_m(i)

(Eq. 2 of Yang et al., AAAI 2025). Each rule is a pure function of tensors (tested against hand-computed
values), wrapped in a `WeightingStrategy` module the distiller calls once per batch:

    w_logit, w_feat = strategy(batch)        # batch: a BatchView of the student and the pool on one batch
    strategy.observe(batch, w_logit, w_feat) # learning strategies record what happened (MTKD-RL)
    strategy.on_epoch_end(epoch)             # ... and update there

`logit_scale` / `feature_scale` are constant factors some reference implementations put on the weighted sums
(EB-KD and CA-MKD divide by M); the weights themselves are reported unscaled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.multiteacher.options import MultiTeacherOptions
from socratic.multiteacher.pool import TeacherPool, head_logits
from socratic.registry import WEIGHTINGS


@dataclass
class BatchView:
    """What a strategy may look at for one batch of B samples and M teachers.

    Detached: `student_logits` (B, C), `teacher_logits` (M, B, C), `teacher_embeddings` (M x (B, d_m)), `kl`
    (B, M: T^2 KL(p_t || p_s) at the KD temperature), `teacher_ce` (B, M), `student_ce` (B,), `feature_mse` and
    `cosine` (B, M, or None without a feature term / regressors).
    Live (part of the student's graph, for the strategies that differentiate): `student_map` (the student's
    feature map fed to the regressors), `regressed` (M x r_m(student_map)) and `feature_losses` (B, M).
    """

    labels: Tensor
    student_logits: Tensor
    teacher_logits: Tensor
    teacher_embeddings: list[Tensor]
    kl: Tensor
    teacher_ce: Tensor
    student_ce: Tensor
    temperature: float
    feature_mse: Tensor | None = None
    cosine: Tensor | None = None
    student_map: Tensor | None = None
    regressed: list[Tensor] | None = None
    feature_losses: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_teachers(self) -> int:
        return int(self.teacher_logits.shape[0])


# ----------------------------------------------------------------------------------------------- rules
def average_weights(batch_size: int, num_teachers: int, device: torch.device | None = None) -> Tensor:
    """AVER: every teacher 1/M (You et al., KDD 2017, "Learning from Multiple Teacher Networks")."""
    return torch.full((batch_size, num_teachers), 1.0 / num_teachers, device=device)


def entropy_weights(teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """EB-KD (Kwon et al., ICASSP 2020): w_m(x) = 1 - H_m(x) / sum_j H_j(x), with H_m the entropy of
    softmax(z_m / temperature). (M, B, C) -> (B, M); rows sum to M - 1 (to 1 only for M = 2): confident
    (low-entropy) teachers get more weight."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    entropy = -(log_p.exp() * log_p).sum(dim=-1).t()  # (B, M)
    return 1.0 - entropy / entropy.sum(dim=1, keepdim=True).clamp_min(1e-12)


def confidence_weights(teacher_ce: Tensor) -> Tensor:
    """CA-MKD (Zhang, Chen & Wang, ICASSP 2022): w_m(x) = (1 - softmax_m(CE_m(x))) / (M - 1), with CE_m the
    cross-entropy of teacher m on the true label. (B, M) -> (B, M); rows sum to 1; lower CE, higher weight."""
    num_teachers = teacher_ce.shape[1]
    return (1.0 - F.softmax(teacher_ce, dim=1)) / (num_teachers - 1)


def divergence_weights(values: Tensor) -> Tensor:
    """softmax over teachers of a per-teacher gap, (B, M) -> (B, M): MTKD-RL's divergence-aware weights (the
    student-teacher KL for the logit weights, the feature cosine for the feature weights)."""
    return F.softmax(values.float(), dim=1)


def kd_logit_gradients(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """d L_m / d z_s for L_m = mean_b T^2 KL(softmax(z_m/T) || softmax(z_s/T)): T (p_s - p_m) / B, shape
    (M, B, C). The exact gradient of the batch-mean KD loss, without a backward pass per teacher."""
    p_student = F.softmax(student_logits.float() / temperature, dim=-1)
    p_teachers = F.softmax(teacher_logits.float() / temperature, dim=-1)
    return temperature * (p_student.unsqueeze(0) - p_teachers) / student_logits.shape[0]


def gradient_space_weights(gradients: Tensor, c: float = 0.6, normalize: bool = False) -> Tensor:
    """AEKD (Du et al., NeurIPS 2020, "Agree to Disagree: Adaptive Ensemble Knowledge Distillation in Gradient
    Space"): one weight per teacher from the teachers' loss gradients.

    gradients: (M, B, ...) per-sample gradients of each teacher's loss; they are averaged over the batch to
    g_m, and the weights solve  min_a || sum_m a_m g_m ||^2  s.t.  sum_m a_m = 1, 0 <= a_m <= C,  i.e. the dual
    of a nu-one-class SVM on the Gram matrix G = [<g_m, g_j>] with nu = 1 / (C M), solved by scikit-learn's
    `OneClassSVM(kernel="precomputed", nu, tol=1e-6)`; a = dual_coef / (M nu). As the reference code, nu is
    clipped to [1/M, 1] (so C acts within [1/M, 1]), and `normalize` L2-normalises each g_m first and
    re-weights a_m by 1/||g_m|| afterwards (renormalised to sum 1). Returns (M,) float32 on the input's device.
    """
    try:
        from sklearn.svm import OneClassSVM
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("AEKD needs scikit-learn: pip install 'socratic-kd[multiteacher]'") from err
    num_teachers = gradients.shape[0]
    vectors = gradients.detach().float().reshape(num_teachers, gradients.shape[1], -1).mean(dim=1)
    vectors = vectors.double().cpu()
    norms = vectors.norm(dim=1).clamp_min(1e-12)
    if normalize:
        vectors = vectors / norms.unsqueeze(1)
    gram = (vectors @ vectors.t()).numpy()
    nu = min(1.0, max(1.0 / num_teachers, 1.0 / (c * num_teachers)))
    svm = OneClassSVM(kernel="precomputed", nu=nu, tol=1e-6)
    svm.fit(gram)
    alpha = np.zeros(num_teachers)
    alpha[svm.support_] = svm.dual_coef_[0] / (num_teachers * nu)
    if normalize:
        alpha = alpha / norms.numpy()
        alpha = alpha / alpha.sum()
    return torch.as_tensor(alpha, dtype=torch.float32, device=gradients.device)


# ------------------------------------------------------------------------------------------ strategies
class WeightingStrategy(nn.Module):
    """Base class: `forward(batch) -> (w_logit, w_feat)`, both (B, M), detached unless stated otherwise."""

    name = "base"
    needs_regressed = False  # the distiller must compute r_m(F_S) even without a feature term (MTKD-RL's cosine)
    logit_scale = 1.0
    feature_scale = 1.0

    def forward(self, batch: BatchView) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def observe(self, batch: BatchView, w_logit: Tensor, w_feat: Tensor) -> None:
        """Called after the loss is built from the weights (learning strategies record the episode)."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called once per epoch, after its last step."""

    def epoch_metrics(self) -> dict[str, float]:
        return {}

    def extra_modules(self) -> dict[str, nn.Module]:
        """Modules to checkpoint (they bring their own optimizer)."""
        return {}


class AverageStrategy(WeightingStrategy):
    """AVER: equal weights 1/M for every teacher and sample, logit and feature term (the MTKD-RL paper's
    'AVER (KD+FitNet)' baseline; You et al., KDD 2017)."""

    name = "aver"

    def forward(self, batch: BatchView) -> tuple[Tensor, Tensor]:
        w = average_weights(batch.batch_size, batch.num_teachers, batch.kl.device)
        return w, w


class EntropyStrategy(WeightingStrategy):
    """EB-KD: Kwon, Na, Lee & Kim, "Adaptive Knowledge Distillation Based on Entropy", ICASSP 2020.

    Logit weights 1 - H_m / sum_j H_j (`entropy_weights`, softmax at `temperature`, 1 in the reference code);
    with `reference_scale` the weighted KD sum is divided by M, as the CA-MKD repository's EB-KD does (its
    weights sum to M - 1). EB-KD defines no feature weights: the feature term, if on, uses 1/M.
    """

    name = "ebkd"

    def __init__(self, temperature: float = 1.0, reference_scale: bool = True, num_teachers: int = 2) -> None:
        super().__init__()
        self.temperature = temperature
        self.logit_scale = 1.0 / num_teachers if reference_scale else 1.0

    def forward(self, batch: BatchView) -> tuple[Tensor, Tensor]:
        w_logit = entropy_weights(batch.teacher_logits, self.temperature)
        return w_logit, average_weights(batch.batch_size, batch.num_teachers, w_logit.device)


class ConfidenceStrategy(WeightingStrategy):
    """CA-MKD: Zhang, Chen & Wang, "Confidence-Aware Multi-Teacher Knowledge Distillation", ICASSP 2022.

    Logit weights from each teacher's CE on the label (`confidence_weights`). Feature weights
    (`feature_weights="confidence"`): the same rule on the CE of each regressed student map r_m(F_S) passed
    through teacher m's own head; as in the authors' code these feature weights are *not* detached (the CE
    depends on the regressor). `"equal"` uses 1/M instead. With `reference_scale` both weighted sums are
    divided by M, as the authors' code does (the feature sum only with confidence feature weights).
    """

    name = "camkd"

    def __init__(self, teachers: Sequence[nn.Module] = (), feature_weights: str = "confidence",
                 reference_scale: bool = True, num_teachers: int = 2) -> None:
        super().__init__()
        self._teachers = list(teachers)  # plain list: the distiller owns (and registers) the teachers
        self.feature_weights = feature_weights
        self.needs_regressed = feature_weights == "confidence"
        scale = 1.0 / num_teachers if reference_scale else 1.0
        self.logit_scale = scale
        self.feature_scale = scale if feature_weights == "confidence" else 1.0

    def forward(self, batch: BatchView) -> tuple[Tensor, Tensor]:
        w_logit = confidence_weights(batch.teacher_ce)
        if self.feature_weights == "confidence" and batch.regressed is not None:
            head_ce = torch.stack([
                F.cross_entropy(head_logits(teacher, h).float(), batch.labels, reduction="none")
                for teacher, h in zip(self._teachers, batch.regressed)
            ], dim=1)
            w_feat = confidence_weights(head_ce)
        else:
            w_feat = average_weights(batch.batch_size, batch.num_teachers, w_logit.device)
        return w_logit, w_feat


class GradientSpaceStrategy(WeightingStrategy):
    """AEKD: Du, You, Li, Wu, Wang, Qian & Zhang, "Agree to Disagree: Adaptive Ensemble Knowledge Distillation
    in Gradient Space", NeurIPS 2020.

    One weight per teacher and batch (the same for every sample) from `gradient_space_weights` on the gradients
    of each teacher's batch-mean KD loss w.r.t. the student logits (computed in closed form). Feature weights
    (`feature_weights="gradient"`, the reference code's 'hint' variant): the same rule on the gradients of each
    teacher's batch-mean feature MSE w.r.t. the student's feature map (one small autograd pass through each
    regressor, nothing reaches the student's weights); `"equal"` uses 1/M.
    """

    name = "aekd"

    def __init__(self, c: float = 0.6, normalize: bool = False, feature_weights: str = "gradient") -> None:
        super().__init__()
        self.c = c
        self.normalize = normalize
        self.feature_weights = feature_weights

    def forward(self, batch: BatchView) -> tuple[Tensor, Tensor]:
        grads = kd_logit_gradients(batch.student_logits, batch.teacher_logits, batch.temperature)
        w_logit = gradient_space_weights(grads, self.c, self.normalize).expand(batch.batch_size, -1)
        live = batch.feature_losses is not None and batch.student_map is not None
        if self.feature_weights == "gradient" and live and batch.student_map.requires_grad:
            feature_grads = torch.stack([
                torch.autograd.grad(batch.feature_losses[:, m].mean(), batch.student_map, retain_graph=True)[0]
                for m in range(batch.num_teachers)
            ])
            w_feat = gradient_space_weights(feature_grads, self.c, self.normalize).expand(batch.batch_size, -1)
        else:
            w_feat = average_weights(batch.batch_size, batch.num_teachers, w_logit.device)
        return w_logit, w_feat


def register_weighting(name: str):
    """Register a teacher-weighting strategy: `build(options: MultiTeacherOptions, pool: TeacherPool)`; each one
    is also a method of that name (`socratic.multiteacher.distiller`)."""
    return WEIGHTINGS.register(name)


@register_weighting("aver")
def _aver(options: MultiTeacherOptions, pool: TeacherPool) -> WeightingStrategy:
    return AverageStrategy()


@register_weighting("ebkd")
def _ebkd(options: MultiTeacherOptions, pool: TeacherPool) -> WeightingStrategy:
    return EntropyStrategy(options.entropy_temperature, options.reference_scale, len(pool))


@register_weighting("camkd")
def _camkd(options: MultiTeacherOptions, pool: TeacherPool) -> WeightingStrategy:
    feature_weights = options.camkd_feature_weights if options.feature_loss else "equal"
    return ConfidenceStrategy(pool.teachers, feature_weights, options.reference_scale, len(pool))


@register_weighting("aekd")
def _aekd(options: MultiTeacherOptions, pool: TeacherPool) -> WeightingStrategy:
    return GradientSpaceStrategy(options.aekd_c, options.aekd_normalize, options.aekd_features)
