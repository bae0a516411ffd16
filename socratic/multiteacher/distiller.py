"""The multi-teacher distiller: one student, a pool of M frozen teachers, per-teacher feature regressors, and a
weighting strategy that decides, per sample, how much each teacher's logit and feature loss counts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.context import TrainContext
from socratic.distillers.base import Distiller
from socratic.losses import kd_loss_per_sample
from socratic.multiteacher.pool import FeatureRegressor, TeacherPool, check_stage, has_head
from socratic.multiteacher.options import MultiTeacherOptions
from socratic.multiteacher.strategies import BatchView, WeightingStrategy
from socratic.registry import METHODS, WEIGHTINGS, Options


class MultiTeacherDistiller(Distiller):
    """Multi-teacher KD with per-sample teacher weights, the loss of Eq. (2) of Yang et al., "Multi-Teacher
    Knowledge Distillation with Reinforcement Learning for Visual Recognition" (AAAI 2025):

        L = CE(z_S, y) + alpha * scale_l * mean_i sum_m w_l[i, m] KL_m(i)
                       + beta  * scale_f * mean_i sum_m w_f[i, m] MSE(r_m(F_S), F_Tm)(i)

    KL_m(i) = T^2 KL(softmax(z_Tm / T) || softmax(z_S / T)) (Hinton KD), MSE the per-sample mean squared error
    of FitNet between the regressed student map r_m(F_S) and teacher m's map at `feature_layer` (r_m: resize,
    1x1 conv, BN, ReLU; trained with the student and checkpointed as the extra module `regressors`). The weights
    come from `strategy` (AVER, EB-KD, CA-MKD, AEKD or MTKD-RL; see `socratic.multiteacher.strategies`);
    scale_l / scale_f are the strategy's reference-code constants (1 unless stated). Losses returned: `ce`, `kd`
    and, with the feature term, `feat`.

    `logit_loss` (a logit method's options: kd, dkd or dist, any method registered with `per_teacher_loss`)
    replaces KL_m(i) by that method's distillation term of sample i against teacher m (DKD's warm-up, LS with
    `standardize`), and CE's weight by its `ce_weight`; the strategies still see the tempered KL (their state,
    rewards and gradients).

    Each epoch's metrics get the mean weight of every teacher (`w_logit_<m>`, and `w_feat_<m>` with the feature
    term; m = the index in `teachers`) and whatever the strategy reports (MTKD-RL: `agent_loss`,
    `reward_<m>`). `current_teacher_weights()` gives the per-teacher logit weights of the latest batch
    (for Disagreement Augmentation against the weighted ensemble, `da.target: weighted`).
    """

    def __init__(self, student: nn.Module, teachers: Sequence[nn.Module], strategy: WeightingStrategy, *,
                 alpha: float = 1.0, beta: float = 5.0, temperature: float = 4.0, feature_loss: bool = True,
                 feature_layer: int = -1, logit_loss: Options | None = None) -> None:
        super().__init__(student, teachers)
        self.logit_loss = logit_loss
        self._per_teacher_loss = (None if logit_loss is None
                                  else METHODS.get(logit_loss.name).meta["per_teacher_loss"])
        self.pool = TeacherPool(self.teachers, feature_layer)
        self.strategy = strategy
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self.feature_loss = bool(feature_loss)
        self.feature_layer = feature_layer
        self.regressors: nn.ModuleList | None = None
        if self.feature_loss or strategy.needs_regressed:
            if not hasattr(student, "forward_features"):
                raise ValueError(f"the student ({type(student).__name__}) has no forward_features(): build the "
                                 f"method with socratic.create_distiller(name, student, teachers), which wraps a "
                                 f"plain nn.Module (socratic.models.external.as_feature_model)")
            check_stage(student, feature_layer, "student")
            self.pool.check_feature_layer()
            stages = student.stage_channels
            self.regressors = nn.ModuleList(
                FeatureRegressor(stages[feature_layer], channels) for channels in self.pool.map_channels)
        self._reset_metrics()
        self._last_weights: Tensor | None = None

    @classmethod
    def from_options(cls, options: MultiTeacherOptions, student: nn.Module, teachers: Sequence[nn.Module]
                     ) -> "MultiTeacherDistiller":
        """Build the method `options.name` (its teacher-weighting strategy, socratic.registry.WEIGHTINGS)."""
        teachers = list(teachers)
        pool = TeacherPool(teachers, options.feature_layer)  # checks the pool before anything is built on it
        if options.name == "camkd" and options.feature_loss and options.camkd_feature_weights == "confidence":
            for i, teacher in enumerate(teachers):
                last = len(teacher.stage_channels) - 1
                if not has_head(teacher) or options.feature_layer not in (-1, last):
                    raise ValueError(
                        f"method.camkd_feature_weights=confidence passes r_m(F_S) through each teacher's head, "
                        f"which needs a zoo teacher and the last stage (feature_layer -1 or {last}); "
                        f"teachers.{i} is a {type(teacher).__name__}: use camkd_feature_weights: equal otherwise")
        strategy = WEIGHTINGS.create(options.name, options, pool)
        return cls(student, teachers, strategy, alpha=options.alpha, beta=options.beta,
                   temperature=options.temperature, feature_loss=options.feature_loss,
                   feature_layer=options.feature_layer, logit_loss=options.logit_loss)

    # ------------------------------------------------------------------------------------ modules
    def extra_modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {}
        if self.regressors is not None:
            modules["regressors"] = self.regressors
        modules.update(self.strategy.extra_modules())
        return modules

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Student and regressors: a strategy's modules (the MTKD-RL agent) have their own optimizer."""
        modules: dict[str, nn.Module] = {"student": self.student}
        if self.regressors is not None:
            modules["regressors"] = self.regressors
        return modules

    # ----------------------------------------------------------------------------------- training
    def forward_train(self, x: Tensor, y: Tensor, ctx: TrainContext | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
        use_regressors = self.regressors is not None
        features = self.student.forward_features(x) if use_regressors else None
        logits = features.logits if use_regressors else self.student(x)
        teachers = self.pool.collect([self.teacher_outputs(x, i, fields)  # replayed when a teacher cache is on
                                      for i, fields in enumerate(self.pool.fields(use_regressors))], use_regressors)
        kl = torch.stack([kd_loss_per_sample(logits, t, self.temperature) for t in teachers.logits], dim=1)
        with torch.no_grad():
            teacher_ce = torch.stack(
                [F.cross_entropy(t, y, reduction="none") for t in teachers.logits], dim=1)
        student_ce = F.cross_entropy(logits.float(), y, reduction="none")
        batch = BatchView(labels=y, student_logits=logits.detach().float(), teacher_logits=teachers.logits,
                          teacher_embeddings=teachers.embeddings, kl=kl.detach(), teacher_ce=teacher_ce,
                          student_ce=student_ce.detach(), temperature=self.temperature)
        feature_losses = None
        if use_regressors:
            student_map = features.stages[self.feature_layer]
            regressed = [r(student_map, t.shape[-2:]) for r, t in zip(self.regressors, teachers.maps)]
            feature_losses = torch.stack([
                (h.float() - t.float()).pow(2).flatten(1).mean(dim=1) for h, t in zip(regressed, teachers.maps)
            ], dim=1)
            with torch.no_grad():
                targets = self.pool.cosine_targets(teachers)
                cosine = torch.stack([
                    F.cosine_similarity(h.detach().float().mean(dim=(2, 3)), t, dim=1)
                    for h, t in zip(regressed, targets)
                ], dim=1)
            batch.student_map, batch.regressed, batch.feature_losses = student_map, regressed, feature_losses
            batch.feature_mse, batch.cosine = feature_losses.detach(), cosine
        w_logit, w_feat = self.strategy(batch)
        per_teacher, ce = kl, student_ce.mean()
        if self._per_teacher_loss is not None:  # `logit_loss`: a logit method's term against each teacher
            per_teacher = torch.stack([self._per_teacher_loss(self.logit_loss, logits, t, y, ctx)
                                       for t in teachers.logits], dim=1)
            ce = self.logit_loss.ce_weight * ce
        losses = {
            "ce": ce,
            "kd": self.alpha * self.strategy.logit_scale * (w_logit * per_teacher).sum(dim=1).mean(),
        }
        if self.feature_loss:
            losses["feat"] = self.beta * self.strategy.feature_scale * (w_feat * feature_losses).sum(dim=1).mean()
        self.strategy.observe(batch, w_logit.detach(), w_feat.detach())
        self._record(w_logit.detach(), w_feat.detach())
        return logits, losses

    def teacher_cache_fields(self) -> list[tuple[str, ...]]:
        """Each teacher's logits and embedding, and its map at `feature_layer` when the regressors need it."""
        return self.pool.fields(self.regressors is not None)

    def on_epoch_end(self, epoch: int) -> None:
        self.strategy.on_epoch_end(epoch)

    @property
    def needs_epoch_end(self) -> bool:
        """Whether the strategy learns once per epoch (MTKD-RL): then a loop must call `on_epoch_end`."""
        return type(self.strategy).on_epoch_end is not WeightingStrategy.on_epoch_end

    @property
    def method_name(self) -> str:
        return self.strategy.name

    # -------------------------------------------------------------------------------- observability
    def _reset_metrics(self) -> None:
        self._sum_logit: Tensor | float = 0.0
        self._sum_feat: Tensor | float = 0.0
        self._seen = 0

    def _record(self, w_logit: Tensor, w_feat: Tensor) -> None:
        self._sum_logit = self._sum_logit + w_logit.float().sum(dim=0)
        self._sum_feat = self._sum_feat + w_feat.float().sum(dim=0)
        self._seen += w_logit.shape[0]
        rows = w_logit.float()
        self._last_weights = (rows / rows.sum(dim=1, keepdim=True).clamp_min(1e-12)).mean(dim=0)

    def current_teacher_weights(self, x: Tensor | None = None) -> Tensor | None:
        """Per-teacher logit weights (M,) of the latest training batch (each sample's row normalised to sum 1,
        then averaged), or None before the first batch. `x` is accepted for the DA interface and not used."""
        return self._last_weights

    def epoch_metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self._seen:
            kinds = [("logit", self._sum_logit)] + ([("feat", self._sum_feat)] if self.feature_loss else [])
            for kind, total in kinds:
                for m, value in enumerate((total / self._seen).tolist()):
                    metrics[f"w_{kind}_{m}"] = value
        metrics.update(self.strategy.epoch_metrics())
        self._reset_metrics()
        return metrics


# Every teacher-weighting strategy is a method of its own name, with the shared multi-teacher options.
for _weighting in WEIGHTINGS.names():
    METHODS.register(_weighting, options=MultiTeacherOptions, teachers=(2, None), teacher_weights=True,
                     features=True)(MultiTeacherDistiller)
