"""Policy distillation of a teacher into a small Q-network or MLP policy, optionally with Disagreement Augmentation.

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
episodes); each epoch's collection starts new episodes (the environments are reset with a seed derived from
(seed, epoch), episodes do not run on across epochs), so that an epoch is a function of (seed, epoch) and a
run resumes exactly.

Continuous actions (MuJoCo, Pendulum; docs/methods/rl_continuous.md): the teacher is an SB3 PPO / A2C / SAC / TD3 /
DDPG policy, the student an `MLPPolicy` in the teacher's action parametrisation, the loss the Gaussian KL or the
action MSE (`socratic.rl.continuous`), collection adds Gaussian action noise (`ContinuousCollector`), evaluation
plays the mean action, and DA ascends the same divergence (`ContinuousDisagreement`).

The run is a kind of `socratic.engine.run.Run` (`PolicyDistillationRun`): run folder, lock, progress bar,
metrics.jsonl + TensorBoard, best/last checkpoints, `--resume`, NaN stop and summary.json come from the
skeleton. Resume is bit-identical to an uninterrupted run: collection, exploration draws and minibatch order
of epoch e are seeded by (seed, e); last.pt holds the student, the optimiser, the update counter, the global
RNG states (DA's coin flips) and where the FIFO ring stands, not its contents -- on resume the buffer is
rebuilt by replaying the collection of the epochs it still holds (the teacher is frozen, so collection
repeats exactly), which keeps last.pt small even for Atari's 15 GB buffer (docs/methods/rl.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

import socratic
from socratic.config import ConfigError, resolve_saved
from socratic.engine.logger import read_metrics
from socratic.engine.optim import build_optimizer, set_epoch_lr
from socratic.engine.run import (NON_NUMERIC_KEYS, EpochCallback, NonFiniteLossError, Run, RunFolder, StepCallback,
                                 StepProgress, check_output_writable, run_dir_for)
from socratic.engine.runtime import setup_run
from socratic.rl.buffer import StateBuffer
from socratic.rl.config import DistillConfig, NetConfig, rl_config_from_dict, rl_config_to_dict
from socratic.rl.envs import EnvInfo, env_info, make_vec_env
from socratic.rl.continuous import ContinuousDisagreement, continuous_loss
from socratic.rl.losses import policy_loss
from socratic.rl.networks import MLPPolicy, QNetwork, count_parameters
from socratic.rl.rollout import ContinuousCollector, TeacherCollector, play_episodes, score_summary
from socratic.rl.teachers import load_teacher, policy_parameters, qnetwork_checkpoint


def build_qnetwork(net: NetConfig, info: EnvInfo) -> QNetwork:
    """The Q-network a config section describes, for `info`'s observations and actions."""
    return QNetwork(info.obs_shape, info.num_actions, net.arch or info.arch, net.convs, net.hidden, info.input_scale)


def build_policy_student(net: NetConfig, info: EnvInfo, teacher: nn.Module, key: str = "student") -> MLPPolicy:
    """The MLP policy a config section describes for a continuous-action game, with the teacher's output kind
    (Gaussian or deterministic) and action parametrisation."""
    if (net.arch or info.arch) != "mlp":
        raise ConfigError(f"{key}.arch: {info.suite} {info.game} has continuous actions; its student is an MLP "
                          f"policy (arch: mlp), not '{net.arch}'")
    if not hasattr(teacher, "action_map"):
        raise ConfigError(f"the teacher of {info.game} is not a continuous-action policy")
    return MLPPolicy(math.prod(info.obs_shape), math.prod(info.action_shape), [net.hidden] * net.layers,
                     gaussian=teacher.gaussian, action_map=teacher.action_map, action_low=info.action_low,
                     action_high=info.action_high)


def check_continuous(cfg: DistillConfig, info: EnvInfo, teacher: nn.Module) -> None:
    """The loss and DA objective must be defined for the teacher's outputs (a Gaussian KL needs a Gaussian)."""
    for key, value in (("loss.name", cfg.loss.name), ("da.objective", cfg.da.objective)):
        if value not in ("kl", "mse"):
            raise ConfigError(f"{key}: '{value}' is not one of kl (Gaussian KL), mse (action MSE) for the "
                              f"continuous actions of {info.game}")
        if value == "kl" and not teacher.gaussian:
            raise ConfigError(f"{key}: kl needs a stochastic (Gaussian) teacher; this teacher is deterministic "
                              f"(TD3/DDPG): use {key}=mse")
    if cfg.da.clamp_to_obs_bounds and info.obs_low is None:
        raise ConfigError(f"da.clamp_to_obs_bounds: the observations of {info.env_id} are unbounded; set it to false")


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A 32-bit seed for one stream of randomness (0: collection, 1: minibatch order) of one epoch."""
    return int(np.random.SeedSequence((seed, epoch, stream)).generate_state(1)[0])


COLLECT, MINIBATCHES = 0, 1


def build_da(da_cfg: Any, info: EnvInfo | None = None) -> Any:
    """The classification DA module configured for states (objective on raw Q-values, no clamp); for continuous
    actions `ContinuousDisagreement` (the Gaussian KL or action MSE, optionally clamped to the observation
    bounds)."""
    if not da_cfg.enabled:
        return None
    if info is not None and info.continuous:
        bounds = (info.obs_low, info.obs_high) if da_cfg.clamp_to_obs_bounds else None
        try:
            return ContinuousDisagreement(da_cfg, math.prod(info.action_shape), bounds)
        except ValueError as err:
            raise ConfigError(str(err)) from err
    if da_cfg.clamp_to_obs_bounds:
        raise ConfigError("da.clamp_to_obs_bounds is for continuous-control suites (image states are not clamped)")
    from socratic.augment import DisagreementAugmentation

    try:
        return DisagreementAugmentation(steps=da_cfg.steps, lr=da_cfg.lr, prob=da_cfg.prob, objective=da_cfg.objective,
                                        optimizer=da_cfg.optimizer, temperature=da_cfg.temperature, clamp=None,
                                        target=0, after_every=da_cfg.after_every, select=da_cfg.select,
                                        select_by=da_cfg.select_by)
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
                 seed: int = 0, device: torch.device | str = "cpu", action_dim: int | None = None) -> None:
        self.teacher, self.student, self.collector, self.buffer = teacher, student, collector, buffer
        self.optimizer, self.da = optimizer, da
        self.states_per_epoch, self.batch_size = states_per_epoch, batch_size
        self.loss, self.temperature = loss, temperature
        self.max_updates_per_epoch = max_updates_per_epoch
        self.device = torch.device(device)
        self.seed = seed
        self.action_dim = action_dim  # continuous actions: the loss is socratic.rl.continuous's
        self.updates = 0

    def collect(self, epoch: int, steps: StepProgress | None = None) -> dict[str, float]:
        """Epoch `epoch`'s collection into the buffer: a function of (teacher, seed, epoch)."""
        start = time.perf_counter()
        self.collector.restart(epoch_seed(self.seed, epoch, COLLECT))
        if steps is not None:
            steps.start(self.states_per_epoch, unit="state", description=f"epoch {epoch} collect")
        states, q_values, stats = self.collector.collect(self.states_per_epoch,
                                                         on_store=steps.advance if steps is not None else None)
        self.buffer.add(states, q_values)
        return {**stats.as_metrics(), "buffer_states": float(len(self.buffer)),
                "time_collect": time.perf_counter() - start}

    def rebuild_buffer(self, epoch: int, state: dict[str, int]) -> None:
        """Refill the (empty) buffer as it stood after `epoch` by replaying the collections of the epochs whose
        states it still holds; `state` is `buffer.state_dict()` at that point (checked at the end)."""
        kept = math.ceil(self.buffer.capacity / self.states_per_epoch)
        epochs = range(max(1, epoch - kept + 1), epoch + 1)
        self.buffer.rewind(state, [self.states_per_epoch] * len(epochs))
        for replayed in epochs:
            self.collector.restart(epoch_seed(self.seed, replayed, COLLECT))
            self.buffer.add(*self.collector.collect(self.states_per_epoch)[:2])
        try:
            self.buffer.check(state)
        except RuntimeError as err:  # e.g. collect.* accepted as changed: the old epochs cannot be replayed
            raise ConfigError(f"cannot rebuild the state buffer of epoch {epoch} by replaying its collection ({err}): "
                              "collect.states_per_epoch and collect.buffer_size must stay as the run had them") from err

    def train_step(self, states: torch.Tensor, targets: torch.Tensor,
                   where: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a minibatch; returns the loss (detached) and, per state, whether the student's
        greedy action equals the teacher's (continuous actions: the mean absolute difference of their mean
        actions). `where` (e.g. "epoch 3, step 7") goes into a NaN stop's message."""
        x = states.to(self.device)
        t = targets.to(self.device)
        if self.da is not None:
            x_float = x.float()
            x_new = self.da(x_float, self.student, [self.teacher])
            if x_new is not x_float:  # perturbed: the teacher's targets are recomputed on the moved states
                moved = self.da.moved_rows()  # adaptive DA (da.select < 1): only these; the others keep theirs
                with torch.no_grad():
                    if moved is None:
                        t = self.teacher(x_new).float()
                    else:
                        t = t.float().clone()
                        t[moved] = self.teacher(x_new[moved]).float()
                x = x_new
        q = self.student(x)
        if self.action_dim is None:
            loss = policy_loss(self.loss, q, t, self.temperature)
        else:
            loss = continuous_loss(self.loss, q, t, self.action_dim)
        if not torch.isfinite(loss):
            at = f" at {where}" if where else ""
            raise NonFiniteLossError(f"non-finite policy-distillation loss{at} ({self.loss}={float(loss):.4g}, "
                                     f"after {self.updates} updates); stopped.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        if self.action_dim is not None:
            a = self.action_dim
            return loss.detach(), (q.detach()[:, :a] - t[:, :a]).abs().mean(dim=1)
        return loss.detach(), t.argmax(dim=1) == q.detach().argmax(dim=1)

    def train_pass(self, epoch: int, steps: StepProgress | None = None) -> dict[str, float]:
        """One shuffled pass over the buffer (or `max_updates_per_epoch` minibatches of it); the order is a
        function of (seed, epoch)."""
        start = time.perf_counter()
        self.student.train()
        rng = np.random.default_rng(epoch_seed(self.seed, epoch, MINIBATCHES))
        if steps is not None:
            steps.start(self.buffer.num_batches(self.batch_size, self.max_updates_per_epoch), unit="state",
                        description=f"epoch {epoch} train")
        loss_sum = torch.zeros(())
        agree = 0.0
        seen = batches = 0
        for states, targets in self.buffer.epoch(self.batch_size, rng, self.max_updates_per_epoch):
            loss, agreement = self.train_step(states, targets, where=f"epoch {epoch}, step {batches}")
            loss_sum += loss.cpu() * len(states)
            agree += float(agreement.float().sum())
            seen += len(states)
            batches += 1
            if steps is not None:
                steps.step(loss=float(loss), count=len(states))
        metrics = {"train_loss": float(loss_sum) / max(seen, 1), "train_updates": float(batches),
                   "time_train": time.perf_counter() - start}
        if self.action_dim is None:
            metrics["train_agreement"] = 100.0 * agree / max(seen, 1)
        else:
            metrics["train_action_mae"] = agree / max(seen, 1)
        if self.da is not None:
            metrics.update(self.da.epoch_metrics())
        return metrics

    def epoch(self, epoch: int, steps: StepProgress | None = None) -> dict[str, float]:
        return {**self.collect(epoch, steps), **self.train_pass(epoch, steps)}


# ------------------------------------------------------------------------------------------ the run
# RL keys that do not change a run's numbers, besides the shared ones (output_dir, runtime.progress, ...).
RL_NON_NUMERIC_KEYS = (*NON_NUMERIC_KEYS, "env.asynchronous", "teacher.trust_pickle")


def rl_run_folder(cfg: Any, *, resume: bool = False, overwrite: bool = False,
                  accept_config_changes: bool = False) -> RunFolder:
    """The run folder of an RL config (`socratic rl distill | train-teacher | dpd`), not yet opened."""

    def read_saved(saved: dict[str, Any]) -> dict[str, Any]:
        return resolve_saved(saved, lambda values: rl_config_from_dict(type(cfg), values))

    return RunFolder(run_dir_for(cfg.output_dir, cfg.name, cfg.seed), rl_config_to_dict(cfg), resume=resume,
                     overwrite=overwrite, accept_config_changes=accept_config_changes,
                     defaults=rl_config_to_dict(type(cfg)()), ignore=RL_NON_NUMERIC_KEYS, read_saved=read_saved)


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
        ax.plot([m[x_key] for m in history if "train_loss" in m],
                [m["train_loss"] for m in history if "train_loss" in m])
        ax.set_yscale("log")
        ax.set_xlabel(x_key)
        ax.set_ylabel("distillation loss")
    fig.tight_layout()
    path = run_dir / "learning_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _epoch_line(m: dict[str, Any], epochs: int) -> str:
    agreement = (f"agree {m['train_agreement']:.1f}%" if "train_agreement" in m
                 else f"action error {m['train_action_mae']:.3g}")
    parts = [f"epoch {m['epoch']}/{epochs}", f"loss {m['train_loss']:.4g}", agreement,
             f"score {m['eval_score_mean']:.2f} ± {m['eval_score_std']:.2f}", f"best {m['best_eval_score']:.2f}",
             f"buffer {int(m['buffer_states']):,}"]
    if "collect_return_mean" in m:
        parts.append(f"teacher(eps) {m['collect_return_mean']:.2f}")
    return " | ".join(parts)


class PolicyDistillationRun(Run):
    """`socratic rl distill` as a kind of run: an epoch is collection + one pass, evaluated by greedy play;
    best.pt is the student at the best evaluation score; the summary adds the final evaluation of best.pt."""

    score_key = "eval_score_mean"
    best_key = "best_eval_score"

    def __init__(self, cfg: DistillConfig, folder: RunFolder, pd: PolicyDistillation, eval_envs: Any, info: EnvInfo,
                 *, device: torch.device, console: Console | None = None, step_callbacks: Iterable[StepCallback] = (),
                 epoch_callbacks: Iterable[EpochCallback] = ()) -> None:
        super().__init__(folder, epochs=cfg.optim.epochs, device=device, progress=cfg.runtime.progress,
                         tensorboard=getattr(cfg.runtime, "tensorboard", True), console=console,
                         step_callbacks=step_callbacks, epoch_callbacks=epoch_callbacks)
        self.cfg, self.pd, self.eval_envs, self.info = cfg, pd, eval_envs, info
        self.meta = {"method": method_name(cfg), "socratic_version": socratic.__version__}

    def train_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        lr = set_epoch_lr(self.pd.optimizer, epoch, self.cfg.optim)  # the optim section's schedule (constant)
        return {"lr": lr, **self.pd.epoch(epoch, steps)}

    def evaluate(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        scores = play_episodes(self.pd.student, self.eval_envs, self.cfg.eval.episodes_per_epoch, seed=10_000 + epoch,
                               device=self.device)
        summary = score_summary(scores)
        return {"eval_score_mean": summary["mean"], "eval_score_std": summary["std"],
                "time_eval": time.perf_counter() - start}

    def state_dict(self) -> dict[str, Any]:
        return {**qnetwork_checkpoint(self.pd.student, self.info, **self.meta),
                "optimizer": self.pd.optimizer.state_dict(), "updates": self.pd.updates,
                "buffer": self.pd.buffer.state_dict(), "best_eval_score": self.best_score}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pd.student.load_state_dict(state["model"])
        self.pd.optimizer.load_state_dict(state["optimizer"])
        self.pd.updates = int(state["updates"])
        self.pd.rebuild_buffer(int(state["epoch"]), state["buffer"])

    def best_state(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return qnetwork_checkpoint(self.pd.student, self.info, epoch=epoch, eval_score=metrics[self.score_key],
                                   **self.meta)

    def epoch_line(self, metrics: dict[str, Any]) -> str | None:
        return _epoch_line(metrics, self.epochs) if self.cfg.runtime.progress else None

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        """The final evaluation of best.pt (and of the teacher) over many episodes, scores.json, the plot."""
        cfg, info, student, teacher = self.cfg, self.info, self.pd.student, self.pd.teacher
        # the last checkpoint's score on the same episodes, always reported beside the selected one
        last = play_episodes(student, self.eval_envs, cfg.eval.final_episodes, seed=1, device=self.device)
        best_state = self.folder.load_checkpoint("best", map_location=self.device)
        student.load_state_dict(best_state["model"])
        final = play_episodes(student, self.eval_envs, cfg.eval.final_episodes, seed=1, device=self.device)
        teacher_scores = np.zeros(0)
        teacher_score = cfg.eval.teacher_score
        if teacher_score is None and cfg.eval.teacher_episodes > 0:
            teacher_scores = play_episodes(teacher, self.eval_envs, cfg.eval.teacher_episodes, seed=1,
                                           device=self.device)
            teacher_score = float(np.mean(teacher_scores))
        student_summary = score_summary(final)
        last_summary = score_summary(last)
        teacher_summary = score_summary(teacher_scores)

        def relative(score: float) -> float | None:
            """100 x student / teacher; undefined (None) unless the teacher's score is positive (Pendulum's
            returns are negative: a ratio of two negative scores would rank a worse student higher)."""
            return 100.0 * score / teacher_score if teacher_score is not None and teacher_score > 0 else None

        result = {
            "kind": "rl_distill",
            "name": cfg.name,
            "seed": cfg.seed,
            "suite": info.suite,
            "game": info.game,
            "method": method_name(cfg),
            "loss": cfg.loss.name,
            "student_params": count_parameters(student),
            "teacher_params": policy_parameters(teacher),
            "epochs": cfg.optim.epochs,
            "best_epoch": int(best_state["meta"]["epoch"]),
            "best_eval_score": float(self.best_score),
            "score_mean": student_summary["mean"],
            "score_std": student_summary["std"],
            "episodes": student_summary["episodes"],
            "teacher_score_mean": teacher_score,
            "teacher_score_std": teacher_summary["std"] if len(teacher_scores) else None,
            "teacher_episodes": int(len(teacher_scores)),
            "relative_score": relative(student_summary["mean"]),
            "selection_episodes": cfg.eval.episodes_per_epoch,
            "last_score_mean": last_summary["mean"],
            "last_score_std": last_summary["std"],
            "last_relative_score": relative(last_summary["mean"]),
            "train_time": sum(m.get("time_collect", 0.0) + m.get("time_train", 0.0) + m.get("time_eval", 0.0)
                              for m in history),
            "wall_time_this_session": wall_time,
            "updates": self.pd.updates,
        }
        self.folder.write_json("scores.json", {"student": final.tolist(), "last": last.tolist(),
                                               "teacher": teacher_scores.tolist()})
        if cfg.runtime.plot:
            plot_learning_curve(self.folder.path, teacher_score=teacher_score,
                                title=f"{info.game}: {method_name(cfg)} ({result['student_params']:,} params)")
        return result


def run_distillation(cfg: DistillConfig, overwrite: bool = False, console: Console | None = None, *,
                     resume: bool = False, accept_config_changes: bool = False,
                     step_callbacks: Iterable[StepCallback] = (),
                     epoch_callbacks: Iterable[EpochCallback] = ()) -> dict[str, Any]:
    """Run `socratic rl distill` as `cfg` says; returns the summary (also written to summary.json).

    Everything that can fail on bad input (output folder, game, extras, teacher file, architectures, DA options)
    is checked before the run folder is created. `resume` continues `checkpoints/last.pt` to the result of an
    uninterrupted run; `step_callbacks` get (epoch, update) after each update, `epoch_callbacks`
    (epoch, metrics) after each epoch's last.pt.
    """
    check_output_writable(cfg.output_dir)
    folder = rl_run_folder(cfg, resume=resume, overwrite=overwrite, accept_config_changes=accept_config_changes)
    folder.check()  # a busy folder, an existing run or a changed config fails before anything is built
    device = setup_run(cfg.seed, cfg.runtime.device, cfg.runtime.num_threads, cfg.runtime.deterministic)
    info = env_info(cfg.env.suite, cfg.env.game)
    teacher_spec = None
    if cfg.teacher.net is not None:
        teacher_spec = build_qnetwork(cfg.teacher.net, info).spec()
    teacher = load_teacher(cfg.teacher.checkpoint, info, cfg.teacher.algo, teacher_spec, device,
                           trust_pickle=cfg.teacher.trust_pickle)
    if info.continuous:
        check_continuous(cfg, info, teacher)
        student: nn.Module = build_policy_student(cfg.student, info, teacher).to(device)
    else:
        if cfg.student.arch == "mlp":
            raise ConfigError(f"student.arch: mlp is for continuous-action suites; {info.game} needs nature or minatar")
        student = build_qnetwork(cfg.student, info).to(device)
    da = build_da(cfg.da, info)
    optimizer = build_optimizer(student.parameters(), cfg.optim)

    env = cfg.env
    collect_envs = make_vec_env(env.suite, info.game, env.num_envs, env.max_episode_steps, env.asynchronous)
    eval_envs = make_vec_env(env.suite, info.game, env.eval_num_envs, env.max_episode_steps, env.asynchronous)
    try:
        if info.continuous:
            collector: TeacherCollector = ContinuousCollector(teacher, collect_envs, cfg.collect.action_noise,
                                                              seed=cfg.seed, device=device)
            width = int(teacher(torch.zeros(1, *info.obs_shape, device=device)).shape[1])
            buffer = StateBuffer(cfg.collect.buffer_size, info.obs_shape, width, state_dtype=np.float32)
        else:
            collector = TeacherCollector(teacher, collect_envs, cfg.collect.epsilon, seed=cfg.seed, device=device)
            buffer = StateBuffer(cfg.collect.buffer_size, info.obs_shape, info.num_actions)
        pd = PolicyDistillation(teacher, student, collector, buffer, optimizer,
                                states_per_epoch=cfg.collect.states_per_epoch, batch_size=cfg.optim.batch_size,
                                loss=cfg.loss.name, temperature=cfg.loss.temperature, da=da,
                                max_updates_per_epoch=cfg.optim.max_updates_per_epoch, seed=cfg.seed, device=device,
                                action_dim=math.prod(info.action_shape) if info.continuous else None)
        run = PolicyDistillationRun(cfg, folder, pd, eval_envs, info, device=device, console=console,
                                    step_callbacks=step_callbacks, epoch_callbacks=epoch_callbacks)
        return run.fit()
    finally:
        collect_envs.close()
        eval_envs.close()


__all__ = ["PolicyDistillation", "PolicyDistillationRun", "build_da", "build_policy_student", "build_qnetwork",
           "epoch_seed", "plot_learning_curve", "rl_run_folder", "run_distillation"]
