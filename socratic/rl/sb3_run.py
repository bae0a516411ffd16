"""The run skeleton's kinds for Stable-Baselines3 learners: what `rl train-teacher` and `rl dpd` share.

`SB3Run` is a `socratic.engine.run.Run` whose state is SB3 learners: epoch k is a *round* in which each learner
trains up to a number of environment steps, starting from an environment reset seeded by (run seed, learner,
round) (`learn_round`); `last.pt` holds every learner's whole state (`socratic.rl.sb3_state.learner_state`) and
the clock over all sessions, so `--resume` continues a killed run to the same weights as an uninterrupted one.
`PeerRun` adds what both dual-policy-distillation runs (DQN peers, DDPG / PPO peers) do after a round: score
both peers, keep each one's best as `checkpoints/learner{i}_best.pt`, and sum them up. `fit_run` opens the run
folder and fits a kind.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import torch
from rich.console import Console

from socratic.engine.checkpoint import CheckpointError
from socratic.engine.run import (EpochCallback, NonFiniteLossError, Run, RunFolder, StepCallback, StepProgress,
                                 check_output_writable)
from socratic.engine.runtime import setup_run
from socratic.rl.distill import rl_run_folder
from socratic.rl.envs import env_info
from socratic.rl.sb3_state import begin_round, learner_state, load_learner_state, round_seed


def learn_round(model: Any, seed: int, until: int, steps: StepProgress) -> int:
    """One round of a learner: reset its environment with `seed`, then train until `until` environment steps in
    all, advancing `steps` (the skeleton's step bar and step callbacks) every environment step. SB3 collects
    `train_freq` steps at a time, so a round may end up to train_freq - 1 steps later; the next round's target
    absorbs it. Returns the steps taken."""
    from stable_baselines3.common.callbacks import BaseCallback

    class StepBar(BaseCallback):
        def _on_step(self) -> bool:
            steps.step(count=1)
            return True

    start = model.num_timesteps
    if until > start:
        begin_round(model, seed)
        model.learn(total_timesteps=until - start, reset_num_timesteps=False, callback=StepBar())
    return model.num_timesteps - start


class SB3Run(Run):
    """A run of SB3 learners. The kind builds `learners` and `eval_envs` (closed with the learners' own
    environments by `close`); `network` names what `_learn` checks for non-finite weights after each round, and
    `learning_rate_hint` the settings a NaN there usually comes from."""

    learners: list[Any]
    eval_envs: Any
    network = "policy"
    learning_rate_hint = "a learning rate"

    def __init__(self, cfg: Any, folder: RunFolder, device: torch.device, console: Console, *, epochs: int,
                 step_callbacks: Iterable[StepCallback] = (), epoch_callbacks: Iterable[EpochCallback] = ()) -> None:
        super().__init__(folder, epochs=epochs, device=device, progress=cfg.runtime.progress,
                         tensorboard=cfg.runtime.tensorboard, console=console,
                         step_callbacks=step_callbacks, epoch_callbacks=epoch_callbacks)
        self.cfg = cfg
        self.info = env_info(cfg.env.suite, cfg.env.game)
        self.elapsed = 0.0  # training + evaluation seconds over all sessions of the run
        self._session = time.perf_counter()

    def _time(self) -> float:
        return self.elapsed + time.perf_counter() - self._session

    def _network_parameters(self, learner: Any) -> Iterable[torch.Tensor]:
        return learner.policy.parameters()

    def _learn(self, epoch: int, until: int, steps: StepProgress) -> None:
        """Round `epoch` of every learner in turn, each up to `until` environment steps; a learner whose network
        went non-finite stops the run (last.pt stays the last good round)."""
        steps.start(sum(max(until - learner.num_timesteps, 0) for learner in self.learners), unit="env steps")
        for i, learner in enumerate(self.learners):
            learn_round(learner, round_seed(self.cfg.seed, i, epoch), until, steps)
            if not all(bool(torch.isfinite(p).all()) for p in self._network_parameters(learner)):
                where = f"round {epoch}" + (f", learner {i}" if len(self.learners) > 1 else "")
                raise NonFiniteLossError(f"{where}: the {self.network} has non-finite weights (a NaN/inf loss, e.g. "
                                         f"from too large {self.learning_rate_hint}); stopped.")

    def state_dict(self) -> dict[str, Any]:
        return {"learners": [learner_state(learner) for learner in self.learners], "elapsed": self._time()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "learners" not in state:
            raise CheckpointError(f"{self.folder.last_path} has no learner state: it was written by an older "
                                  "socratic; start the run again with --overwrite")
        for learner, saved in zip(self.learners, state["learners"], strict=True):
            load_learner_state(learner, saved)
        self.elapsed, self._session = float(state["elapsed"]), time.perf_counter()

    def close(self) -> None:
        self.eval_envs.close()
        for learner in self.learners:
            learner.env.close()


class PeerRun(SB3Run):
    """Two peers of dual policy distillation (Lai et al. 2020, "Dual Policy Distillation"), scored after every
    round: each one's best network is `checkpoints/learner{i}_best.pt`; no `best.pt`, there are two bests. The
    kind provides `_round_score(learner, episodes, seed)` and `_final_score(checkpoint)` (score summaries),
    `_save_best(i, learner)` (its checkpoints) and `_summary_fields()` (its part of summary.json)."""

    score_key = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.best = [-math.inf, -math.inf]

    def evaluate(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, learner in enumerate(self.learners):
            summary = self._round_score(learner, self.cfg.eval.episodes_per_round, seed=10_000 + epoch)
            if summary["mean"] > self.best[i]:
                self.best[i] = summary["mean"]
                if self.is_main:
                    self._save_best(i, learner)
            out.update({f"learner{i}_score_mean": summary["mean"], f"learner{i}_score_std": summary["std"],
                        f"learner{i}_best_score": self.best[i]})
        out["eval_score_mean"] = (out["learner0_score_mean"] + out["learner1_score_mean"]) / 2
        out["time"] = self._time()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "learner_best": list(self.best)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best = [float(v) for v in state["learner_best"]]

    def epoch_line(self, metrics: dict[str, Any]) -> str | None:
        if not self.cfg.runtime.progress:
            return None
        return (f"round {metrics['epoch']} | steps {metrics['learner0_timesteps']:,} | learner0 "
                f"{metrics['learner0_score_mean']:.2f} | learner1 {metrics['learner1_score_mean']:.2f}")

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        """Each learner's best network over `eval.final_episodes` episodes (seed 1), their mean and the better one."""
        cfg = self.cfg
        train_time = self._time()
        finals = [self._final_score(f"learner{i}_best") for i in range(2)]
        result: dict[str, Any] = {"kind": "rl_dpd", "name": cfg.name, "seed": cfg.seed, "suite": self.info.suite,
                                  "game": self.info.game, **self._summary_fields(),
                                  "method": "dpd" if cfg.dpd.enabled else "alone", "rounds": len(history),
                                  "train_time": train_time, "wall_time_this_session": wall_time}
        for i, final in enumerate(finals):
            result[f"learner{i}_score_mean"], result[f"learner{i}_score_std"] = final["mean"], final["std"]
            result[f"learner{i}_best_round_score"] = self.best[i]
        result["score_mean"] = (finals[0]["mean"] + finals[1]["mean"]) / 2
        result["score_best_learner"] = max(finals[0]["mean"], finals[1]["mean"])
        result["episodes"] = finals[0]["episodes"]
        return result


def fit_run(kind: type[SB3Run], cfg: Any, overwrite: bool, console: Console | None, resume: bool,
            accept_config_changes: bool, step_callbacks: Iterable[StepCallback],
            epoch_callbacks: Iterable[EpochCallback]) -> tuple[Any, dict[str, Any]]:
    """Check the run folder, set up the runtime, build the kind of run (`kind(cfg, folder, device, console,
    step_callbacks=..., epoch_callbacks=...)`) and fit it; (run, summary)."""
    check_output_writable(cfg.output_dir)
    folder = rl_run_folder(cfg, resume=resume, overwrite=overwrite, accept_config_changes=accept_config_changes)
    folder.check()  # a busy folder, an existing run or a changed config fails before anything is built
    device = setup_run(cfg.seed, cfg.runtime.device, cfg.runtime.num_threads, cfg.runtime.deterministic)
    run = kind(cfg, folder, device, console or Console(stderr=True), step_callbacks=step_callbacks,
               epoch_callbacks=epoch_callbacks)
    try:
        return run, run.fit()
    finally:
        run.close()


__all__ = ["PeerRun", "SB3Run", "fit_run", "learn_round"]
