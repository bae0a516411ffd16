"""Policy distillation of a DQN teacher into a small Q-network, optionally with Disagreement Augmentation.

Rusu et al. 2016, "Policy Distillation" (ICLR): a teacher DQN plays epsilon-greedily (epsilon = 0.05), its
states and Q-values go into a replay memory of the last 540,000 states, and the student is trained by
supervised learning on them (KL with a tempered teacher, tau = 0.01, was their best loss).

Wong et al., "A Socratic Approach to Knowledge Distillation" (Disagreement Augmentation, ICCV 2025 submission),
Sec. 3.3 and Table 2, whose recipe is the default here: every epoch the teacher stores 54,000 states of its
greedy steps (its 5% random-action states are not stored) into a FIFO of 540,000; then one shuffled pass
over the whole buffer in minibatches of 32, SGD lr 1e-4 (momentum 0.9, weight decay 1e-4 in their code), loss
KL(softmax(q^T/tau) || softmax(q^S/tau)) with tau = 0.01 on both sides; 500 epochs; after each epoch a
5-episode greedy evaluation picks the best checkpoint, whose final score is the mean over 1000 episodes.
With DA, each minibatch is perturbed with probability 0.3 by one fresh-Adam step of size alpha on the
states' own scale (0..255 for Atari) that increases KL(tau = 1) between the raw Q-values of teacher and
student, and the teacher's targets are recomputed on the perturbed states. The perturbation is done by the
same `socratic.augment.DisagreementAugmentation` as for classification (objective "kl", temperature 1).

Where this implementation chooses: log-probabilities are `log_softmax` (their `log(softmax)` underflows at
tau = 0.01); evaluation episodes are split evenly over the vectorised environments (no bias to short
episodes); a run is not resumable (the buffer is not checkpointed) -- rerun with --overwrite.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

import socratic
from socratic.config import ConfigError
from socratic.engine.checkpoint import load_checkpoint, save_checkpoint
from socratic.engine.logger import RunLogger, read_metrics
from socratic.engine.runtime import setup_run
from socratic.engine.trainer import NonFiniteLossError
from socratic.rl.buffer import StateBuffer
from socratic.rl.config import DistillConfig, NetConfig, save_rl_config
from socratic.rl.envs import EnvInfo, env_info, make_vec_env
from socratic.rl.losses import policy_loss
from socratic.rl.networks import QNetwork, count_parameters
from socratic.rl.rollout import TeacherCollector, play_episodes, score_summary
from socratic.rl.teachers import load_teacher, qnetwork_checkpoint


def build_qnetwork(net: NetConfig, info: EnvInfo) -> QNetwork:
    """The Q-network a config section describes, for `info`'s observations and actions."""
    return QNetwork(info.obs_shape, info.num_actions, net.arch or info.arch, net.convs, net.hidden, info.input_scale)


def build_optimizer(params: Any, optim: Any) -> torch.optim.Optimizer:
    if optim.optimizer == "sgd":
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    if optim.optimizer == "adam":
        return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    return torch.optim.RMSprop(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)


def build_da(da_cfg: Any) -> Any:
    """The classification DA module configured for states (objective on raw Q-values, no clamp)."""
    if not da_cfg.enabled:
        return None
    from socratic.augment import DisagreementAugmentation

    try:
        return DisagreementAugmentation(steps=da_cfg.steps, lr=da_cfg.lr, prob=da_cfg.prob, objective=da_cfg.objective,
                                        optimizer=da_cfg.optimizer, temperature=da_cfg.temperature, clamp=None,
                                        target=0)
    except ValueError as err:
        raise ConfigError(str(err)) from err


class PolicyDistillation:
    """One teacher, one student, a teacher-driven collector and a FIFO buffer; `epoch()` = collect + one pass.

    `teacher` and `student` map states on their own scale to Q-values; `collector` is a `TeacherCollector`
    over vectorised environments; `da` is None or a `DisagreementAugmentation`.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, collector: TeacherCollector, buffer: StateBuffer,
                 optimizer: torch.optim.Optimizer, *, states_per_epoch: int, batch_size: int = 32, loss: str = "kl",
                 temperature: float = 0.01, da: Any = None, max_updates_per_epoch: int | None = None,
                 seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.teacher, self.student, self.collector, self.buffer = teacher, student, collector, buffer
        self.optimizer, self.da = optimizer, da
        self.states_per_epoch, self.batch_size = states_per_epoch, batch_size
        self.loss, self.temperature = loss, temperature
        self.max_updates_per_epoch = max_updates_per_epoch
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.updates = 0

    def collect(self) -> dict[str, float]:
        start = time.perf_counter()
        states, q_values, stats = self.collector.collect(self.states_per_epoch)
        self.buffer.add(states, q_values)
        return {**stats.as_metrics(), "buffer_states": float(len(self.buffer)), "time_collect": time.perf_counter() - start}

    def train_step(self, states: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a minibatch; returns the loss (detached) and, per state, whether the student's
        greedy action equals the teacher's."""
        x = states.to(self.device)
        t = targets.to(self.device)
        if self.da is not None:
            x_float = x.float()
            x_new = self.da(x_float, self.student, [self.teacher])
            if x_new is not x_float:  # perturbed: the teacher's targets are recomputed on the new states
                with torch.no_grad():
                    t = self.teacher(x_new).float()
                x = x_new
        q = self.student(x)
        loss = policy_loss(self.loss, q, t, self.temperature)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"non-finite policy-distillation loss after {self.updates} updates")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return loss.detach(), t.argmax(dim=1) == q.detach().argmax(dim=1)

    def train_pass(self) -> dict[str, float]:
        """One shuffled pass over the buffer (or `max_updates_per_epoch` minibatches of it)."""
        start = time.perf_counter()
        self.student.train()
        loss_sum = torch.zeros(())
        agree = seen = batches = 0
        for states, targets in self.buffer.epoch(self.batch_size, self.rng, self.max_updates_per_epoch):
            loss, agreement = self.train_step(states, targets)
            loss_sum += loss.cpu() * len(states)
            agree += int(agreement.sum())
            seen += len(states)
            batches += 1
        metrics = {"train_loss": float(loss_sum) / max(seen, 1), "train_agreement": 100.0 * agree / max(seen, 1),
                   "train_updates": float(batches), "time_train": time.perf_counter() - start}
        if self.da is not None:
            metrics.update(self.da.epoch_metrics())
        return metrics

    def epoch(self) -> dict[str, float]:
        return {**self.collect(), **self.train_pass()}


# ------------------------------------------------------------------------------------------ the run
def run_dir_for(cfg: Any) -> Path:
    return Path(cfg.output_dir) / cfg.name / f"seed{cfg.seed}"


def prepare_run_dir(cfg: Any, overwrite: bool) -> Path:
    """A fresh run folder with the resolved config; an existing one needs `overwrite` (RL runs do not resume)."""
    run_dir = run_dir_for(cfg)
    if (run_dir / "config.yaml").exists() and not overwrite:
        raise ConfigError(f"run folder {run_dir} exists: pass --overwrite to replace it (RL runs are not resumable)")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    save_rl_config(cfg, run_dir / "config.yaml")
    return run_dir


def method_name(cfg: DistillConfig) -> str:
    return "pd+da" if cfg.da.enabled else "pd"


def plot_learning_curve(run_dir: Path, series: list[tuple[str, str]] | None = None, x_key: str = "epoch",
                        teacher_score: float | None = None, title: str = "") -> Path | None:
    """`learning_curve.png` from metrics.jsonl: evaluation scores (mean ± std band) per epoch (or `x_key`), a
    dashed teacher line, and the training loss when logged. `series` = [(mean key, label)]; the std key is the
    mean key with `_mean` replaced by `_std`."""
    series = series or [("eval_score_mean", "student (greedy)")]
    history = [m for m in read_metrics(run_dir / "metrics.jsonl") if series[0][0] in m]
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [m[x_key] for m in history]
    has_loss = any("train_loss" in m for m in history)
    fig, axes = plt.subplots(1, 2 if has_loss else 1, figsize=(10 if has_loss else 5.5, 3.8), squeeze=False)
    ax = axes[0, 0]
    for key, label in series:
        mean = np.array([m.get(key, np.nan) for m in history], dtype=float)
        std = np.array([m.get(key.replace("_mean", "_std"), 0.0) for m in history], dtype=float)
        ax.plot(x, mean, label=label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    if teacher_score is not None and np.isfinite(teacher_score):
        ax.axhline(teacher_score, color="k", linestyle="--", label="teacher")
    ax.set_xlabel(x_key)
    ax.set_ylabel("score")
    ax.legend(loc="best")
    ax.set_title(title)
    if has_loss:
        ax = axes[0, 1]
        ax.plot([m[x_key] for m in history if "train_loss" in m], [m["train_loss"] for m in history if "train_loss" in m])
        ax.set_yscale("log")
        ax.set_xlabel(x_key)
        ax.set_ylabel("distillation loss")
    fig.tight_layout()
    path = run_dir / "learning_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _epoch_line(m: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {m['epoch']}/{epochs}", f"loss {m['train_loss']:.4g}", f"agree {m['train_agreement']:.1f}%",
             f"score {m['eval_score_mean']:.2f} ± {m['eval_score_std']:.2f}", f"best {m['best_eval_score']:.2f}",
             f"buffer {int(m['buffer_states']):,}"]
    if "collect_return_mean" in m:
        parts.append(f"teacher(eps) {m['collect_return_mean']:.2f}")
    return " | ".join(parts)


def run_distillation(cfg: DistillConfig, overwrite: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Run `socratic rl distill` as `cfg` says; returns the summary (also written to summary.json).

    Everything that can fail on bad input (game, extras, teacher file, architectures, DA options) is checked
    before the run folder is created.
    """
    console = console or Console(stderr=True)
    device = setup_run(cfg.seed, cfg.runtime.device, cfg.runtime.num_threads)
    info = env_info(cfg.env.suite, cfg.env.game)
    teacher_spec = None
    if cfg.teacher.net is not None:
        teacher_spec = build_qnetwork(cfg.teacher.net, info).spec()
    teacher = load_teacher(cfg.teacher.checkpoint, info, cfg.teacher.algo, teacher_spec, device)
    student = build_qnetwork(cfg.student, info).to(device)
    da = build_da(cfg.da)
    optimizer = build_optimizer(student.parameters(), cfg.optim)
    run_dir = prepare_run_dir(cfg, overwrite)

    env = cfg.env
    collect_envs = make_vec_env(env.suite, info.game, env.num_envs, env.max_episode_steps, env.asynchronous)
    eval_envs = make_vec_env(env.suite, info.game, env.eval_num_envs, env.max_episode_steps, env.asynchronous)
    collector = TeacherCollector(teacher, collect_envs, cfg.collect.epsilon, seed=cfg.seed, device=device)
    buffer = StateBuffer(cfg.collect.buffer_size, info.obs_shape, info.num_actions)
    pd = PolicyDistillation(teacher, student, collector, buffer, optimizer,
                            states_per_epoch=cfg.collect.states_per_epoch, batch_size=cfg.optim.batch_size,
                            loss=cfg.loss.name, temperature=cfg.loss.temperature, da=da,
                            max_updates_per_epoch=cfg.optim.max_updates_per_epoch, seed=cfg.seed, device=device)
    meta = {"method": method_name(cfg), "socratic_version": socratic.__version__}
    logger = RunLogger(run_dir, tensorboard=False)
    best = -np.inf
    wall_start = time.perf_counter()
    try:
        for epoch in range(1, cfg.optim.epochs + 1):
            metrics: dict[str, Any] = {"epoch": epoch, **pd.epoch()}
            start = time.perf_counter()
            scores = play_episodes(student, eval_envs, cfg.eval.episodes_per_epoch, seed=10_000 + epoch, device=device)
            summary = score_summary(scores)
            metrics.update(eval_score_mean=summary["mean"], eval_score_std=summary["std"],
                           time_eval=time.perf_counter() - start)
            if summary["mean"] > best:
                best = summary["mean"]
                save_checkpoint(qnetwork_checkpoint(student, info, epoch=epoch, eval_score=best, **meta),
                                run_dir / "checkpoints" / "best.pt")
            metrics["best_eval_score"] = best
            logger.log_epoch(metrics)
            save_checkpoint({**qnetwork_checkpoint(student, info, epoch=epoch, **meta),
                             "optimizer": optimizer.state_dict(), "epoch": epoch, "best_eval_score": best},
                            run_dir / "checkpoints" / "last.pt")
            if cfg.runtime.progress:
                console.print(_epoch_line(metrics, cfg.optim.epochs), highlight=False, soft_wrap=True)
        train_time = time.perf_counter() - wall_start

        best_state = load_checkpoint(run_dir / "checkpoints" / "best.pt", map_location=device)
        student.load_state_dict(best_state["model"])
        final = play_episodes(student, eval_envs, cfg.eval.final_episodes, seed=1, device=device)
        teacher_scores = np.zeros(0)
        teacher_score = cfg.eval.teacher_score
        if teacher_score is None and cfg.eval.teacher_episodes > 0:
            teacher_scores = play_episodes(teacher, eval_envs, cfg.eval.teacher_episodes, seed=1, device=device)
            teacher_score = float(np.mean(teacher_scores))
    finally:
        logger.close()
        collect_envs.close()
        eval_envs.close()
    student_summary = score_summary(final)
    teacher_summary = score_summary(teacher_scores)
    result = {
        "kind": "rl_distill",
        "name": cfg.name,
        "seed": cfg.seed,
        "suite": info.suite,
        "game": info.game,
        "method": method_name(cfg),
        "loss": cfg.loss.name,
        "student_params": count_parameters(student),
        "teacher_params": count_parameters(teacher),
        "epochs": cfg.optim.epochs,
        "best_epoch": int(best_state["meta"]["epoch"]),
        "best_eval_score": float(best),
        "score_mean": student_summary["mean"],
        "score_std": student_summary["std"],
        "episodes": student_summary["episodes"],
        "teacher_score_mean": teacher_score,
        "teacher_score_std": teacher_summary["std"] if len(teacher_scores) else None,
        "teacher_episodes": int(len(teacher_scores)),
        "relative_score": (100.0 * student_summary["mean"] / teacher_score
                           if teacher_score not in (None, 0.0) else None),
        "train_time": train_time,
        "updates": pd.updates,
    }
    (run_dir / "scores.json").write_text(json.dumps({"student": final.tolist(), "teacher": teacher_scores.tolist()}) + "\n")
    (run_dir / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    if cfg.runtime.plot:
        plot_learning_curve(run_dir, teacher_score=teacher_score,
                            title=f"{info.game}: {method_name(cfg)} ({result['student_params']:,} params)")
    return result


__all__ = ["PolicyDistillation", "build_da", "build_optimizer", "build_qnetwork", "plot_learning_curve",
           "prepare_run_dir", "run_distillation"]
