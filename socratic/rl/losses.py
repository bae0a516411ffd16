"""Policy-distillation losses on Q-values, as small pure functions (no state, no weights).

Rusu et al. 2016, "Policy Distillation" (ICLR), Sec. 4, give three ways to match a student network's outputs
q^S to a teacher DQN's Q-values q^T on the teacher's states:

* `nll`: negative log-likelihood of the teacher's greedy action a = argmax q^T under softmax(q^S);
* `mse`: squared error between the Q-value vectors, sum_a (q^T_a - q^S_a)^2;
* `kl_rusu`: KL(softmax(q^T / tau) || softmax(q^S)), the teacher sharpened by a small tau and the student's
  outputs *not* tempered (their best loss; tau = 0.01).

The DA paper (Wong et al., "A Socratic Approach to Knowledge Distillation", Sec. 3.3) trains with KL at
tau = 0.01 as well, but its code divides *both* sides by tau before the softmaxes (`kl`, the default here):
KL(softmax(q^T / tau) || softmax(q^S / tau)), which scales the student's gradient by 1/tau. Their code takes
log(softmax(.)), which underflows to -inf at tau = 0.01; here every log-probability is a `log_softmax`.

All losses are averaged over the batch (KL and MSE summed over actions first: `batchmean`); the
`*_per_sample` forms return shape (B,) for weighted sums (dual policy distillation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from socratic.losses import tempered_kl_per_sample

POLICY_LOSSES = ("kl", "kl_rusu", "mse", "nll")
PAPER_TEMPERATURE = 0.01


def policy_kl_per_sample(student_q: Tensor, teacher_q: Tensor, temperature: float = PAPER_TEMPERATURE,
                         temper_student: bool = True) -> Tensor:
    """KL(softmax(q^T/tau) || softmax(q^S/tau)) per sample (q^S not divided when `temper_student` is False)."""
    return tempered_kl_per_sample(student_q, teacher_q, temperature, None if temper_student else 1.0)


def policy_kl(student_q: Tensor, teacher_q: Tensor, temperature: float = PAPER_TEMPERATURE,
              temper_student: bool = True) -> Tensor:
    """The DA paper's training loss (both sides tempered; `temper_student=False` gives Rusu's), batch mean."""
    return policy_kl_per_sample(student_q, teacher_q, temperature, temper_student).mean()


def policy_mse_per_sample(student_q: Tensor, teacher_q: Tensor) -> Tensor:
    """sum_a (q^T_a - q^S_a)^2 per sample (Rusu et al.'s MSE on Q-values)."""
    return (student_q.float() - teacher_q.float()).pow(2).sum(dim=1)


def policy_nll_per_sample(student_q: Tensor, teacher_q: Tensor) -> Tensor:
    """-log softmax(q^S)[argmax q^T] per sample (Rusu et al.'s NLL of the teacher's greedy action)."""
    return F.cross_entropy(student_q.float(), teacher_q.argmax(dim=1), reduction="none")


def policy_loss_per_sample(name: str, student_q: Tensor, teacher_q: Tensor,
                           temperature: float = PAPER_TEMPERATURE) -> Tensor:
    """One of `POLICY_LOSSES` per sample, shape (B,)."""
    if name == "kl":
        return policy_kl_per_sample(student_q, teacher_q, temperature, temper_student=True)
    if name == "kl_rusu":
        return policy_kl_per_sample(student_q, teacher_q, temperature, temper_student=False)
    if name == "mse":
        return policy_mse_per_sample(student_q, teacher_q)
    if name == "nll":
        return policy_nll_per_sample(student_q, teacher_q)
    raise ValueError(f"loss: '{name}' is not one of {', '.join(POLICY_LOSSES)}")


def policy_loss(name: str, student_q: Tensor, teacher_q: Tensor, temperature: float = PAPER_TEMPERATURE) -> Tensor:
    """One of `POLICY_LOSSES`, averaged over the batch."""
    return policy_loss_per_sample(name, student_q, teacher_q, temperature).mean()


def dpd_weights(peer_values: Tensor, own_values: Tensor, beta: float = 1.0, clip_low: float = 0.01,
                clip_high: float = 100.0) -> Tensor:
    """Lai et al. 2020, "Dual Policy Distillation" (IJCAI): per-state weights of the distillation from the peer.

    xi = peer_value - own_value estimates the disadvantage of the learner on each state (the peer is better
    where xi > 0); w = clip(exp(beta * xi), clip_low, clip_high), detached and normalised to sum to 1 over
    the batch, so distillation concentrates on states where the peer looks better. (The authors' PPO code
    computes own - peer, the opposite sign of the paper and of their DDPG code; the paper's sign is used.)
    """
    xi = (peer_values.detach().float() - own_values.detach().float())
    weights = torch.exp(beta * xi).clamp(clip_low, clip_high)
    return weights / weights.sum()


__all__ = [
    "PAPER_TEMPERATURE", "POLICY_LOSSES", "dpd_weights", "policy_kl", "policy_kl_per_sample", "policy_loss",
    "policy_loss_per_sample", "policy_mse_per_sample", "policy_nll_per_sample",
]
