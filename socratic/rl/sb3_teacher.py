"""`socratic rl train-teacher` for continuous control: PPO, SAC or TD3 with Stable-Baselines3, as a resumable run.

Schulman et al. 2017 (PPO), Haarnoja et al. 2018 (SAC), Fujimoto et al. 2018 (TD3): Stable-Baselines3 does the
learning ("MlpPolicy", `sb3.net_arch`, any other constructor argument under `sb3.hyperparams`); `sb3.normalize`
wraps the environment in SB3's `VecNormalize` (observations, and rewards for PPO), as RL-Zoo's `normalize: true`.

The run is a `socratic.rl.sb3_run.SB3Run` (`SB3TeacherRun`), like the DQN `TeacherRun`: epoch k trains up to
k x `eval.every_steps` environment steps (PPO: a multiple of its rollout, `n_steps`), starting from an
environment reset seeded by (run seed, epoch) (`socratic.rl.sb3_run.learn_round`), then plays `eval.episodes`
greedy (mean-action) episodes on held-out seeds. The best network is `checkpoints/best.zip` (SB3's file, with
`checkpoints/best/vecnormalize.pkl` when normalised: the RL-Zoo layout `rl distill` reads); `last.zip` is written
at the end. `last.pt` holds the whole learner as weights-only data (`learner_state`): policy, optimisers, entropy
coefficient, replay buffer, counters, the action space's RNG and the VecNormalize statistics, so `--resume`
continues exactly. The summary gives the best network's final score and the last one's beside it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from socratic.config import ConfigError
from socratic.engine.run import EpochCallback, RunFolder, StepCallback, StepProgress
from socratic.rl.config import TrainTeacherConfig
from socratic.rl.distill import plot_learning_curve
from socratic.rl.envs import EnvInfo, env_info, make_env, make_vec_env
from socratic.rl.observations import NormalizeObservations
from socratic.rl.rollout import play_episodes, score_summary
from socratic.rl.sb3_run import SB3Run, fit_run
from socratic.rl.sb3_state import cpu_copy, save_sb3_zip, vecnormalize_of
from socratic.rl.teachers import SB3PolicyTeacher, policy_parameters

FAMILIES = {"ppo": "actor_critic", "sac": "sac", "td3": "td3"}


def algorithm_class(algo: str) -> type:
    """SB3's PPO / SAC / TD3 with schedules that follow the whole budget (`budget`), not the current round."""
    import stable_baselines3

    base = getattr(stable_baselines3, algo.upper())

    class RoundAlgorithm(base):  # type: ignore[misc, valid-type]
        budget: int = 0

        def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
            total = self.budget or total_timesteps
            self._current_progress_remaining = max(0.0, 1.0 - float(num_timesteps) / float(total))

    RoundAlgorithm.__name__ = base.__name__
    RoundAlgorithm.__qualname__ = base.__qualname__
    return RoundAlgorithm


def build_learner(cfg: TrainTeacherConfig, info: EnvInfo, device: torch.device) -> Any:
    """The SB3 algorithm of `cfg.algo` on one environment of `info`'s task (VecNormalize'd when asked)."""
    from stable_baselines3.common.noise import NormalActionNoise
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv: Any = DummyVecEnv([lambda: make_env(info.suite, info.game, cfg.env.max_episode_steps)])
    if cfg.sb3.normalize:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=cfg.algo == "ppo",
                            gamma=float(cfg.sb3.hyperparams.get("gamma", 0.99)))
    kwargs: dict[str, Any] = dict(cfg.sb3.hyperparams)
    if cfg.algo == "td3" and cfg.sb3.action_noise > 0:
        half = 0.5 * (np.asarray(info.action_high) - np.asarray(info.action_low))
        kwargs["action_noise"] = NormalActionNoise(np.zeros(len(half)), cfg.sb3.action_noise * half)
    try:
        model = algorithm_class(cfg.algo)("MlpPolicy", venv, policy_kwargs={"net_arch": list(cfg.sb3.net_arch)},
                                          seed=cfg.seed, device=device, verbose=0, **kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        venv.close()
        raise ConfigError(f"sb3.hyperparams: {cfg.algo.upper()} does not take "
                          f"{dict(cfg.sb3.hyperparams)} ({err})") from err
    model.budget = cfg.sb3.n_timesteps
    return model


def policy_teacher(model: Any, info: EnvInfo, algo: str) -> SB3PolicyTeacher:
    """The learner's current policy as a socratic teacher (observations normalised with today's statistics)."""
    norm = vecnormalize_of(model)
    adapter: torch.nn.Module = torch.nn.Identity()
    if norm is not None:
        adapter = NormalizeObservations(norm.obs_rms.mean, norm.obs_rms.var, norm.clip_obs, norm.epsilon)
    return SB3PolicyTeacher(model.policy, FAMILIES[algo], adapter, info).to(model.device)


# ---------------------------------------------------------------------------------------------- saving
def save_model(model: Any, zip_path: Path) -> None:
    """SB3's .zip (and, when normalised, `<stem>/vecnormalize.pkl` beside it: the RL-Zoo layout), atomically."""
    save_sb3_zip(model, zip_path)
    norm = vecnormalize_of(model)
    if norm is not None:
        folder = zip_path.parent / zip_path.stem
        folder.mkdir(exist_ok=True)
        tmp = folder / f".vecnormalize.pkl.{os.getpid()}.tmp"
        norm.save(str(tmp))
        os.replace(tmp, folder / "vecnormalize.pkl")


# ----------------------------------------------------------------------------------------------- the run
class SB3TeacherRun(SB3Run):
    """`socratic rl train-teacher` with algo ppo, sac or td3 (see the module docstring)."""

    score_key = "eval_score_mean"
    best_key = "best_eval_score"
    learning_rate_hint = "a sb3.hyperparams.learning_rate"

    def __init__(self, cfg: TrainTeacherConfig, folder: RunFolder, device: torch.device, console: Console, *,
                 step_callbacks: Iterable[StepCallback] = (), epoch_callbacks: Iterable[EpochCallback] = ()) -> None:
        super().__init__(cfg, folder, device, console, epochs=math.ceil(cfg.sb3.n_timesteps / cfg.eval.every_steps),
                         step_callbacks=step_callbacks, epoch_callbacks=epoch_callbacks)
        self.network = f"{cfg.algo.upper()} policy"
        self.model = build_learner(cfg, self.info, device)
        self.learners = [self.model]
        self.eval_envs = make_vec_env(self.info.suite, self.info.game, cfg.env.eval_num_envs,
                                      cfg.env.max_episode_steps, cfg.env.asynchronous)

    def _score(self, teacher: torch.nn.Module, episodes: int, seed: int) -> dict[str, float]:
        return score_summary(play_episodes(teacher, self.eval_envs, episodes, seed=seed, device=self.device))

    def train_epoch(self, epoch: int, steps: StepProgress) -> dict[str, Any]:
        self._learn(epoch, min(epoch * self.cfg.eval.every_steps, self.cfg.sb3.n_timesteps), steps)
        return {"timesteps": int(self.model.num_timesteps)}

    def evaluate(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        summary = self._score(policy_teacher(self.model, self.info, self.cfg.algo), self.cfg.eval.episodes,
                              seed=10_000 + epoch)
        return {"eval_score_mean": summary["mean"], "eval_score_std": summary["std"], "time": self._time()}

    def best_state(self, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        save_model(self.model, self.folder.checkpoint_dir / "best.zip")
        return {"policy": cpu_copy(self.model.policy.state_dict()),
                "meta": self._meta(eval_score=metrics[self.score_key])}

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return {"kind": "rl_sb3_teacher", "algo": self.cfg.algo, "suite": self.info.suite, "game": self.info.game,
                "env_id": self.info.env_id, "timesteps": int(self.model.num_timesteps), **extra}

    def epoch_line(self, metrics: dict[str, Any]) -> str | None:
        if not self.cfg.runtime.progress:
            return None
        return (f"steps {metrics['timesteps']:,} | score {metrics['eval_score_mean']:.2f} ± "
                f"{metrics['eval_score_std']:.2f} | best {metrics['best_eval_score']:.2f}")

    def summary(self, history: list[dict[str, Any]], wall_time: float) -> dict[str, Any]:
        from socratic.rl.teachers import load_sb3_teacher

        train_time = self._time()
        save_model(self.model, self.folder.checkpoint_dir / "last.zip")
        episodes = self.cfg.eval.final_episodes
        last = self._score(policy_teacher(self.model, self.info, self.cfg.algo), episodes, seed=1)
        best_teacher = load_sb3_teacher(self.folder.checkpoint_dir / "best.zip", self.info, device=self.device)
        final = self._score(best_teacher, episodes, seed=1)
        best_timesteps = next(m["timesteps"] for m in history if m["epoch"] == self.best_epoch) if history else 0
        return {"kind": "rl_teacher", "name": self.cfg.name, "seed": self.cfg.seed, "suite": self.info.suite,
                "game": self.info.game, "algo": self.cfg.algo, "params": policy_parameters(best_teacher),
                "n_timesteps": int(self.model.num_timesteps), "best_timesteps": int(best_timesteps),
                "best_eval_score": float(self.best_score), "score_mean": final["mean"], "score_std": final["std"],
                "last_score_mean": last["mean"], "last_score_std": last["std"], "episodes": final["episodes"],
                "train_time": train_time, "wall_time_this_session": wall_time}


def check_sb3_teacher_config(cfg: TrainTeacherConfig, info: EnvInfo) -> None:
    """What needs the environment: continuous actions, and PPO rounds that are whole rollouts."""
    if not info.continuous:
        raise ConfigError(f"algo: {cfg.algo} trains continuous-control teachers; {info.suite} {info.game} has "
                          "discrete actions: use algo: dqn")
    if cfg.algo == "ppo":
        n_steps = int(cfg.sb3.hyperparams.get("n_steps", 2048))
        for key, value in (("eval.every_steps", cfg.eval.every_steps), ("sb3.n_timesteps", cfg.sb3.n_timesteps)):
            if value % n_steps:
                raise ConfigError(f"{key}={value} must be a multiple of PPO's rollout length n_steps={n_steps} "
                                  "(a round ends with a full rollout and its update)")


def train_sb3_teacher(cfg: TrainTeacherConfig, overwrite: bool = False, console: Console | None = None, *,
                      resume: bool = False, accept_config_changes: bool = False,
                      step_callbacks: Iterable[StepCallback] = (), epoch_callbacks: Iterable[EpochCallback] = ()
                      ) -> dict[str, Any]:
    """Train a PPO / SAC / TD3 teacher (a resumable run, see `SB3TeacherRun`); returns summary.json's content."""
    info = env_info(cfg.env.suite, cfg.env.game)
    check_sb3_teacher_config(cfg, info)
    run, result = fit_run(SB3TeacherRun, cfg, overwrite, console, resume, accept_config_changes, step_callbacks,
                          epoch_callbacks)
    if cfg.runtime.plot:
        plot_learning_curve(run.run_dir, [("eval_score_mean", f"{cfg.algo.upper()} (mean action)")],
                            x_key="timesteps",
                            title=f"{info.game}: {cfg.algo.upper()} teacher ({result['params']:,} params)")
    return result


__all__ = ["SB3TeacherRun", "algorithm_class", "build_learner",
           "policy_teacher", "save_model", "train_sb3_teacher"]
