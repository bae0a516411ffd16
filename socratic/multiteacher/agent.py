"""MTKD-RL: Yang, Yu, Yang, An, Yu, Huang & Xu, "Multi-Teacher Knowledge Distillation with Reinforcement
Learning for Visual Recognition", AAAI 2025 (code: github.com/winycg/MTKD-RL).

An agent reads, per sample i and teacher m, the state (Eq. 4)

    s_i^m = [ f_i^{T_m} || z_i^{T_m} || CE(z_i^{T_m}, y_i) || cos(r_m(f_i^S), f_i^{T_m}) || KL_i^{T_m} ]

and outputs the teacher weights (the action) for the logit and the feature term of Eq. (2). The student is
trained with those weights for an epoch while (state, action, reward) is recorded per batch (an episode); then
the agent takes one policy-gradient step per recorded batch (Algorithm 2). The first `warmup_epochs` epochs use
weights 1 for every teacher and the agent is pre-trained on their history (Algorithm 1).

Paper (defaults) and reference code (selectable), where they differ:

* agent: one MLP pi_theta_m per teacher (`layout="per_teacher"`): Linear(d_m + C + 3, hidden)-ReLU-Linear(hidden,
  2), the two outputs being teacher m's logit and feature score; a softmax over the M teachers turns the scores
  into weights in (0, 1) (the paper's 'finished by a softmax'). Reference: one MLP over the concatenated states
  of all teachers (`layout="shared"`): Linear(sum_m dims, hidden, no bias)-ReLU, then two heads Linear(hidden, M)
  each followed by a softmax over teachers.
* action: the agent's weights a combined with the confidence-aware c = (1 - softmax_m CE_m) / (M - 1) and the
  divergence-aware d (softmax_m of the KL for logits, of the cosine for features): their mean (`combine="mean"`,
  the reference's default and the paper's 'combine ... in the action space'), a learned softmax mix
  (`"dynamic"`, the reference's --dynamic), or the agent alone (`"none"`).
* reward: Eq. (5) per sample and teacher, R_i^m = -CE_i - alpha KL_i^m - beta MSE_i^m, normalised by Eq. (7)
  (`reward="paper"`): min-max over the teachers, minus the mean of the *normalised* rewards (so the M values
  of a sample sum to 0 and below-average teachers get a negative update, as the text says). `"paper_literal"`
  subtracts the mean of the raw rewards as Eq. (7) is printed. `"reference"`: one reward per sample, the negative
  weighted loss -(CE + alpha sum_m w_l KL_m + beta sum_m w_f MSE_m), z-scored over the batch and clamped to
  [0, 1], shared by the teachers.
* update: Eq. (6) (`update="paper"`) is gradient *ascent* on mean_i sum_m R_i^m (w_l,i^m + w_f,i^m) through the
  agent (the printed minus sign would lower the weights of rewarded teachers, contradicting the text; the sum
  over i is a mean, which only rescales the learning rate). `"reference"`: the reference's reward-weighted
  binary cross-entropy of the weights towards 1, mean_{i,m} -R_i log w_i^m per head.
* rewards come from the same (pre-step) forward pass that trained the student, as in the reference code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from socratic.engine import distributed
from socratic.multiteacher.options import UPDATES, AgentOptions, MultiTeacherOptions
from socratic.multiteacher.pool import TeacherPool
from socratic.multiteacher.strategies import (
    register_weighting,
    BatchView,
    WeightingStrategy,
    confidence_weights,
    divergence_weights,
)



# ------------------------------------------------------------------------------------------------- state
def build_states(teacher_embeddings: Sequence[Tensor], teacher_logits: Tensor, teacher_ce: Tensor, cosine: Tensor,
                 kl: Tensor) -> list[Tensor]:
    """Eq. (4): per teacher m a (B, d_m + C + 3) float32 tensor [embedding, logits, CE, cosine, KL], detached."""
    states = []
    for m, embedding in enumerate(teacher_embeddings):
        states.append(torch.cat([
            embedding.float(), teacher_logits[m].float(), teacher_ce[:, m:m + 1].float(), cosine[:, m:m + 1].float(),
            kl[:, m:m + 1].float(),
        ], dim=1).detach())
    return states


# ------------------------------------------------------------------------------------------------ rewards
def paper_rewards(student_ce: Tensor, kl: Tensor, feature_mse: Tensor | None, alpha: float, beta: float) -> Tensor:
    """Eq. (5): R[i, m] = -CE_i - alpha KL_i^m - beta MSE_i^m (the feature part only with a feature term)."""
    reward = -student_ce.float().unsqueeze(1) - alpha * kl.float()
    if feature_mse is not None:
        reward = reward - beta * feature_mse.float()
    return reward


def normalized_rewards(rewards: Tensor, literal: bool = False) -> Tensor:
    """Eq. (7) per sample over the M teachers: min-max to [0, 1], minus the mean of the normalised values (or,
    `literal`, minus the mean of the raw rewards as printed). Equal rewards give 0."""
    low = rewards.min(dim=1, keepdim=True).values
    high = rewards.max(dim=1, keepdim=True).values
    scaled = (rewards - low) / (high - low).clamp_min(1e-12)
    baseline = rewards.mean(dim=1, keepdim=True) if literal else scaled.mean(dim=1, keepdim=True)
    return scaled - baseline


def reference_rewards(student_ce: Tensor, kl: Tensor, feature_mse: Tensor | None, w_logit: Tensor,
                      w_feat: Tensor, alpha: float, beta: float) -> Tensor:
    """The reference code's reward: r_i = -(CE_i + alpha sum_m w_l KL_m + beta sum_m w_f MSE_m), z-scored over
    the batch and clamped to [0, 1]; shape (B, 1) (one value per sample, shared by the teachers)."""
    loss = student_ce.float() + alpha * (w_logit.float() * kl.float()).sum(dim=1)
    if feature_mse is not None:
        loss = loss + beta * (w_feat.float() * feature_mse.float()).sum(dim=1)
    reward = -loss
    std = reward.std() if reward.numel() > 1 else reward.new_tensor(1.0)
    z = (reward - reward.mean()) / std.clamp_min(1e-12)
    return z.clamp(0.0, 1.0).unsqueeze(1)


def agent_loss(w_logit: Tensor, w_feat: Tensor | None, rewards: Tensor, update: str = "paper") -> Tensor:
    """The loss whose gradient step is the agent update. `paper` (Eq. 6, ascent): -mean_i sum_m R w;
    `reference`: mean_{i,m} -R log w (binary cross-entropy towards 1 weighted by R), per head, summed."""
    heads = [w_logit] if w_feat is None else [w_logit, w_feat]
    if update == "paper":
        return -sum((rewards * w).sum(dim=1).mean() for w in heads)
    if update == "reference":
        return sum((-rewards * torch.log(w.clamp_min(1e-12)).clamp_min(-100.0)).mean() for w in heads)
    raise ValueError(f"method.agent.update: '{update}' is not one of {', '.join(UPDATES)}")


# -------------------------------------------------------------------------------------------------- agent
class MTKDAgent(nn.Module):
    """The policy network(s), the action construction and the agent's own optimizer.

    `policy(states) -> (a_logit, a_feat)`, each (B, M) with rows on the simplex; `act(states, c, d_logit,
    d_feat) -> (w_logit, w_feat)` combines them with the rule-based weights. The optimizer state and the count
    of finished epochs travel in the module's state dict (`get_extra_state`), so a checkpoint of this module
    is everything a resume needs.
    """

    def __init__(self, state_dims: Sequence[int], hidden: int = 128, layout: str = "per_teacher",
                 combine: str = "mean", optimizer: str = "sgd", lr: float = 0.1) -> None:
        super().__init__()
        AgentOptions(layout=layout, hidden=hidden, combine=combine, optimizer=optimizer, lr=lr).check("method.agent")
        self.state_dims = [int(d) for d in state_dims]
        self.num_teachers = len(self.state_dims)
        self.layout, self.combine = layout, combine
        if layout == "per_teacher":
            self.nets = nn.ModuleList(
                nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 2)) for d in self.state_dims)
        else:
            self.trunk = nn.Sequential(nn.Linear(sum(self.state_dims), hidden, bias=False), nn.ReLU())
            self.logit_head = nn.Linear(hidden, self.num_teachers)
            self.feature_head = nn.Linear(hidden, self.num_teachers)
        if combine == "dynamic":
            # mixing logits of (agent, confidence, divergence) for the logit (row 0) and feature (row 1) weights;
            # zeros = the plain mean at the start
            self.mix = nn.Parameter(torch.zeros(2, 3))
        self.optimizer_name, self.lr = optimizer, float(lr)
        params = list(self.parameters())
        self.optimizer = (torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr))
        self.epochs_done = 0

    def policy(self, states: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        if self.layout == "per_teacher":
            scores = torch.stack([net(s) for net, s in zip(self.nets, states)], dim=1)  # (B, M, 2)
            weights = F.softmax(scores, dim=1)
            return weights[..., 0], weights[..., 1]
        hidden = self.trunk(torch.cat(list(states), dim=1))
        return F.softmax(self.logit_head(hidden), dim=1), F.softmax(self.feature_head(hidden), dim=1)

    def act(self, states: Sequence[Tensor], confidence: Tensor, div_logit: Tensor,
            div_feat: Tensor) -> tuple[Tensor, Tensor]:
        a_logit, a_feat = self.policy(states)
        if self.combine == "none":
            return a_logit, a_feat
        if self.combine == "mean":
            return (a_logit + confidence + div_logit) / 3.0, (a_feat + confidence + div_feat) / 3.0
        mix = F.softmax(self.mix, dim=1)
        w_logit = mix[0, 0] * a_logit + mix[0, 1] * confidence + mix[0, 2] * div_logit
        w_feat = mix[1, 0] * a_feat + mix[1, 1] * confidence + mix[1, 2] * div_feat
        return w_logit, w_feat

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "epochs_done": self.epochs_done}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.epochs_done = int(state["epochs_done"])


@dataclass
class Episode:
    """One batch of the episode history: states, the rule-based weights, and the (normalised) rewards."""

    states: list[Tensor]
    confidence: Tensor
    div_logit: Tensor
    div_feat: Tensor
    rewards: Tensor


class MTKDRLStrategy(WeightingStrategy):
    """MTKD-RL as a weighting strategy (Yang et al., AAAI 2025; see the module docstring for the details and
    for where the paper and the reference code differ).

    state_dims: per-teacher state sizes (`TeacherPool.state_dims`); agent: `AgentOptions`; alpha, beta,
    feature_loss: the loss of Eq. (2), which the rewards mirror.
    """

    name = "mtkd_rl"
    needs_regressed = True

    def __init__(self, state_dims: Sequence[int], agent: Any = None, *, alpha: float = 1.0, beta: float = 5.0,
                 feature_loss: bool = True) -> None:
        super().__init__()
        agent = agent or AgentOptions()
        agent.check("method.agent")
        self.agent = MTKDAgent(state_dims, agent.hidden, agent.layout, agent.combine, agent.optimizer, agent.lr)
        self.reward, self.update_rule = agent.reward, agent.update
        self.update_every, self.warmup_epochs = agent.update_every, agent.warmup_epochs
        self.alpha, self.beta, self.feature_loss = alpha, beta, feature_loss
        self.history: list[Episode] = []
        self._losses: list[float] = []
        self._rewards: list[Tensor] = []

    @property
    def warming_up(self) -> bool:
        return self.agent.epochs_done < self.warmup_epochs

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"agent": self.agent}

    def _rule_weights(self, batch: BatchView) -> tuple[Tensor, Tensor, Tensor]:
        return (confidence_weights(batch.teacher_ce.float()), divergence_weights(batch.kl),
                divergence_weights(batch.cosine))

    def forward(self, batch: BatchView) -> tuple[Tensor, Tensor]:
        if self.warming_up:  # Algorithm 1, step 1: w = 1 for every teacher
            ones = torch.ones(batch.batch_size, batch.num_teachers, device=batch.kl.device)
            return ones, ones
        states = self._states(batch)
        with torch.no_grad(), torch.autocast(batch.kl.device.type, enabled=False):
            return self.agent.act(states, *self._rule_weights(batch))

    def _states(self, batch: BatchView) -> list[Tensor]:
        return build_states(batch.teacher_embeddings, batch.teacher_logits, batch.teacher_ce, batch.cosine, batch.kl)

    def observe(self, batch: BatchView, w_logit: Tensor, w_feat: Tensor) -> None:
        mse = batch.feature_mse if self.feature_loss else None
        if self.reward == "reference":
            rewards = reference_rewards(batch.student_ce, batch.kl, mse, w_logit, w_feat, self.alpha, self.beta)
        else:
            raw = paper_rewards(batch.student_ce, batch.kl, mse, self.alpha, self.beta)
            rewards = normalized_rewards(raw, literal=self.reward == "paper_literal")
            self._rewards.append(raw.detach().mean(dim=0))
        self.history.append(Episode(self._states(batch), *self._rule_weights(batch), rewards.detach()))
        if self.update_every and len(self.history) >= self.update_every:
            self.update()

    def update(self) -> float | None:
        """One agent step per recorded batch (Algorithm 2, lines 11-13), then the history is cleared."""
        if not self.history:
            return None
        device = self.history[0].rewards.device
        total = 0.0
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            for episode in self.history:
                w_logit, w_feat = self.agent.act(episode.states, episode.confidence, episode.div_logit,
                                                 episode.div_feat)
                loss = agent_loss(w_logit, w_feat if self.feature_loss else None, episode.rewards, self.update_rule)
                self.agent.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.agent.optimizer.step()
                total += float(loss.detach())
        self.agent.optimizer.zero_grad(set_to_none=True)
        distributed.all_reduce_mean(self.agent)  # under torchrun: every rank learned from its shard; keep one agent
        count = len(self.history)
        self.history.clear()
        self._losses.append(total / count)
        return total / count

    def on_epoch_end(self, epoch: int) -> None:
        self.update()  # after the warm-up epoch(s) this is Algorithm 1's agent pre-training
        self.agent.epochs_done += 1

    def epoch_metrics(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self._losses:
            metrics["agent_loss"] = sum(self._losses) / len(self._losses)
            metrics["agent_updates"] = float(len(self._losses))
        if self._rewards:
            mean = torch.stack(self._rewards).mean(dim=0)
            for m, value in enumerate(mean.tolist()):
                metrics[f"reward_{m}"] = value
        self._losses, self._rewards = [], []
        return metrics


@register_weighting("mtkd_rl")
def _mtkd_rl(options: MultiTeacherOptions, pool: TeacherPool) -> MTKDRLStrategy:
    return MTKDRLStrategy(pool.state_dims(pool.num_classes or 0), options.agent, alpha=options.alpha,
                          beta=options.beta, feature_loss=options.feature_loss)
