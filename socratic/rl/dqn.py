"""DQN with Stable-Baselines3: `socratic rl train-teacher` and dual policy distillation (`socratic rl dpd`).

The Q-network is a socratic `QNetwork` inside SB3 (`QTrunkExtractor` + SB3's linear head), so a trained DQN is
exported as a plain weights-only checkpoint (`checkpoints/best.pt`) besides SB3's own `.zip`.

Both commands are kinds of the run skeleton for SB3 learners (`socratic.rl.sb3_run.SB3Run`) and resume with
`--resume`: an epoch is one *round* (train-teacher: the `eval.every_steps` steps between two evaluations; dpd:
`dpd.round_steps` steps of each learner), each round starts from an environment reset seeded by (run seed, learner,
round) (`socratic.rl.sb3_run.learn_round`), and `last.pt` holds every learner's full SB3 state
(`socratic.rl.sb3_state.learner_state`: networks, optimisers, replay buffer, counters, action-space RNG).

Dual policy distillation: Lai, Zha, Li, Hu 2020, "Dual Policy Distillation" (IJCAI). Two peer learners with
their own environments and replay buffers learn the same task; after each of a learner's TD updates it takes
one distillation step on `batch_size` states sampled from the *peer's* replay buffer, with per-state weights
w = clip(exp(beta * xi), 0.01, 100) normalised over the batch, where xi = (peer's value - own value) estimates
the learner's disadvantage (distil mostly where the peer looks better), and a separate Adam (lr 1e-4), as
the authors' DDPG code. The paper and code use DDPG/PPO actors (MSE to the peer's actions); for DQN peers
the policy *is* the Q-network, so here the imitation loss is a policy-distillation loss on Q-values (KL of
tempered softmaxes by default, see `socratic.rl.losses`), and the value of a state is max_a Q(s, a)
(`disadvantage: value`) or, as the DDPG code, both networks' Q at the peer's greedy action
(`disadvantage: peer_action`). The learners alternate in rounds of `round_steps` environment steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from rich.console import Console
from stable_baselines3 import DQN

from socratic.engine.run import EpochCallback, RunFolder, StepCallback, StepProgress
from socratic.rl.config import DPDConfig, DQNConfig, NetConfig, TrainTeacherConfig
from socratic.rl.distill import build_qnetwork, plot_learning_curve
from socratic.rl.envs import EnvInfo, make_env, make_vec_env
from socratic.rl.losses import dpd_weights, policy_loss_per_sample
from socratic.rl.networks import QNetwork, count_parameters
from socratic.rl.rollout import play_episodes, score_summary
from socratic.rl.sb3_extractor import QTrunkExtractor
from socratic.rl.sb3_run import PeerRun, SB3Run, fit_run
from socratic.rl.sb3_state import save_sb3_zip
from socratic.rl.teachers import SB3QTeacher, qnetwork_checkpoint, sb3_to_qnetwork


def net_spec(net: NetConfig, info: EnvInfo) -> dict[str, Any]:
    return build_qnetwork(net, info).spec()


def dqn_kwargs(dqn: DQNConfig) -> dict[str, Any]:
    """SB3 DQN constructor arguments from the config (RL-Zoo's names)."""
    keys = ("learning_rate", "buffer_size", "learning_starts", "batch_size", "gamma", "train_freq", "gradient_steps",
            "target_update_interval", "exploration_fraction", "exploration_initial_eps", "exploration_final_eps",
            "max_grad_norm")
    return {k: getattr(dqn, k) for k in keys}


def policy_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    return {"features_extractor_class": QTrunkExtractor,
            "features_extractor_kwargs": {"arch": spec["arch"], "convs": list(spec["convs"]), "hidden": spec["hidden"],
                                          "input_scale": spec["input_scale"]},
            "net_arch": [], "normalize_images": False}


class RoundDQN(DQN):
    """An SB3 DQN trained in rounds (`learn(reset_num_timesteps=False)` once per round) whose schedules
    (exploration, learning rate) follow the whole budget `budget`, not the current round."""

    budget: int = 0

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        total = self.budget or total_timesteps
        self._current_progress_remaining = max(0.0, 1.0 - float(num_timesteps) / float(total))


def build_dqn(cfg: Any, info: EnvInfo, seed: int, device: torch.device, cls: type = RoundDQN) -> Any:
    """An SB3 DQN (`cls`) on one environment of `info`'s game, with `cfg.net` as its Q-network and `cfg.dqn`'s
    hyperparameters; its schedules follow `cfg.dqn.n_timesteps`."""
    env = make_env(info.suite, info.game, cfg.env.max_episode_steps)
    spec = net_spec(cfg.net, info)
    model = cls("MlpPolicy", env, policy_kwargs=policy_kwargs(spec), seed=seed, device=device, verbose=0,
                **dqn_kwargs(cfg.dqn))
    model.budget = cfg.dqn.n_timesteps
    return model


def export_qnetwork(model: Any, info: EnvInfo, spec: dict[str, Any]) -> QNetwork:
    return sb3_to_qnetwork(model.policy.q_net, spec).to("cpu")


class DQNRun(SB3Run):
    """What the two DQN runs share: the Q-network spec, the evaluation environments and greedy scoring of a
    learner's (or a checkpoint's) Q-network."""

    network = "Q-network"
    learning_rate_hint = "a dqn.learning_rate or dpd.lr"

    def __init__(self, cfg: Any, folder: RunFolder, device: torch.device, console: Console, *, epochs: int,
                 step_callbacks: Iterable[StepCallback] = (), epoch_callbacks: Iterable[EpochCallback] = ()) -> None:
        super().__init__(cfg, folder, device, console, epochs=epochs, step_callbacks=step_callbacks,
                         epoch_callbacks=epoch_callbacks)
        self.spec = net_spec(cfg.net, self.info)
        self.eval_envs = make_vec_env(self.info.suite, self.info.game, cfg.env.eval_num_envs,
                                      cfg.env.max_episode_steps, cfg.env.asynchronous)

    def _network_parameters(self, learner: Any) -> Iterable[torch.Tensor]:
        return learner.policy.q_net.parameters()

    def _score(self, q_net: torch.nn.Module, episodes: int, seed: int) -> dict[str, float]:
        """Greedy play of a Q-network on the evaluation environments."""
        return score_summary(play_episodes(SB3QTeacher(q_net, False), self.eval_envs, episodes, seed=seed,
                                           device=self.device))

    def _final_score(self, checkpoint: str) -> dict[str, float]:
        """The final evaluation of `checkpoints/<checkpoint>.pt` over `eval.final_episodes` (seed 1)."""
        net = QNetwork.from_spec(self.spec)
        net.load_state_dict(self.folder.load_checkpoint(checkpoint)["model"])
        return self._score(net.to(self.device), self.cfg.eval.final_episodes, seed=1)


# --------------------------------------------------------------------------------------------- teacher
class TeacherRun(DQNRun):
    """`socratic rl train-teacher` as a run: epoch k trains the DQN up to k * `eval.every_steps` steps (the last
    one up to `dqn.n_timesteps`) and evaluates the greedy network; the best is `best.pt` (weights only, a
    teacher for `rl distill`) and `best.zip` (SB3); `last.pt` resumes the run and is also a teacher file (the
    current network under `model` / `meta`), with `last.zip` beside it at the end."""

    score_key = "eval_score_mean"
    best_key = "best_eval_score"

    def __init__(self, cfg: TrainTeacherConfig, folder: RunFolder, device: torch.device, console: Console, *,
                 step_callbacks: Iterable[StepCallback] = (), epoch_callbacks: Iterable[EpochCallback] = ()) -> None:
        super().__init__(cfg, folder, device, console, epochs=math.ceil(cfg.dqn.n_timesteps / cfg.eval.every_steps),
                         step_callbacks=step_callbacks, epoch_callbacks=epoch_callbacks)
        self.model = build_dqn(cfg, self.info, cfg.seed, device)
        self.learners = [self.model]

    def train_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        self._learn(epoch, min(epoch * self.cfg.eval.every_steps, self.cfg.dqn.n_timesteps), steps)
        return {"timesteps": int(self.model.num_timesteps)}

    def evaluate(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        summary = self._score(self.model.policy.q_net, self.cfg.eval.episodes, seed=10_000 + epoch)
        return {"eval_score_mean": summary["mean"], "eval_score_std": summary["std"],
                "exploration_rate": float(self.model.exploration_rate), "time": self._time()}

    def _network(self, **meta: Any) -> dict[str, Any]:
        return qnetwork_checkpoint(export_qnetwork(self.model, self.info, self.spec), self.info,
                                   timesteps=int(self.model.num_timesteps), algo="dqn", **meta)

    def best_state(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        save_sb3_zip(self.model, self.folder.checkpoint_dir / "best.zip")
        return self._network(eval_score=metrics["eval_score_mean"])

    def state_dict(self) -> dict[str, Any]:
        return {**self._network(), **super().state_dict()}

    def epoch_line(self, metrics: dict[str, Any]) -> str | None:
        if not self.cfg.runtime.progress:
            return None
        return (f"steps {metrics['timesteps']:,} | score {metrics['eval_score_mean']:.2f} ± "
                f"{metrics['eval_score_std']:.2f} | best {metrics['best_eval_score']:.2f} | "
                f"eps {metrics['exploration_rate']:.3f}")

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        train_time = self._time()
        save_sb3_zip(self.model, self.folder.checkpoint_dir / "last.zip")
        last = self._score(self.model.policy.q_net, self.cfg.eval.final_episodes, seed=1)  # beside the selected one
        final = self._final_score("best")
        best_timesteps = next(m["timesteps"] for m in history if m["epoch"] == self.best_epoch)
        return {"kind": "rl_teacher", "name": self.cfg.name, "seed": self.cfg.seed, "suite": self.info.suite,
                "game": self.info.game, "algo": "dqn", "params": count_parameters(self.model.policy.q_net),
                "n_timesteps": int(self.model.num_timesteps), "best_timesteps": int(best_timesteps),
                "best_eval_score": float(self.best_score), "score_mean": final["mean"], "score_std": final["std"],
                "last_score_mean": last["mean"], "last_score_std": last["std"],
                "episodes": final["episodes"], "train_time": train_time, "wall_time_this_session": wall_time}


def train_teacher(cfg: TrainTeacherConfig, overwrite: bool = False, console: Console | None = None, *,
                  resume: bool = False, accept_config_changes: bool = False,
                  step_callbacks: Iterable[StepCallback] = (), epoch_callbacks: Iterable[EpochCallback] = ()
                  ) -> dict[str, Any]:
    """Train a DQN teacher with SB3 (a resumable run, see `TeacherRun`); returns summary.json's content.
    `step_callbacks` get (epoch, step) after each environment step, `epoch_callbacks` (epoch, metrics) after
    each epoch's last.pt (either may raise to stop the run)."""
    run, result = fit_run(TeacherRun, cfg, overwrite, console, resume, accept_config_changes, step_callbacks,
                       epoch_callbacks)
    if cfg.runtime.plot:
        plot_learning_curve(run.run_dir, [("eval_score_mean", "DQN (greedy)")], x_key="timesteps",
                            title=f"{run.info.game}: DQN teacher ({result['params']:,} params)")
    return result


# ------------------------------------------------------------------------------ dual policy distillation
class DPDDQN(RoundDQN):
    """An SB3 DQN that, after its TD updates, distils from a peer DQN on states of the peer's replay buffer."""

    peer: "DPDDQN | None" = None
    dpd_settings: Any = None
    dpd_optimizer: torch.optim.Optimizer | None = None

    def setup_dpd(self, peer: "DPDDQN", settings: Any, total_timesteps: int) -> None:
        self.peer, self.dpd_settings, self.budget = peer, settings, total_timesteps
        self.dpd_optimizer = torch.optim.Adam(self.policy.q_net.parameters(), lr=settings.lr)
        self.dpd_stats = {"loss": 0.0, "weight_max": 0.0, "xi_mean": 0.0, "steps": 0}

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        super().train(gradient_steps, batch_size)
        s = self.dpd_settings
        if s is None or not s.enabled or self.peer is None or self.peer.replay_buffer.size() < s.batch_size:
            return
        for _ in range(gradient_steps):
            self.distill_step()

    def distill_step(self) -> float:
        s = self.dpd_settings
        obs = self.peer.replay_buffer.sample(s.batch_size).observations.to(self.device)
        with torch.no_grad():
            q_peer = self.peer.policy.q_net(obs)
        q_own = self.policy.q_net(obs)
        with torch.no_grad():
            if s.disadvantage == "value":
                xi_peer, xi_own = q_peer.max(dim=1).values, q_own.max(dim=1).values
            else:
                action = q_peer.argmax(dim=1, keepdim=True)
                xi_peer, xi_own = q_peer.gather(1, action)[:, 0], q_own.gather(1, action)[:, 0]
            weights = dpd_weights(xi_peer, xi_own, s.beta, s.clip_low, s.clip_high)
        loss = (weights * policy_loss_per_sample(s.loss, q_own, q_peer, s.temperature)).sum()
        self.dpd_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.q_net.parameters(), self.max_grad_norm)
        self.dpd_optimizer.step()
        stats = self.dpd_stats
        stats["loss"] += float(loss.detach())
        stats["weight_max"] = max(stats["weight_max"], float(weights.max()))
        stats["xi_mean"] += float((xi_peer - xi_own).mean())
        stats["steps"] += 1
        return float(loss.detach())

    def pop_dpd_stats(self) -> dict[str, float]:
        stats = self.dpd_stats
        n = max(stats["steps"], 1)
        out = {"dpd_loss": stats["loss"] / n, "dpd_weight_max": stats["weight_max"],
               "dpd_xi_mean": stats["xi_mean"] / n, "dpd_steps": float(stats["steps"])}
        self.dpd_stats = {"loss": 0.0, "weight_max": 0.0, "xi_mean": 0.0, "steps": 0}
        return out


class DPDRun(PeerRun, DQNRun):
    """`socratic rl dpd` with DQN peers as a run: epoch k is round k (each learner trains up to
    k * `dpd.round_steps` steps, then both are evaluated greedily); `last.pt` holds both learners' full state."""

    def __init__(self, cfg: DPDConfig, folder: RunFolder, device: torch.device, console: Console, *,
                 step_callbacks: Iterable[StepCallback] = (), epoch_callbacks: Iterable[EpochCallback] = ()) -> None:
        super().__init__(cfg, folder, device, console, epochs=math.ceil(cfg.dqn.n_timesteps / cfg.dpd.round_steps),
                         step_callbacks=step_callbacks, epoch_callbacks=epoch_callbacks)
        self.learners = [build_dqn(cfg, self.info, cfg.seed * 2 + i, device, cls=DPDDQN) for i in range(2)]
        for i, learner in enumerate(self.learners):
            learner.setup_dpd(self.learners[1 - i], cfg.dpd, cfg.dqn.n_timesteps)

    def train_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        self._learn(epoch, min(epoch * self.cfg.dpd.round_steps, self.cfg.dqn.n_timesteps), steps)
        metrics: dict[str, Any] = {}
        for i, learner in enumerate(self.learners):
            metrics.update({f"learner{i}_timesteps": int(learner.num_timesteps),
                            f"learner{i}_exploration_rate": float(learner.exploration_rate),
                            **{f"learner{i}_{k}": v for k, v in learner.pop_dpd_stats().items()}})
        return metrics

    def _round_score(self, learner: Any, episodes: int, seed: int) -> dict[str, float]:
        return self._score(learner.policy.q_net, episodes, seed)

    def _save_best(self, i: int, learner: Any) -> None:
        checkpoint = qnetwork_checkpoint(export_qnetwork(learner, self.info, self.spec), self.info, learner=i,
                                         timesteps=int(learner.num_timesteps), eval_score=self.best[i])
        self.folder.save_checkpoint(checkpoint, f"learner{i}_best")

    def _summary_fields(self) -> dict[str, Any]:
        return {"algo": "dqn", "params": count_parameters(self.learners[0].policy.q_net),
                "n_timesteps": self.cfg.dqn.n_timesteps}


def run_dpd(cfg: DPDConfig, overwrite: bool = False, console: Console | None = None, *, resume: bool = False,
            accept_config_changes: bool = False, step_callbacks: Iterable[StepCallback] = (),
            epoch_callbacks: Iterable[EpochCallback] = ()) -> dict[str, Any]:
    """Two DQN peers on `cfg.env`, alternating rounds of `dpd.round_steps` steps (a resumable run, see `DPDRun`);
    with `dpd.enabled: false` the same two learners train alone (the baseline). Returns summary.json's content.
    Callbacks as for `train_teacher`."""
    run, result = fit_run(DPDRun, cfg, overwrite, console, resume, accept_config_changes, step_callbacks,
                       epoch_callbacks)
    if cfg.runtime.plot:
        plot_learning_curve(run.run_dir, [("learner0_score_mean", "learner 0"), ("learner1_score_mean", "learner 1")],
                            x_key="learner0_timesteps", title=f"{run.info.game}: {result['method']} (DQN peers)")
    return result


__all__ = ["DPDDQN", "DPDRun", "RoundDQN", "TeacherRun", "build_dqn", "run_dpd", "train_teacher"]
