"""Dual policy distillation as the paper runs it: two DDPG or two PPO peers on a continuous-control task.

Lai, Zha, Li, Hu 2020, "Dual Policy Distillation" (IJCAI; arXiv 2006.04061); the algorithm as in METHODS.md
section C and the authors' code (OpenAI Baselines' `dpd_ddpg` and `dpd_ppo`). Two peer learners of the same
algorithm, each with its own environment copy and its own memory of visited states (DDPG: its replay buffer;
PPO: a FIFO of the states it visited), alternate rounds of `dpd.round_steps` environment steps. A learner
distils from its peer on states of the *peer's* memory with the *disadvantageous* weights

    xi(s) = peer value - own value,   w(s) = clip(exp(beta * xi(s)), 0.01, 100) / sum over the batch   (detached)

so it imitates the peer mostly where the peer looks better, with the MSE between its action and the peer's and
an Adam of its own:

* DDPG (`DPDDDPG`), after every actor-critic update: a = pi_peer(s) (no noise), xi = Q_peer(s, a) - Q_own(s, a)
  (`dpd.disadvantage: peer_action`, the authors' code: the own critic at the peer's action;
  `value` = Q_peer(s, pi_peer(s)) - Q_own(s, pi_own(s))), loss sum_s w(s) * mean_j (pi_own(s)_j - a_j)^2,
  Adam lr 1e-4, `dpd.batch_size` 512 states.
* PPO (`DPDPPO`), after every `dpd.every` (5) PPO updates: a sampled from the peer's policy, xi = V_peer(s) -
  V_own(s), loss mean_s w(s) * mean_j (mu_own(s)_j - a_j)^2 (the authors' code averages after normalising),
  its gradient clipped to `ppo.max_grad_norm`, Adam at the PPO learning rate, beta 0.5. The paper defines the
  disadvantage as peer - own; the authors' PPO code computes own - peer: `dpd.sign: own_minus_peer` is that.

`socratic rl dpd` with `dpd.learner: ddpg | ppo` runs `ContinuousDPDRun`, a `socratic.rl.sb3_run.PeerRun` like
the DQN adaptation (`dpd.learner: dqn`, `socratic.rl.dqn.DPDRun`; `run_dpd` picks the kind): epoch k is round k,
each round starts from an environment reset seeded by (run seed, learner, round), and `last.pt` holds both
learners' whole state (`socratic.rl.sb3_state.learner_state`), so `--resume` continues a killed run to the same
weights as an uninterrupted one. `dpd.enabled: false` trains the same two learners alone (the baseline).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import Tensor

from socratic.engine.run import EpochCallback, RunFolder, StepCallback, StepProgress
from socratic.rl.config import DPDConfig
from socratic.rl.envs import EnvInfo, make_env
from socratic.rl.losses import dpd_weights
from socratic.rl.networks import count_parameters
from socratic.rl.rollout import score_summary
from socratic.rl.sb3_run import PeerRun, fit_run
from socratic.rl.sb3_state import LearnerStateError, cpu_copy, decode_array, encode_array, save_sb3_zip


# ---------------------------------------------------------------------------------------- pure functions
def distillation_weights(peer_values: Tensor, own_values: Tensor, beta: float, sign: str = "peer_minus_own",
                         clip_low: float = 0.01, clip_high: float = 100.0) -> Tensor:
    """The disadvantageous weights of one batch: w = clip(exp(beta * xi), clip_low, clip_high) / sum(w), detached,
    with xi = peer - own (`sign="peer_minus_own"`, the paper) or own - peer (`"own_minus_peer"`, the authors'
    PPO code)."""
    if sign == "peer_minus_own":
        return dpd_weights(peer_values, own_values, beta, clip_low, clip_high)
    if sign == "own_minus_peer":
        return dpd_weights(own_values, peer_values, beta, clip_low, clip_high)
    raise ValueError(f"sign: '{sign}' is not one of peer_minus_own, own_minus_peer")


def weighted_action_mse(actions: Tensor, targets: Tensor, weights: Tensor, reduction: str = "sum") -> Tensor:
    """sum_s w(s) * mean_j (a_j - a~_j)^2 (`reduction="sum"`, the DDPG code) or the mean over s of the same
    products (`"mean"`, the PPO code); `weights` (B,) are taken as given (normalised, detached)."""
    per_state = (actions.float() - targets.float()).pow(2).mean(dim=1)
    weighted = weights * per_state
    if reduction == "sum":
        return weighted.sum()
    if reduction == "mean":
        return weighted.mean()
    raise ValueError(f"reduction: '{reduction}' is not one of sum, mean")


# ----------------------------------------------------------------------------------------- state memory
class StateMemory:
    """A FIFO ring of observations (the PPO learner's memory of visited states, 100k in the authors' code);
    `sample` draws uniformly with NumPy's global generator (checkpointed by the run skeleton)."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...]) -> None:
        self.states = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.pos = 0
        self.size = 0

    @property
    def capacity(self) -> int:
        return len(self.states)

    def add(self, states: np.ndarray) -> None:
        states = np.asarray(states, dtype=np.float32).reshape(-1, *self.states.shape[1:])[-self.capacity:]
        rows = (self.pos + np.arange(len(states))) % self.capacity
        self.states[rows] = states
        self.pos = int((self.pos + len(states)) % self.capacity)
        self.size = int(min(self.size + len(states), self.capacity))

    def sample(self, n: int) -> np.ndarray:
        return self.states[np.random.randint(0, self.size, size=n)]

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "pos": self.pos, "size": self.size,
                "states": encode_array(self.states[:self.size])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity:
            raise LearnerStateError(f"the saved state memory holds {state['capacity']} states, this learner's "
                                    f"{self.capacity} (dpd.memory_size changed?)")
        states = decode_array(state["states"])
        if states.shape[1:] != self.states.shape[1:]:
            raise LearnerStateError(f"the saved state memory has states of shape {states.shape[1:]}, this "
                                    f"learner's {self.states.shape[1:]} (another task?)")
        self.states[:len(states)] = states
        self.pos, self.size = int(state["pos"]), int(state["size"])


# -------------------------------------------------------------------------------------------- learners
_DPD_ATTRIBUTES = ["peer", "dpd", "dpd_optimizer", "dpd_stats", "memory"]


class PeerLearner:
    """What the DDPG and PPO peers share (a mixin before the SB3 class): the peer, the `dpd` settings, the
    distillation Adam and its statistics; schedules that follow the whole budget rather than one round."""

    peer: Any = None
    dpd: Any = None
    dpd_optimizer: torch.optim.Optimizer | None = None
    budget: int = 0
    dpd_adam_eps: float = 1e-8

    def setup_dpd(self, peer: Any, settings: Any, budget: int) -> None:
        self.peer, self.dpd, self.budget = peer, settings, budget
        self.dpd_optimizer = torch.optim.Adam(self.distilled_parameters(), lr=settings.lr, eps=self.dpd_adam_eps)
        self.dpd_updates = 0  # the learner's updates so far (PPO: distil after every dpd.every-th)
        self.dpd_stats = _empty_stats()

    def distilled_parameters(self) -> Iterable[torch.nn.Parameter]:
        raise NotImplementedError

    @property
    def distilling(self) -> bool:
        return bool(self.dpd is not None and self.dpd.enabled and self.peer is not None)

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        total = self.budget or total_timesteps
        self._current_progress_remaining = max(0.0, 1.0 - float(num_timesteps) / float(total))

    def _excluded_save_params(self) -> list[str]:  # SB3's .zip: not the peer, the settings or the memory
        return super()._excluded_save_params() + _DPD_ATTRIBUTES  # type: ignore[misc]

    def _distil(self, loss: Tensor, weights: Tensor, xi: Tensor, max_grad_norm: float | None = None) -> None:
        self.dpd_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(list(self.distilled_parameters()), max_grad_norm)
        self.dpd_optimizer.step()
        stats = self.dpd_stats
        stats["loss"] += float(loss.detach())
        stats["weight_max"] = max(stats["weight_max"], float(weights.max()))
        stats["xi_mean"] += float(xi.mean())
        stats["xi_positive"] += float((xi > 0).float().mean())
        stats["steps"] += 1

    def pop_dpd_stats(self) -> dict[str, float]:
        stats, n = self.dpd_stats, max(self.dpd_stats["steps"], 1)
        self.dpd_stats = _empty_stats()
        return {"dpd_loss": stats["loss"] / n, "dpd_weight_max": stats["weight_max"],
                "dpd_xi_mean": stats["xi_mean"] / n, "dpd_xi_positive": stats["xi_positive"] / n,
                "dpd_steps": float(stats["steps"])}


def _empty_stats() -> dict[str, float]:
    return {"loss": 0.0, "weight_max": 0.0, "xi_mean": 0.0, "xi_positive": 0.0, "steps": 0}


def _sb3() -> Any:
    import stable_baselines3

    return stable_baselines3


@functools.lru_cache(maxsize=None)
def learner_classes() -> dict[str, type]:
    """{"ddpg": DPDDDPG, "ppo": DPDPPO}: defined on first use, so that importing this module needs no SB3."""
    sb3 = _sb3()

    class DPDDDPG(PeerLearner, sb3.DDPG):
        """An SB3 DDPG that takes one distillation step after each of its actor-critic updates."""

        def distilled_parameters(self) -> Iterable[torch.nn.Parameter]:
            return self.actor.parameters()

        def train(self, gradient_steps: int, batch_size: int = 100) -> None:
            for _ in range(gradient_steps):
                super().train(1, batch_size)  # DDPG updates actor and critic every step (policy_delay 1)
                self.dpd_updates += 1
                if (self.distilling and self.dpd_updates % self.dpd.every == 0
                        and self.peer.replay_buffer.size() >= self.dpd.batch_size):
                    self.distill_step()

        def distill_step(self) -> None:
            s = self.dpd
            obs = self.peer.replay_buffer.sample(s.batch_size).observations
            with torch.no_grad():
                peer_actions = self.peer.actor(obs)  # deterministic, in the [-1, 1] scale the critics take
                peer_q = self.peer.critic.q1_forward(obs, peer_actions)[:, 0]
                at = peer_actions if s.disadvantage == "peer_action" else self.actor(obs)
                own_q = self.critic.q1_forward(obs, at)[:, 0]
                weights = distillation_weights(peer_q, own_q, s.beta, s.sign, s.clip_low, s.clip_high)
            loss = weighted_action_mse(self.actor(obs), peer_actions, weights, "sum")
            xi = peer_q - own_q if s.sign == "peer_minus_own" else own_q - peer_q
            self._distil(loss, weights, xi)

    class DPDPPO(PeerLearner, sb3.PPO):
        """An SB3 PPO that keeps a FIFO of the states it visited and, after every `dpd.every`-th update, takes one
        distillation step on states of its peer's FIFO."""

        dpd_adam_eps = 1e-5  # the PPO Adam's (the authors' code steps PPO's own Adam)
        memory: StateMemory | None = None

        def setup_dpd(self, peer: Any, settings: Any, budget: int) -> None:
            super().setup_dpd(peer, settings, budget)
            if settings.enabled:
                self.memory = StateMemory(settings.memory_size, self.observation_space.shape)

        def distilled_parameters(self) -> Iterable[torch.nn.Parameter]:
            return self.policy.parameters()

        def train(self) -> None:
            if self.memory is not None:
                self.memory.add(self.rollout_buffer.observations)
            super().train()
            self.dpd_updates += 1
            if (self.distilling and self.dpd_updates % self.dpd.every == 0
                    and self.peer.memory.size >= self.dpd.batch_size):
                self.distill_step()

        def distill_step(self) -> None:
            s = self.dpd
            obs = torch.as_tensor(self.peer.memory.sample(s.batch_size), device=self.device)
            with torch.no_grad():
                peer_actions = self.peer.policy.get_distribution(obs).sample()  # sampled, as the authors' code
                peer_v = self.peer.policy.predict_values(obs)[:, 0]
                own_v = self.policy.predict_values(obs)[:, 0]
                weights = distillation_weights(peer_v, own_v, s.beta, s.sign, s.clip_low, s.clip_high)
            mean = self.policy.get_distribution(obs).distribution.mean
            loss = weighted_action_mse(mean, peer_actions, weights, "mean")
            xi = peer_v - own_v if s.sign == "peer_minus_own" else own_v - peer_v
            self._distil(loss, weights, xi, self.max_grad_norm)

    return {"ddpg": DPDDDPG, "ppo": DPDPPO}


def monitored_env(suite: str, game: str, max_episode_steps: int | None) -> Any:
    """One environment with SB3's `Monitor` (episode returns for `evaluate_policy`)."""
    from stable_baselines3.common.monitor import Monitor

    return Monitor(make_env(suite, game, max_episode_steps))


def build_learner(cfg: DPDConfig, info: EnvInfo, seed: int, device: torch.device) -> Any:
    """One DPD peer (`cfg.dpd.learner`: ddpg | ppo) on its own environment, with `cfg.ddpg` / `cfg.ppo`'s
    hyperparameters; its schedules follow that section's `n_timesteps`."""
    from stable_baselines3.common.noise import NormalActionNoise

    env = monitored_env(info.suite, info.game, cfg.env.max_episode_steps)
    cls = learner_classes()[cfg.dpd.learner]
    if cfg.dpd.learner == "ddpg":
        h = cfg.ddpg
        n = int(np.prod(info.action_shape))
        noise = NormalActionNoise(np.zeros(n), h.noise_std * np.ones(n)) if h.noise_std > 0 else None
        model = cls("MlpPolicy", env, learning_rate=h.learning_rate, buffer_size=h.buffer_size,
                    learning_starts=h.learning_starts, batch_size=h.batch_size, tau=h.tau, gamma=h.gamma,
                    train_freq=(h.train_freq, "step"), gradient_steps=h.gradient_steps, action_noise=noise,
                    policy_kwargs={"net_arch": list(h.net_arch)}, seed=seed, device=device, verbose=0)
    else:
        h = cfg.ppo
        model = cls("MlpPolicy", env, learning_rate=h.learning_rate, n_steps=h.n_steps, batch_size=h.batch_size,
                    n_epochs=h.n_epochs, gamma=h.gamma, gae_lambda=h.gae_lambda, clip_range=h.clip_range,
                    ent_coef=h.ent_coef, vf_coef=h.vf_coef, max_grad_norm=h.max_grad_norm,
                    policy_kwargs={"net_arch": {"pi": list(h.net_arch), "vf": list(h.net_arch)}}, seed=seed,
                    device=device, verbose=0)
    model.budget = h.n_timesteps
    return model


# ------------------------------------------------------------------------------------------------ the run
def score_policy(policy: Any, env: Any, episodes: int, seed: int) -> dict[str, float]:
    """Deterministic (mean-action) play of an SB3 policy on a seeded SB3 vector env (`evaluate_policy` splits
    the episodes evenly over its environments in advance)."""
    from stable_baselines3.common.evaluation import evaluate_policy

    env.seed(seed)
    returns, _ = evaluate_policy(policy, env, n_eval_episodes=episodes, deterministic=True,
                                 return_episode_rewards=True, warn=False)
    return score_summary(np.asarray(returns, dtype=np.float64))


class ContinuousDPDRun(PeerRun):
    """`socratic rl dpd` with DDPG or PPO peers as a run: epoch k is round k (each learner trains up to
    k * `dpd.round_steps` environment steps, then both are evaluated deterministically); each learner's best
    policy is `checkpoints/learner{i}_best.pt` (weights and metadata) and `learner{i}_best.zip` (SB3);
    `last.pt` holds both learners' whole state."""

    def __init__(self, cfg: DPDConfig, folder: RunFolder, device: torch.device, console: Console, *,
                 step_callbacks: Iterable[StepCallback] = (), epoch_callbacks: Iterable[EpochCallback] = ()) -> None:
        from stable_baselines3.common.vec_env import DummyVecEnv

        self.hyper = getattr(cfg, cfg.dpd.learner)
        super().__init__(cfg, folder, device, console, epochs=cfg.rounds, step_callbacks=step_callbacks,
                         epoch_callbacks=epoch_callbacks)
        self.learning_rate_hint = f"a {cfg.dpd.learner}.learning_rate or dpd.lr"
        make = functools.partial(monitored_env, self.info.suite, self.info.game, cfg.env.max_episode_steps)
        self.eval_envs = DummyVecEnv([make] * cfg.env.eval_num_envs)
        self.learners = [build_learner(cfg, self.info, cfg.seed * 2 + i, device) for i in range(2)]
        for i, learner in enumerate(self.learners):
            learner.setup_dpd(self.learners[1 - i], cfg.dpd, self.hyper.n_timesteps)

    def train_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        self._learn(epoch, min(epoch * self.cfg.dpd.round_steps, self.hyper.n_timesteps), steps)
        metrics: dict[str, Any] = {}
        for i, learner in enumerate(self.learners):
            metrics.update({f"learner{i}_timesteps": int(learner.num_timesteps),
                            **{f"learner{i}_{k}": v for k, v in learner.pop_dpd_stats().items()}})
        return metrics

    def _round_score(self, learner: Any, episodes: int, seed: int) -> dict[str, float]:
        return score_policy(learner.policy, self.eval_envs, episodes, seed)

    def _save_best(self, i: int, learner: Any) -> None:
        info = self.info
        meta = {"kind": "rl_dpd_policy", "algo": self.cfg.dpd.learner, "learner": i, "suite": info.suite,
                "game": info.game, "env_id": info.env_id, "obs_shape": list(info.obs_shape),
                "action_shape": list(info.action_shape), "net_arch": list(self.hyper.net_arch),
                "timesteps": int(learner.num_timesteps), "eval_score": float(self.best[i])}
        self.folder.save_checkpoint({"model": cpu_copy(learner.policy.state_dict()), "meta": meta}, f"learner{i}_best")
        save_sb3_zip(learner, self.folder.checkpoint_dir / f"learner{i}_best.zip")

    def _final_score(self, checkpoint: str) -> dict[str, float]:
        """A best policy (`checkpoints/<checkpoint>.pt`) over `eval.final_episodes` deterministic episodes (seed 1)."""
        policy = copy.deepcopy(self.learners[0].policy)
        policy.load_state_dict(self.folder.load_checkpoint(checkpoint, map_location=self.device)["model"])
        return score_policy(policy, self.eval_envs, self.cfg.eval.final_episodes, seed=1)

    def _summary_fields(self) -> dict[str, Any]:
        return {"algo": self.cfg.dpd.learner, "params": count_parameters(self.learners[0].policy),
                "n_timesteps": self.hyper.n_timesteps}


def run_dpd(cfg: DPDConfig, overwrite: bool = False, console: Console | None = None, *, resume: bool = False,
            accept_config_changes: bool = False, step_callbacks: Iterable[StepCallback] = (),
            epoch_callbacks: Iterable[EpochCallback] = ()) -> dict[str, Any]:
    """`socratic rl dpd`: two peers of `cfg.dpd.learner` (dqn: `socratic.rl.dqn.run_dpd`; ddpg / ppo:
    `ContinuousDPDRun`), alternating rounds of `dpd.round_steps` steps, a resumable run; with
    `dpd.enabled: false` the same two learners train alone. Returns summary.json's content. `step_callbacks` get
    (epoch, step) after each environment step, `epoch_callbacks` (epoch, metrics) after each round's last.pt
    (either may raise to stop the run)."""
    from socratic.rl import dqn
    from socratic.rl.distill import plot_learning_curve

    if cfg.dpd.learner == "dqn":
        return dqn.run_dpd(cfg, overwrite, console, resume=resume, accept_config_changes=accept_config_changes,
                           step_callbacks=step_callbacks, epoch_callbacks=epoch_callbacks)
    run, result = fit_run(ContinuousDPDRun, cfg, overwrite, console, resume, accept_config_changes,
                              step_callbacks, epoch_callbacks)
    if cfg.runtime.plot:
        plot_learning_curve(run.run_dir, [("learner0_score_mean", "learner 0"), ("learner1_score_mean", "learner 1")],
                            x_key="learner0_timesteps",
                            title=f"{run.info.game}: {result['method']} ({cfg.dpd.learner.upper()} peers)")
    return result


__all__ = ["ContinuousDPDRun", "PeerLearner", "StateMemory", "build_learner", "distillation_weights",
           "learner_classes", "run_dpd", "score_policy", "weighted_action_mse"]
