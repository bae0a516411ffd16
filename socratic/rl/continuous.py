"""Continuous actions: how a policy's outputs become actions, and the policy-distillation losses between them.

Policy distillation (Rusu et al. 2016, "Policy Distillation", ICLR) matches a student's outputs to a teacher's on
the teacher's states; for Box actions the outputs are

* a deterministic teacher (TD3, DDPG): its action, shape (B, A) -> loss `mse`, sum over action dimensions of
  (a^T - a^S)^2, averaged over the batch (Rusu et al.'s MSE, on actions instead of Q-values);
* a Gaussian teacher (PPO, A2C, SAC): mean and log standard deviation, shape (B, 2A) = [mu, log sigma] ->
  loss `kl`, KL(N(mu^T, sigma^T) || N(mu^S, sigma^S)) summed over the (independent) action dimensions, or
  `mse` on the means.

Outputs live in the teacher's own action parametrisation (`ACTION_MAPS`) and the student is trained in the same
one: `clip` (PPO/A2C: the mean is the action in environment units, clipped to the bounds), `tanh` (SAC: the
Gaussian is over pre-squash values, action = rescale(tanh(mu)); the KL of two tanh-squashed Gaussians equals the KL
of the Gaussians, tanh being invertible) and `scaled` (TD3/DDPG: the actor's output is already in [-1, 1],
action = rescale(clip(a, -1, 1))). Evaluation plays the mean action (greedy).

Disagreement Augmentation (Wong et al., "A Socratic Approach to Knowledge Distillation", Sec. 5.4 names continuous
control as its next step) perturbs the observations to increase the same divergence the student is trained on:
`ContinuousDisagreement` is `socratic.augment.DisagreementAugmentation` with that objective (`kl`: the Gaussian
KL, `mse`: the mean-action MSE) and an optional clamp to the observation space's finite bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from socratic.augment.disagreement import DisagreementAugmentation

ACTION_MAPS = ("clip", "tanh", "scaled")
CONTINUOUS_LOSSES = ("kl", "mse")
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # SB3's SAC clamp; applied to every Gaussian student


def split_gaussian(outputs: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 2A) [mu, log sigma] -> (mu, log sigma), each (B, A)."""
    half = outputs.shape[1] // 2
    return outputs[:, :half], outputs[:, half:]


def gaussian_kl_per_sample(student: Tensor, teacher: Tensor) -> Tensor:
    """KL(N(mu_T, sigma_T^2) || N(mu_S, sigma_S^2)) per sample, summed over action dimensions, shape (B,).

    Per dimension: log(sigma_S / sigma_T) + (sigma_T^2 + (mu_T - mu_S)^2) / (2 sigma_S^2) - 1/2.
    Both arguments are (B, 2A) [mu, log sigma]; computed in fp32.
    """
    mu_s, log_s = split_gaussian(student.float())
    mu_t, log_t = split_gaussian(teacher.float())
    var_ratio = torch.exp(2.0 * (log_t - log_s))
    return (log_s - log_t + 0.5 * var_ratio + 0.5 * (mu_t - mu_s).pow(2) * torch.exp(-2.0 * log_s) - 0.5).sum(dim=1)


def action_mse_per_sample(student: Tensor, teacher: Tensor, action_dim: int) -> Tensor:
    """sum_d (a^T_d - a^S_d)^2 per sample on the first `action_dim` outputs (the action, or a Gaussian's mean)."""
    return (student[:, :action_dim].float() - teacher[:, :action_dim].float()).pow(2).sum(dim=1)


def continuous_loss(name: str, student: Tensor, teacher: Tensor, action_dim: int) -> Tensor:
    """`kl` (Gaussian KL, both (B, 2A)) or `mse` (mean-action MSE), averaged over the batch."""
    if name == "kl":
        if student.shape[1] != 2 * action_dim or teacher.shape[1] != 2 * action_dim:
            raise ValueError("the kl loss needs Gaussian outputs [mu, log sigma] of width 2 x action_dim on both "
                             f"sides, got {tuple(student.shape)} and {tuple(teacher.shape)}")
        return gaussian_kl_per_sample(student, teacher).mean()
    if name == "mse":
        return action_mse_per_sample(student, teacher, action_dim).mean()
    raise ValueError(f"loss: '{name}' is not one of {', '.join(CONTINUOUS_LOSSES)} for continuous actions")


def to_env_action(mean: Tensor, action_map: str, low: Tensor, high: Tensor) -> Tensor:
    """The environment action of a policy's mean output under `action_map` (see the module docstring)."""
    if action_map == "clip":
        return torch.maximum(torch.minimum(mean, high), low)
    if action_map == "tanh":
        unit = torch.tanh(mean)
    elif action_map == "scaled":
        unit = mean.clamp(-1.0, 1.0)
    else:
        raise ValueError(f"action map '{action_map}' is not one of {', '.join(ACTION_MAPS)}")
    return low + 0.5 * (unit + 1.0) * (high - low)


class ContinuousDisagreement(DisagreementAugmentation):
    """Disagreement Augmentation on observations for continuous-action policy distillation.

    `socratic.augment.DisagreementAugmentation` whose disagreement is the distillation loss itself (objective
    `kl`: the Gaussian KL; `mse`: the mean-action MSE per action dimension) and whose perturbed observations are
    clamped to `bounds` = (low, high) after every step (the observation space's, where it has finite ones).
    """

    def __init__(self, da_cfg: Any, action_dim: int,
                 bounds: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        super().__init__(steps=da_cfg.steps, lr=da_cfg.lr, prob=da_cfg.prob, objective=da_cfg.objective,
                         optimizer=da_cfg.optimizer, temperature=da_cfg.temperature, clamp=None, target=0,
                         select=da_cfg.select, select_by=da_cfg.select_by)
        if self.objective not in CONTINUOUS_LOSSES:
            raise ValueError(f"da.objective: '{self.objective}' is not one of {', '.join(CONTINUOUS_LOSSES)} for "
                             "continuous actions")
        self.action_dim = int(action_dim)
        if bounds is not None:  # read by DisagreementAugmentation.perturb after every step
            self._low = torch.tensor(list(bounds[0]), dtype=torch.float32).view(1, -1)
            self._high = torch.tensor(list(bounds[1]), dtype=torch.float32).view(1, -1)

    def score_per_sample(self, student_out: Tensor, target_out: Tensor) -> Tensor:
        if self.objective == "kl":
            return gaussian_kl_per_sample(student_out, target_out)
        return action_mse_per_sample(student_out, target_out, self.action_dim) / self.action_dim


__all__ = ["ACTION_MAPS", "CONTINUOUS_LOSSES", "ContinuousDisagreement", "action_mse_per_sample",
           "continuous_loss", "gaussian_kl_per_sample", "split_gaussian", "to_env_action"]
