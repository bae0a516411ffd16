"""Playing vectorised environments: teacher data collection and greedy evaluation.

Collection follows the DA paper (Wong et al., Sec. 3.3.1) and its code: the teacher plays; at every step, with
probability epsilon = 0.05 the action is uniformly random and that state is *not* stored; otherwise the
teacher's greedy action is taken and (state, teacher Q-values) is stored. Rusu et al. 2016 ("Policy
Distillation", Appendix A) likewise let the teacher play epsilon-greedily with epsilon = 0.05.

Continuous actions (`ContinuousCollector`): the teacher plays its mean action plus Gaussian exploration noise of
standard deviation `action_noise` x half the action range, clipped to the bounds (the analogue of epsilon, as
TD3's exploration noise), and every state is stored with the teacher's outputs at it.

Evaluation plays greedily (argmax Q; for continuous actions the mean action, `policy.act`) for an exact number
of episodes: the episodes are split evenly over the
environments in advance and each environment plays its quota, so short episodes are not over-represented
(taking "the first N episodes to finish" would be biased towards short, usually low-scoring, episodes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


def _as_tensor(obs: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(obs)).to(device)


@dataclass
class CollectStats:
    """What one collection round did."""

    stored: int = 0
    steps: int = 0
    random_actions: int = 0
    episode_returns: list[float] = field(default_factory=list)

    def as_metrics(self) -> dict[str, float]:
        metrics = {"collect_states": float(self.stored), "collect_steps": float(self.steps),
                   "collect_random_fraction": self.random_actions / max(self.steps, 1),
                   "collect_episodes": float(len(self.episode_returns))}
        if self.episode_returns:
            metrics["collect_return_mean"] = float(np.mean(self.episode_returns))
        return metrics


class TeacherCollector:
    """Lets a teacher play `envs` (a gymnasium vector env with same-step autoreset) and returns the states
    of its greedy steps with its Q-values. Episodes continue across calls until `restart(seed)`, which resets
    the environments and the exploration generator: what follows is then a function of (teacher, seed)."""

    def __init__(self, teacher: nn.Module, envs: Any, epsilon: float = 0.05, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.teacher, self.envs, self.epsilon = teacher, envs, float(epsilon)
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.num_envs = envs.num_envs
        self.num_actions = int(envs.single_action_space.n)
        self._returns = np.zeros(self.num_envs)
        self.restart(seed)

    def restart(self, seed: int) -> None:
        """Reset the environments with `seed` (environment i gets seed + i) and reseed the exploration draws;
        unfinished episodes are dropped (their returns are not counted)."""
        self.rng = np.random.default_rng(seed)
        self.obs, _ = self.envs.reset(seed=seed)
        self._returns[:] = 0.0

    @torch.no_grad()
    def collect(self, count: int, on_store: Callable[[int], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray, CollectStats]:
        """Play until `count` greedy-step states are stored; returns (states uint8, Q-values float32, stats).
        `on_store(n)` is told how many states each vector step stored (a progress bar)."""
        stats = CollectStats()
        states: list[np.ndarray] = []
        q_values: list[np.ndarray] = []
        stored = 0
        while stored < count:
            obs = np.asarray(self.obs)
            q = self.teacher(_as_tensor(obs, self.device)).float().cpu().numpy()
            actions = q.argmax(axis=1)
            explore = self.rng.random(self.num_envs) < self.epsilon
            actions[explore] = self.rng.integers(0, self.num_actions, size=int(explore.sum()))
            keep = ~explore
            if keep.any():
                states.append(obs[keep].astype(np.uint8, copy=True))
                q_values.append(q[keep])
                stored += int(keep.sum())
                if on_store is not None:
                    on_store(int(keep.sum()))
            self.obs, rewards, terminated, truncated, _ = self.envs.step(actions)
            stats.steps += self.num_envs
            stats.random_actions += int(explore.sum())
            self._returns += rewards
            for i in np.flatnonzero(np.logical_or(terminated, truncated)):
                stats.episode_returns.append(float(self._returns[i]))
                self._returns[i] = 0.0
        all_states = np.concatenate(states)[:count]
        all_q = np.concatenate(q_values)[:count]
        stats.stored = len(all_states)
        return all_states, all_q, stats


class ContinuousCollector(TeacherCollector):
    """`TeacherCollector` for Box actions: the teacher's mean action (`teacher.act`) plus Gaussian noise of std
    `action_noise` x (high - low) / 2, clipped to the bounds; every state is stored with the teacher's outputs."""

    def __init__(self, teacher: nn.Module, envs: Any, action_noise: float = 0.1, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        if action_noise < 0:
            raise ValueError(f"action_noise must be >= 0, got {action_noise}")
        self.teacher, self.envs, self.action_noise = teacher, envs, float(action_noise)
        self.epsilon = 0.0
        self.device = torch.device(device)
        self.num_envs = envs.num_envs
        space = envs.single_action_space
        self.low, self.high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
        self._returns = np.zeros(self.num_envs)
        self.restart(seed)

    @torch.no_grad()
    def collect(self, count: int, on_store: Callable[[int], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray, CollectStats]:
        """Play until `count` states are stored; returns (states float32, teacher outputs float32, stats)."""
        stats = CollectStats()
        states: list[np.ndarray] = []
        outputs: list[np.ndarray] = []
        stored = 0
        scale = 0.5 * (self.high - self.low)
        while stored < count:
            obs = np.asarray(self.obs, dtype=np.float32)
            x = _as_tensor(obs, self.device)
            out = self.teacher(x).float()
            actions = self.teacher.act(x).cpu().numpy().reshape(self.num_envs, *self.low.shape)
            if self.action_noise > 0:
                actions = actions + self.rng.normal(size=actions.shape).astype(np.float32) * self.action_noise * scale
                actions = np.clip(actions, self.low, self.high)
            states.append(obs.copy())
            outputs.append(out.cpu().numpy())
            stored += self.num_envs
            if on_store is not None:
                on_store(self.num_envs)
            self.obs, rewards, terminated, truncated, _ = self.envs.step(actions)
            stats.steps += self.num_envs
            self._returns += rewards
            for i in np.flatnonzero(np.logical_or(terminated, truncated)):
                stats.episode_returns.append(float(self._returns[i]))
                self._returns[i] = 0.0
        all_states = np.concatenate(states)[:count]
        all_out = np.concatenate(outputs)[:count]
        stats.stored = len(all_states)
        return all_states, all_out, stats


def greedy_actions(policy: nn.Module, obs: torch.Tensor) -> np.ndarray:
    """argmax Q for Q-networks; the policy's own greedy (mean) action when it has `act` (continuous actions)."""
    if hasattr(policy, "act"):
        return policy.act(obs).cpu().numpy()
    return policy(obs).argmax(dim=1).cpu().numpy()


@torch.no_grad()
def play_episodes(policy: nn.Module, envs: Any, episodes: int, seed: int = 0, device: torch.device | str = "cpu",
                  epsilon: float = 0.0) -> np.ndarray:
    """Scores (undiscounted returns) of exactly `episodes` episodes of greedy play (epsilon-greedy if > 0).

    Continuous actions: the mean action (`policy.act`), a uniformly random one with probability epsilon.
    Environment i plays episodes // n (+1 for the first episodes % n environments) episodes; the vector env is
    reset with `seed`, so the result is a function of (policy, seed).
    """
    if episodes <= 0:
        return np.zeros(0)
    device = torch.device(device)
    rng = np.random.default_rng(seed + 1)
    n = envs.num_envs
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    returns: list[list[float]] = [[] for _ in range(n)]
    running = np.zeros(n)
    obs, _ = envs.reset(seed=seed)
    space = envs.single_action_space
    was_training = policy.training
    policy.eval()
    try:
        while any(len(r) < q for r, q in zip(returns, quota)):
            actions = greedy_actions(policy, _as_tensor(obs, device))
            if epsilon > 0:
                explore = rng.random(n) < epsilon
                if hasattr(space, "n"):
                    actions[explore] = rng.integers(0, int(space.n), size=int(explore.sum()))
                else:  # a uniformly random Box action
                    actions[explore] = rng.uniform(space.low, space.high, size=(int(explore.sum()), *space.shape))
            obs, rewards, terminated, truncated, _ = envs.step(actions)
            running += rewards
            for i in np.flatnonzero(np.logical_or(terminated, truncated)):
                if len(returns[i]) < quota[i]:
                    returns[i].append(float(running[i]))
                running[i] = 0.0
    finally:
        policy.train(was_training)
    return np.array([r for per_env in returns for r in per_env])


def score_summary(scores: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation (population, as numpy), min, max and count of episode scores."""
    if len(scores) == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "episodes": 0}
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "min": float(np.min(scores)),
            "max": float(np.max(scores)), "episodes": int(len(scores))}


__all__ = ["CollectStats", "ContinuousCollector", "TeacherCollector", "greedy_actions", "play_episodes",
           "score_summary"]
