"""Disagreement Augmentation (DA): move each training batch towards inputs where student and teacher disagree.

Wong et al., "A Socratic Approach to Knowledge Distillation" (Disagreement Augmentation), ICCV 2025 submission
#15298, Algorithm 1: freeze student S and teacher T; for e epochs compute L_S = S(I), L_T = T(I), normalise
both, l = -MSE(L_S, L_T), back-propagate l to the input batch I only and update I with learning rate alpha;
return I. The returned batch *replaces* the clean one with probability p per batch, and the usual KD step
follows on it (the teacher's logits are recomputed on the perturbed batch; CE keeps the original labels).
The paper's values, found by its Bayesian sweep on resnet32x4 -> resnet8x4 and used for every
classification experiment, are e = 1, alpha = 0.01778, p = 0.7374.

Exactly as the authors' Table-1 code does it (the defaults here):

* "normalise" is a per-sample L1 normalisation of the raw logits (`F.normalize(p=1)`), and the MSE is the
  mean over the B x C elements (objective `l1_mse`);
* the update is one step of a *freshly created* `torch.optim.Adam(lr=alpha)` on the input tensor per batch
  (default betas and eps), so the first step is -alpha * g / (|g| + 1e-8), nearly a signed step of size
  alpha in mean/std-normalised pixel space; there is no clamp and no projection;
* one Bernoulli(p) draw per batch (here from torch's global RNG, so seeding and resume cover it), and the
  whole batch is replaced.

Adaptive DA (`select` < 1, the paper's Sec. 5.4 future work: apply the augmentation selectively): one no-grad
forward of student and teacher(s) on the clean batch ranks its samples by their disagreement; only the
fraction `select` with the largest (`select_by: smallest`: the smallest) is moved, and the teacher logits of
that forward are reused for the loss of the samples left unchanged (`known_teacher_logits`).

Where this implementation chooses (see docs/methods/da.md): gradients are taken with `torch.autograd.grad`
w.r.t. the input only, so no parameter `.grad` is touched; the student runs in the mode the caller left it
in (train mode during training: BatchNorm uses batch statistics) but its running statistics are *not*
updated and no model is copied; an optional `clamp` keeps pixels inside a [low, high] range of [0, 1].
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from socratic.config.schema import DAConfig
from socratic.context import KnownTeacherLogits, take_rows
from socratic.losses import tempered_kl_per_sample

OBJECTIVES = DAConfig.OBJECTIVES
OPTIMIZERS = DAConfig.OPTIMIZERS
PAPER_LR = DAConfig.lr  # the paper's alpha (Wong et al., Sec. 4.1); the other paper values are DAConfig's defaults

Observer = Callable[[int, Tensor, Tensor], None]  # (step k, student logits at x_k, target logits at x_k)


def disagreement_per_sample(student_logits: Tensor, target_logits: Tensor, objective: str = "l1_mse",
                            temperature: float = 1.0) -> Tensor:
    """How much student and target disagree on each sample, shape (B,), always >= 0 (computed in fp32).

    l1_mse: mean over classes of (s/|s|_1 - t/|t|_1)^2 (the paper's normalised MSE);
    mse: mean over classes of (s - t)^2 on raw logits;
    kl: KL(softmax(t/T) || softmax(s/T)) summed over classes (no T^2 factor).
    The batch value `disagreement` is the mean of these, i.e. the MSE averaged over B x C elements.
    """
    s, t = student_logits.float(), target_logits.float()
    if objective == "l1_mse":
        return (F.normalize(s, p=1.0, dim=1) - F.normalize(t, p=1.0, dim=1)).pow(2).mean(dim=1)
    if objective == "mse":
        return (s - t).pow(2).mean(dim=1)
    if objective == "kl":
        return tempered_kl_per_sample(s, t, temperature)
    raise ValueError(f"da.objective: '{objective}' is not one of {', '.join(OBJECTIVES)}")


def disagreement_score(student_logits: Tensor, target_logits: Tensor, objective: str = "l1_mse",
                 temperature: float = 1.0) -> Tensor:
    """The batch disagreement (a scalar >= 0); DA descends on its negative, i.e. ascends on it."""
    return disagreement_per_sample(student_logits, target_logits, objective, temperature).mean()


@contextlib.contextmanager
def frozen_running_stats(*models: nn.Module) -> Iterator[None]:
    """Run `models` as they are (train mode: BatchNorm on batch statistics) without changing any of their buffers.

    BatchNorm layers in train mode get `track_running_stats=False` for the duration, which makes them
    normalise with the batch statistics and skip the update of running_mean/var and num_batches_tracked
    (no copy, no extra work). Any other module in train mode that owns buffers has them saved and restored.
    """
    toggled: list[_BatchNorm] = []
    saved: list[tuple[Tensor, Tensor]] = []
    for module in (m for model in models for m in model.modules()):
        if isinstance(module, _BatchNorm):
            if module.training and module.track_running_stats:
                module.track_running_stats = False
                toggled.append(module)
        elif module.training:
            saved.extend((buf, buf.clone()) for _, buf in module.named_buffers(recurse=False) if buf is not None)
    try:
        yield
    finally:
        for module in toggled:
            module.track_running_stats = True
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)


# Loss scales tried under fp16 autocast (powers of two: exact in floating point). The input gradients of the
# paper's objective are tiny (a mean over B x C elements of L1-normalised logits: often 1e-8 or less), far below
# fp16's smallest subnormal (6e-8), so unscaled they flush to zero and DA does nothing.
_FP16_SCALES = (2.0**24, 2.0**16, 2.0**8)


def _fp16_autocast(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16
    except (TypeError, AttributeError):  # torch < 2.4: only the CUDA autocast state is queryable
        return (device_type == "cuda" and torch.is_autocast_enabled()
                and torch.get_autocast_gpu_dtype() == torch.float16)


def _input_gradient(loss: Tensor, x: Tensor, fp16: bool) -> Tensor:
    """d loss / d x only (no parameter gradient is computed or stored).

    Under fp16 autocast the loss is scaled by the largest power of two whose gradient stays finite (like a
    GradScaler, but per step) and the gradient unscaled, so the step matches fp32's instead of vanishing.
    """
    if not fp16:
        return torch.autograd.grad(loss, x)[0]
    for scale in _FP16_SCALES:
        (grad,) = torch.autograd.grad(loss * scale, x, retain_graph=True)
        if bool(torch.isfinite(grad).all()):
            return grad / scale
    return torch.autograd.grad(loss, x)[0]


def _teacher_list(teachers: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    """One module (an nn.Sequential too) is one teacher; a list or nn.ModuleList is several."""
    return [teachers] if isinstance(teachers, nn.Module) and not isinstance(teachers, nn.ModuleList) else list(teachers)


class _InputStep:
    """One update of the input tensor `x` (a leaf) given the gradient of the loss -disagreement."""

    def __init__(self, method: str, x: Tensor, lr: float) -> None:
        self.method, self.x, self.lr = method, x, lr
        # A fresh Adam per batch, default betas (0.9, 0.999) and eps 1e-8, as the authors' code.
        self.adam = torch.optim.Adam([x], lr=lr) if method == "adam" else None

    @torch.no_grad()
    def step(self, grad: Tensor) -> None:
        if self.adam is not None:
            self.x.grad = grad
            self.adam.step()
            self.x.grad = None
        elif self.method == "sign":
            self.x.sub_(grad.sign(), alpha=self.lr)  # x += lr * sign(d disagreement / dx)
        else:
            self.x.sub_(grad, alpha=self.lr)  # sgd: x += lr * d disagreement / dx


class DisagreementAugmentation:
    """Disagreement Augmentation as a batch transform: `x_new = da(x, student, teachers)`.

    Wong et al., "A Socratic Approach to Knowledge Distillation" (ICCV 2025 submission), Algorithm 1.

    Per call (one training batch): one Bernoulli(`prob`) draw from torch's global RNG (none when prob is 0
    or 1, so prob=0 leaves the RNG stream, and the run, exactly as without DA); on success `steps`
    optimisation steps on a copy of the input that increase the disagreement between the student's logits
    and the target logits (the mean of the teachers' logits, or teacher `target`), and the perturbed batch
    is returned in place of `x`.

    steps, lr: number and size of the input steps (paper: e = 1, alpha = 0.01778).
    prob: probability that a batch is perturbed (paper: 0.7374).
    objective: `l1_mse` (paper: MSE of per-sample L1-normalised logits), `kl` (KL(target || student) at
        `temperature`), `mse` (MSE of raw logits).
    optimizer: `adam` (paper: one fresh torch.optim.Adam(lr) per batch on the input), `sign`
        (x += lr * sign(grad)) or `sgd` (x += lr * grad).
    clamp: None (paper) or (low, high) in [0, 1] pixel space; needs the loader's `mean` and `std` to clamp
        in normalised space, after every step.
    target: "mean", the index of the teacher to disagree with, or "weighted": sum_m w_m z_m with the weights
        `teacher_weights(x)` returns, (M,) or (B, M), each row normalised to sum 1 (a multi-teacher distiller's
        `current_teacher_weights`, connected by `socratic.experiment`; the plain mean while it returns None).
    after_every: every n-th perturbed batch (0 = never) is forwarded once more (no grad) to measure the
        disagreement after the step (`da_disagreement_after`); the other statistics are free.
    select, select_by: adaptive DA. With select < 1 a perturbed batch is first forwarded once without a graph
        (student in its mode, BatchNorm buffers untouched) and only the round(select * B) samples of largest
        (select_by "smallest": smallest) per-sample disagreement are moved, on their own: the student sees
        them as a batch of that size, and the loss is the sum of their disagreements over B (not over the
        selection), so each sample gets the gradient, and hence the step, it would get in a B-sample batch up
        to BatchNorm's batch statistics. The teacher logits of that forward are kept for the other samples
        (`known_teacher_logits()`, reused by the trainer's step). select = 1 is exactly the paper's DA.

    Cost of a perturbed batch: per step one forward of student and teacher(s) with a graph and one
    backward to the input only (no parameter gradients), plus one no-grad forward on measured batches.
    Models are used in place: parameters, their .grad and all buffers (BatchNorm running statistics and
    num_batches_tracked included) are unchanged afterwards. Teachers are used in the mode they are in
    (Distiller keeps them in eval mode); a target in train mode (DML's peers, `Distiller.disagreement_targets`)
    runs on batch statistics with its buffers untouched, as the student does.
    """

    def __init__(self, steps: int = DAConfig.steps, lr: float = DAConfig.lr, prob: float = DAConfig.prob,
                 objective: str = DAConfig.objective, optimizer: str = DAConfig.optimizer,
                 temperature: float = DAConfig.temperature, clamp: Sequence[float] | None = None,
                 target: str | int = DAConfig.target, *,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 after_every: int = DAConfig.after_every,
                 teacher_weights: Callable[[Tensor], Tensor | None] | None = None,
                 select: float = DAConfig.select, select_by: str = DAConfig.select_by) -> None:
        clamp = list(clamp) if isinstance(clamp, (list, tuple)) else clamp
        DAConfig(steps=steps, lr=lr, prob=prob, objective=objective, optimizer=optimizer, temperature=temperature,
                 clamp=clamp, target=target, after_every=after_every, select=select, select_by=select_by).check("da")
        self.steps, self.lr, self.prob = steps, float(lr), float(prob)
        self.objective, self.optimizer, self.temperature = objective, optimizer, float(temperature)
        self.target, self.after_every = target, after_every
        self.select, self.select_by = float(select), select_by
        self.teacher_weights = teacher_weights
        self.clamp = tuple(float(v) for v in clamp) if clamp is not None else None
        self._low = self._high = None
        if self.clamp is not None:
            if mean is None or std is None:
                raise ValueError("da.clamp is given in [0, 1] pixel space: DisagreementAugmentation needs the "
                                 "dataset's mean and std (mean=..., std=...) to clamp normalised batches")
            mean_t = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
            std_t = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
            self._low, self._high = (self.clamp[0] - mean_t) / std_t, (self.clamp[1] - mean_t) / std_t
        self._reset()

    @classmethod
    def from_config(cls, cfg: Any, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> "DisagreementAugmentation":
        """Build from a `DAConfig` (the `da` section); `mean`/`std` are the loader's normalisation."""
        return cls(cfg.steps, cfg.lr, cfg.prob, cfg.objective, cfg.optimizer, cfg.temperature, cfg.clamp,
                   cfg.target, mean=mean, std=std, after_every=cfg.after_every, select=cfg.select,
                   select_by=cfg.select_by)

    def __repr__(self) -> str:
        return (f"DisagreementAugmentation(steps={self.steps}, lr={self.lr}, prob={self.prob}, "
                f"objective={self.objective!r}, optimizer={self.optimizer!r}, temperature={self.temperature}, "
                f"clamp={self.clamp}, target={self.target!r}, select={self.select}, select_by={self.select_by!r})")

    # ----------------------------------------------------------------------------------------- training
    def __call__(self, x: Tensor, student: nn.Module, teachers: nn.Module | Sequence[nn.Module]) -> Tensor:
        """The batch to train on: `x` itself, or (with probability `prob`) its perturbed version (with
        `select` < 1: only its selected samples moved). `teachers`: one module or a list of them."""
        self._batches += 1
        self._known, self._moved = None, None
        if self.prob <= 0.0 or self.steps == 0:
            return x
        if self.prob < 1.0 and not bool(torch.rand(1) < self.prob):
            return x
        measure = self.after_every > 0 and self._perturbed % self.after_every == 0
        values: list[Tensor] = []
        count = self.selected_count(x.shape[0])
        if count < x.shape[0]:
            x_new = self._perturb_selected(x, student, teachers, count, measure, values)
        else:
            x_new = self.perturb(x, student, teachers, final_forward=measure, values=values)
        self._perturbed += 1
        self._before += values[0]
        self._abs_dx += (x_new - x.detach()).abs().float().mean() * (x.shape[0] / count)  # over the moved samples
        if measure:
            self._measured += 1
            self._after += values[-1]
            self._before_measured += values[0]
        return x_new

    def selected_count(self, batch_size: int) -> int:
        """How many of `batch_size` samples a perturbed batch moves: round(select * B), at least 1."""
        return batch_size if self.select >= 1.0 else min(batch_size, max(1, int(self.select * batch_size + 0.5)))

    def known_teacher_logits(self) -> KnownTeacherLogits | None:
        """After a call that moved only some samples: the first teacher's logits on the others, from the
        selection forward (the trainer's step hands them to the distiller); None otherwise."""
        return self._known

    def moved_rows(self) -> Tensor | None:
        """After a call that moved only some samples: their rows (sorted); None when the call moved the whole
        batch or none of it (then the returned tensor is `x` itself)."""
        return self._moved

    def _perturb_selected(self, x: Tensor, student: nn.Module, teachers: nn.Module | Sequence[nn.Module],
                          count: int, measure: bool, values: list[Tensor]) -> Tensor:
        """Adaptive DA: rank the clean batch's samples by disagreement (one no-grad forward), move the `count`
        selected ones as a batch of their own, keep the teacher logits of the others."""
        teachers = _teacher_list(teachers)
        used = self._teachers_used(teachers)
        weights = self._ensemble_weights(x, len(used))
        clean = x.detach()
        with torch.no_grad(), frozen_running_stats(student, *used):
            each = [teacher(clean) for teacher in used]
            scores = self.score_per_sample(student(clean), self._combine(each, weights))
        rows = scores.topk(count, largest=self.select_by == "largest").indices.sort().values
        keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        keep[rows] = False
        keep = keep.nonzero().flatten()
        moved = self._steps(take_rows(clean, rows), student, used, None if weights is None else weights[rows],
                            self.steps, measure, None, values, loss_scale=count / x.shape[0])
        x_new = clean.clone()
        x_new[rows] = moved
        self._moved = rows
        if teachers[0] in used:  # the teacher a single-teacher method asks for (Distiller.teacher_logits)
            logits = each[used.index(teachers[0])]
            self._known = KnownTeacherLogits(x_new, teachers[0], keep, take_rows(logits, keep))
        self._clean += scores.mean()
        return x_new

    def epoch_metrics(self) -> dict[str, float]:
        """Statistics since the last call, then reset (keys prefixed `da_`).

        da_perturbed: share of batches perturbed; da_disagreement_before: mean disagreement (the objective's
        positive value) at the clean batch, over perturbed batches; da_disagreement_after: the same after
        the step(s), over measured batches (`after_every`); da_disagreement_gain: after / before on those
        measured batches; da_abs_dx: mean |x_new - x| in normalised pixel units, over the moved samples. With
        select < 1 the disagreements are the moved samples' and da_disagreement_clean is the mean over all
        samples of the clean batches (from the selection forward).
        """
        metrics: dict[str, float] = {}
        if self._batches:
            metrics["da_perturbed"] = self._perturbed / self._batches
        if self._perturbed:
            metrics["da_disagreement_before"] = float(self._before) / self._perturbed
            metrics["da_abs_dx"] = float(self._abs_dx) / self._perturbed
            if self.select < 1.0:
                metrics["da_disagreement_clean"] = float(self._clean) / self._perturbed
        if self._measured:
            metrics["da_disagreement_after"] = float(self._after) / self._measured
            before = float(self._before_measured)
            if before > 0:
                metrics["da_disagreement_gain"] = float(self._after) / before
        self._reset()
        return metrics

    def _reset(self) -> None:
        self._batches = self._perturbed = self._measured = 0
        self._before: Tensor | float = 0.0
        self._after: Tensor | float = 0.0
        self._before_measured: Tensor | float = 0.0
        self._abs_dx: Tensor | float = 0.0
        self._clean: Tensor | float = 0.0
        self._known: KnownTeacherLogits | None = None
        self._moved: Tensor | None = None

    # -------------------------------------------------------------------------------------- the steps
    def score_per_sample(self, student_logits: Tensor, target_logits: Tensor) -> Tensor:
        """Each sample's disagreement (a subclass may define its own, e.g. a Gaussian KL); adaptive DA ranks by it."""
        return disagreement_per_sample(student_logits, target_logits, self.objective, self.temperature)

    def score(self, student_logits: Tensor, target_logits: Tensor) -> Tensor:
        """The batch disagreement the steps increase: the mean of `score_per_sample`."""
        return self.score_per_sample(student_logits, target_logits).mean()

    def _teachers_used(self, teachers: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
        teachers = _teacher_list(teachers)
        if not teachers:
            raise ValueError("Disagreement Augmentation needs at least one teacher")
        if self.target in ("mean", "weighted"):
            return teachers
        if self.target >= len(teachers):
            raise ValueError(f"da.target={self.target} but there are only {len(teachers)} teacher(s) "
                             f"(use 'mean' or 0..{len(teachers) - 1})")
        return [teachers[self.target]]

    @classmethod
    def _target_logits(cls, x: Tensor, teachers: list[nn.Module], weights: Tensor | None = None) -> Tensor:
        return cls._combine([teacher(x) for teacher in teachers], weights)

    @staticmethod
    def _combine(logits: list[Tensor], weights: Tensor | None = None) -> Tensor:
        """The target: one teacher's logits, the teachers' mean, or their weighted sum ((B, M) weights)."""
        if weights is not None:  # (B, M), rows summing to 1
            return (weights.unsqueeze(-1) * torch.stack([z.float() for z in logits], dim=1)).sum(1)
        if len(logits) == 1:
            return logits[0]
        return torch.stack([z.float() for z in logits]).mean(dim=0)

    def _ensemble_weights(self, x: Tensor, count: int) -> Tensor | None:
        """target 'weighted': the (B, M) weights from `teacher_weights(x)`, rows normalised (None = the mean)."""
        if self.target != "weighted" or self.teacher_weights is None:
            return None
        with torch.no_grad():
            weights = self.teacher_weights(x)
        if weights is None:
            return None
        weights = weights.detach().to(x.device, torch.float32)
        weights = weights.expand(x.shape[0], count) if weights.dim() == 1 else weights
        return weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def perturb(self, x: Tensor, student: nn.Module, teachers: Sequence[nn.Module], *, steps: int | None = None,
                final_forward: bool = False, observe: Observer | None = None,
                values: list[Tensor] | None = None) -> Tensor:
        """Always perturb (no coin flip): `steps` (default `self.steps`) input steps from `x`.

        `observe(k, student_logits, target_logits)` is called with the (detached) logits at x_k for
        k = 0..steps-1, and for k = steps too when `final_forward` (one more no-grad forward). The batch
        disagreement at each of those points is appended to `values` when given. Returns the new batch
        (detached; same dtype, device and memory format as `x`).
        """
        steps = self.steps if steps is None else steps
        used = self._teachers_used(teachers)
        return self._steps(x, student, used, self._ensemble_weights(x, len(used)), steps, final_forward, observe,
                           values)

    def _steps(self, x: Tensor, student: nn.Module, used: list[nn.Module], weights: Tensor | None, steps: int,
               final_forward: bool, observe: Observer | None, values: list[Tensor] | None,
               loss_scale: float = 1.0) -> Tensor:
        """The input steps from `x` against the target of `used` (see `perturb`); the gradient is that of
        -disagreement * loss_scale."""
        x_adv = x.detach().clone().requires_grad_(True)
        stepper = _InputStep(self.optimizer, x_adv, self.lr)
        low = high = None
        if self._low is not None:
            low = self._low.to(x_adv.device, x_adv.dtype)
            high = self._high.to(x_adv.device, x_adv.dtype)
        fp16 = _fp16_autocast(x_adv.device.type)
        with torch.enable_grad(), frozen_running_stats(student, *used):
            for k in range(steps):
                # The models see a view of the leaf x_adv, not the leaf itself: autocast caches its casts of
                # leaves that require grad (meant for weights) for the whole autocast region, and would keep
                # feeding the stale bf16/fp16 copy of x_adv after the in-place update.
                x_in = x_adv.view_as(x_adv)
                student_logits = student(x_in)
                target_logits = self._target_logits(x_in, used, weights)
                value = self.score(student_logits, target_logits)
                grad = _input_gradient(-value if loss_scale == 1.0 else -value * loss_scale, x_adv, fp16)
                if values is not None:
                    values.append(value.detach())
                if observe is not None:
                    observe(k, student_logits.detach(), target_logits.detach())
                del student_logits, target_logits, value
                with torch.autocast(x_adv.device.type, enabled=False):
                    stepper.step(grad)
                if low is not None:
                    with torch.no_grad():
                        x_adv.copy_(torch.maximum(torch.minimum(x_adv, high), low))
            if final_forward:
                with torch.no_grad():
                    x_in = x_adv.detach()
                    student_logits = student(x_in)
                    target_logits = self._target_logits(x_in, used, weights)
                    if values is not None:
                        values.append(self.score(student_logits, target_logits))
                    if observe is not None:
                        observe(steps, student_logits, target_logits)
        return x_adv.detach()
