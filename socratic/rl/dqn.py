"""DQN with Stable-Baselines3: `socratic rl train-teacher` and dual policy distillation (`socratic rl dpd`).

The Q-network is a socratic `QNetwork` inside SB3 (`QTrunkExtractor` + SB3's linear head), so a trained DQN is
exported as a plain weights-only checkpoint (`checkpoints/best.pt`) besides SB3's own `.zip`.

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

import json
import time
from typing import Any

import numpy as np
import torch
from rich.console import Console
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback

from socratic.engine.checkpoint import load_checkpoint, save_checkpoint
from socratic.engine.logger import RunLogger
from socratic.engine.runtime import setup_run
from socratic.rl.config import DPDConfig, DQNConfig, NetConfig, TrainTeacherConfig
from socratic.rl.distill import build_qnetwork, plot_learning_curve, prepare_run_dir
from socratic.rl.envs import EnvInfo, env_info, make_env, make_vec_env
from socratic.rl.losses import dpd_weights, policy_loss_per_sample
from socratic.rl.networks import QNetwork, count_parameters
from socratic.rl.rollout import play_episodes, score_summary
from socratic.rl.sb3_extractor import QTrunkExtractor
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


def build_dqn(cfg: Any, info: EnvInfo, seed: int, device: torch.device, cls: type = DQN) -> Any:
    env = make_env(info.suite, info.game, cfg.env.max_episode_steps)
    spec = net_spec(cfg.net, info)
    return cls("MlpPolicy", env, policy_kwargs=policy_kwargs(spec), seed=seed, device=device, verbose=0,
               **dqn_kwargs(cfg.dqn))


def export_qnetwork(model: Any, info: EnvInfo, spec: dict[str, Any]) -> QNetwork:
    return sb3_to_qnetwork(model.policy.q_net, spec).to("cpu")


class _Every(BaseCallback):
    """Calls `fn(num_timesteps)` every `every` environment steps."""

    def __init__(self, every: int, fn: Any) -> None:
        super().__init__()
        self.every, self.fn, self.next = every, fn, every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next:
            self.next += self.every
            self.fn(self.num_timesteps)
        return True


def train_teacher(cfg: TrainTeacherConfig, overwrite: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Train a DQN teacher with SB3; the best network by periodic greedy evaluation is kept as
    `checkpoints/best.pt` (weights only) and `checkpoints/best.zip` (SB3), the final one as `last.*`."""
    console = console or Console(stderr=True)
    device = setup_run(cfg.seed, cfg.runtime.device, cfg.runtime.num_threads)
    info = env_info(cfg.env.suite, cfg.env.game)
    spec = net_spec(cfg.net, info)
    model = build_dqn(cfg, info, cfg.seed, device)
    run_dir = prepare_run_dir(cfg, overwrite)
    ckpt = run_dir / "checkpoints"
    eval_envs = make_vec_env(info.suite, info.game, cfg.env.eval_num_envs, cfg.env.max_episode_steps,
                             cfg.env.asynchronous)
    logger = RunLogger(run_dir, tensorboard=False)
    state = {"best": -np.inf, "best_timesteps": 0, "round": 0, "last_eval": -1}
    start = time.perf_counter()

    def evaluate(timesteps: int) -> None:
        state["round"] += 1
        state["last_eval"] = timesteps
        scores = play_episodes(SB3QTeacher(model.policy.q_net, False), eval_envs, cfg.eval.episodes,
                               seed=10_000 + state["round"], device=device)
        summary = score_summary(scores)
        if summary["mean"] > state["best"]:
            state["best"], state["best_timesteps"] = summary["mean"], timesteps
            model.save(ckpt / "best.zip")
            save_checkpoint(qnetwork_checkpoint(export_qnetwork(model, info, spec), info, timesteps=timesteps,
                                                eval_score=summary["mean"], algo="dqn"), ckpt / "best.pt")
        metrics = {"epoch": state["round"], "timesteps": timesteps, "eval_score_mean": summary["mean"],
                   "eval_score_std": summary["std"], "best_eval_score": state["best"],
                   "exploration_rate": float(model.exploration_rate), "time": time.perf_counter() - start}
        logger.log_epoch(metrics)
        if cfg.runtime.progress:
            console.print(f"steps {timesteps:,} | score {summary['mean']:.2f} ± {summary['std']:.2f} | "
                          f"best {state['best']:.2f} | eps {model.exploration_rate:.3f}", highlight=False, soft_wrap=True)

    try:
        model.learn(total_timesteps=cfg.dqn.n_timesteps, callback=_Every(cfg.eval.every_steps, evaluate))
        if state["last_eval"] != model.num_timesteps:
            evaluate(model.num_timesteps)
        train_time = time.perf_counter() - start
        model.save(ckpt / "last.zip")
        save_checkpoint(qnetwork_checkpoint(export_qnetwork(model, info, spec), info, timesteps=model.num_timesteps,
                                            algo="dqn"), ckpt / "last.pt")
        best = QNetwork.from_spec(spec)
        best.load_state_dict(load_checkpoint(ckpt / "best.pt")["model"])
        final = play_episodes(best.to(device), eval_envs, cfg.eval.final_episodes, seed=1, device=device)
    finally:
        logger.close()
        eval_envs.close()
        model.env.close()
    summary = score_summary(final)
    result = {"kind": "rl_teacher", "name": cfg.name, "seed": cfg.seed, "suite": info.suite, "game": info.game,
              "algo": "dqn", "params": count_parameters(best), "n_timesteps": int(model.num_timesteps),
              "best_timesteps": int(state["best_timesteps"]), "best_eval_score": float(state["best"]),
              "score_mean": summary["mean"], "score_std": summary["std"], "episodes": summary["episodes"],
              "train_time": train_time}
    (run_dir / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    if cfg.runtime.plot:
        plot_learning_curve(run_dir, [("eval_score_mean", "DQN (greedy)")], x_key="timesteps",
                            title=f"{info.game}: DQN teacher ({result['params']:,} params)")
    return result


# ------------------------------------------------------------------------------ dual policy distillation
class DPDDQN(DQN):
    """An SB3 DQN that, after its TD updates, distils from a peer DQN on states of the peer's replay buffer."""

    peer: "DPDDQN | None" = None
    dpd_settings: Any = None
    dpd_total_timesteps: int = 0

    def setup_dpd(self, peer: "DPDDQN", settings: Any, total_timesteps: int) -> None:
        self.peer, self.dpd_settings, self.dpd_total_timesteps = peer, settings, total_timesteps
        self.dpd_optimizer = torch.optim.Adam(self.policy.q_net.parameters(), lr=settings.lr)
        self.dpd_stats = {"loss": 0.0, "weight_max": 0.0, "xi_mean": 0.0, "steps": 0}

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        # learn() runs in rounds: schedules (exploration) follow the whole budget, not the current round
        total = self.dpd_total_timesteps or total_timesteps
        self._current_progress_remaining = max(0.0, 1.0 - float(num_timesteps) / float(total))

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
        out = {"dpd_loss": stats["loss"] / n, "dpd_weight_max": stats["weight_max"], "dpd_xi_mean": stats["xi_mean"] / n,
               "dpd_steps": float(stats["steps"])}
        self.dpd_stats = {"loss": 0.0, "weight_max": 0.0, "xi_mean": 0.0, "steps": 0}
        return out


def run_dpd(cfg: DPDConfig, overwrite: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Two DQN peers on `cfg.env`, alternating rounds of `dpd.round_steps` steps; with `dpd.enabled: false`
    the same two learners train alone (the baseline). Keeps each learner's best network by its greedy
    evaluation after every round and scores it over `eval.final_episodes` at the end."""
    console = console or Console(stderr=True)
    device = setup_run(cfg.seed, cfg.runtime.device, cfg.runtime.num_threads)
    info = env_info(cfg.env.suite, cfg.env.game)
    spec = net_spec(cfg.net, info)
    learners = [build_dqn(cfg, info, cfg.seed * 2 + i, device, cls=DPDDQN) for i in range(2)]
    for i, learner in enumerate(learners):
        learner.setup_dpd(learners[1 - i], cfg.dpd, cfg.dqn.n_timesteps)
    run_dir = prepare_run_dir(cfg, overwrite)
    ckpt = run_dir / "checkpoints"
    eval_envs = make_vec_env(info.suite, info.game, cfg.env.eval_num_envs, cfg.env.max_episode_steps,
                             cfg.env.asynchronous)
    logger = RunLogger(run_dir, tensorboard=False)
    best = [-np.inf, -np.inf]
    start = time.perf_counter()
    round_ = 0
    try:
        while min(learner.num_timesteps for learner in learners) < cfg.dqn.n_timesteps:
            round_ += 1
            metrics: dict[str, Any] = {"epoch": round_}
            for i, learner in enumerate(learners):
                steps = min(cfg.dpd.round_steps, cfg.dqn.n_timesteps - learner.num_timesteps)
                if steps > 0:
                    learner.learn(total_timesteps=steps, reset_num_timesteps=False)
                scores = play_episodes(SB3QTeacher(learner.policy.q_net, False), eval_envs,
                                       cfg.eval.episodes_per_round, seed=10_000 + round_, device=device)
                summary = score_summary(scores)
                if summary["mean"] > best[i]:
                    best[i] = summary["mean"]
                    save_checkpoint(qnetwork_checkpoint(export_qnetwork(learner, info, spec), info, learner=i,
                                                        timesteps=learner.num_timesteps, eval_score=best[i]),
                                    ckpt / f"learner{i}_best.pt")
                metrics.update({f"learner{i}_timesteps": learner.num_timesteps,
                                f"learner{i}_score_mean": summary["mean"], f"learner{i}_score_std": summary["std"],
                                f"learner{i}_best_score": best[i], f"learner{i}_exploration_rate": learner.exploration_rate,
                                **{f"learner{i}_{k}": v for k, v in learner.pop_dpd_stats().items()}})
            metrics["eval_score_mean"] = (metrics["learner0_score_mean"] + metrics["learner1_score_mean"]) / 2
            metrics["time"] = time.perf_counter() - start
            logger.log_epoch(metrics)
            if cfg.runtime.progress:
                console.print(f"round {round_} | steps {learners[0].num_timesteps:,} | learner0 "
                              f"{metrics['learner0_score_mean']:.2f} | learner1 {metrics['learner1_score_mean']:.2f}",
                              highlight=False, soft_wrap=True)
        train_time = time.perf_counter() - start
        finals = []
        for i in range(2):
            net = QNetwork.from_spec(spec)
            net.load_state_dict(load_checkpoint(ckpt / f"learner{i}_best.pt")["model"])
            finals.append(score_summary(play_episodes(net.to(device), eval_envs, cfg.eval.final_episodes, seed=1,
                                                      device=device)))
    finally:
        logger.close()
        eval_envs.close()
        for learner in learners:
            learner.env.close()
    result: dict[str, Any] = {"kind": "rl_dpd", "name": cfg.name, "seed": cfg.seed, "suite": info.suite,
                              "game": info.game, "method": "dpd" if cfg.dpd.enabled else "alone",
                              "params": count_parameters(learners[0].policy.q_net), "rounds": round_,
                              "n_timesteps": cfg.dqn.n_timesteps, "train_time": train_time}
    for i, final in enumerate(finals):
        result[f"learner{i}_score_mean"], result[f"learner{i}_score_std"] = final["mean"], final["std"]
    result["score_mean"] = (finals[0]["mean"] + finals[1]["mean"]) / 2
    result["score_best_learner"] = max(finals[0]["mean"], finals[1]["mean"])
    result["episodes"] = finals[0]["episodes"]
    (run_dir / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    if cfg.runtime.plot:
        plot_learning_curve(run_dir, [("learner0_score_mean", "learner 0"), ("learner1_score_mean", "learner 1")],
                            x_key="learner0_timesteps", title=f"{info.game}: {result['method']} (DQN peers)")
    return result


__all__ = ["DPDDQN", "build_dqn", "run_dpd", "train_teacher"]
