"""Dual policy distillation with DDPG and PPO peers (socratic/rl/dpd.py): the disadvantageous weights and the
weighted action MSE against hand computations (both signs), the distillation step of each learner against its
definition, the config checks, tiny `socratic rl dpd` runs on Pendulum through the CLI, and a run stopped after a
round and in the middle of a round that resumes to the uninterrupted run bit for bit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from _same_run import assert_same
from socratic.config import ConfigError
from socratic.rl.config import DPDConfig, load_rl_config
from socratic.rl.dpd import StateMemory, distillation_weights, weighted_action_mse

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "rl"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ by hand
def test_weights_with_the_papers_sign_peer_minus_own() -> None:
    peer = torch.tensor([1.0, 0.0, -1.0, 3.0])
    own = torch.zeros(4)
    w = distillation_weights(peer, own, beta=1.0, sign="peer_minus_own")
    # exp(1, 0, -1, 3) = 2.718282, 1, 0.367879, 20.085537; sum 24.171698 (xi = 3 takes 83 %)
    assert w.tolist() == pytest.approx([0.112457, 0.041371, 0.015219, 0.830953], abs=1e-6)
    # beta 0.5 (the PPO default) on xi = +2 / -2: exp(1) / (exp(1) + exp(-1)) = 0.880797
    w = distillation_weights(torch.tensor([2.0, -2.0]), torch.zeros(2), beta=0.5, sign="peer_minus_own")
    assert w.tolist() == pytest.approx([0.880797, 0.119203], abs=1e-6)


def test_weights_with_the_reference_ppo_sign_own_minus_peer() -> None:
    peer = torch.tensor([1.0, 0.0, -1.0, 3.0])
    own = torch.zeros(4)
    w = distillation_weights(peer, own, beta=1.0, sign="own_minus_peer")
    # exp(-1, 0, 1, -3) = 0.367879, 1, 2.718282, 0.049787; sum 4.135948
    assert w.tolist() == pytest.approx([0.088947, 0.241783, 0.657233, 0.012038], abs=1e-6)
    assert int(w.argmax()) == 2  # the opposite sign favours the states where the peer looks *worse*


def test_weights_clip_at_both_ends_before_normalising_and_are_detached() -> None:
    peer = torch.tensor([10.0, -10.0, 0.0], requires_grad=True)
    own = torch.zeros(3)
    w = distillation_weights(peer, own, beta=1.0)
    # exp(10) = 22026 -> 100, exp(-10) = 4.5e-5 -> 0.01, exp(0) = 1; sum 101.01
    assert w.tolist() == pytest.approx([100 / 101.01, 0.01 / 101.01, 1 / 101.01], rel=1e-5)
    assert not w.requires_grad
    assert distillation_weights(peer, own, beta=0.0).tolist() == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="sign"):
        distillation_weights(peer, own, beta=1.0, sign="peer")


def test_weighted_action_mse_by_hand() -> None:
    actions = torch.tensor([[1.0, 0.0], [0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    weights = torch.tensor([0.25, 0.75])
    # per state: mean_j (a - a~)^2 = 0.5, 2.0; weighted 0.125, 1.5
    assert float(weighted_action_mse(actions, targets, weights, "sum").detach()) == pytest.approx(1.625)
    assert float(weighted_action_mse(actions, targets, weights, "mean").detach()) == pytest.approx(0.8125)
    weighted_action_mse(actions, targets, weights, "sum").backward()
    # d/da of 0.25 * ((a00 - 0)^2 + a01^2) / 2 at a00 = 1: 0.25 * 1 = 0.25; of 0.75 * (a11 - 2)^2 / 2 at 0: -1.5
    assert actions.grad.flatten().tolist() == pytest.approx([0.25, 0.0, 0.0, -1.5])


def test_state_memory_is_a_fifo_that_wraps() -> None:
    memory = StateMemory(4, (2,))
    memory.add(np.arange(6, dtype=np.float32).reshape(3, 2))
    memory.add(np.arange(6, 10, dtype=np.float32).reshape(2, 2))  # 5 states into 4 slots: the oldest goes
    assert memory.size == 4 and memory.pos == 1
    assert sorted(memory.states[:, 0].tolist()) == [2.0, 4.0, 6.0, 8.0]
    restored = StateMemory(4, (2,))
    restored.load_state_dict(memory.state_dict())
    assert np.array_equal(restored.states, memory.states) and (restored.pos, restored.size) == (1, 4)


# ------------------------------------------------------------------------ the learners' steps
def _pendulum(learner: str, *overrides: str) -> DPDConfig:
    return load_rl_config(DPDConfig, CONFIGS / f"classic_control_pendulum_dpd_{learner}.yaml",
                          [*_TINY[learner], *overrides])


def _pair(cfg: DPDConfig) -> list:
    from socratic.engine.runtime import setup_run
    from socratic.rl.dpd import build_learner
    from socratic.rl.envs import env_info

    device = setup_run(0, "cpu")
    learners = [build_learner(cfg, env_info("classic_control", "Pendulum"), i, device) for i in range(2)]
    for i, learner in enumerate(learners):
        learner.setup_dpd(learners[1 - i], cfg.dpd, 1000)
    return learners


def test_the_ddpg_step_imitates_the_peers_action_weighted_by_the_own_critic_at_that_action() -> None:
    pytest.importorskip("stable_baselines3")
    learner, peer = _pair(_pendulum("ddpg", "dpd.batch_size=32"))
    peer.learn(200)  # fills the peer's replay buffer (random warm-up, then updates)
    critic_before = [p.detach().clone() for p in learner.critic.parameters()]
    actor_before = [p.detach().clone() for p in learner.actor.parameters()]
    state = np.random.get_state()
    obs = peer.replay_buffer.sample(32).observations  # the states the step will draw
    np.random.set_state(state)
    with torch.no_grad():
        a_peer = peer.actor(obs)
        xi = peer.critic.q1_forward(obs, a_peer)[:, 0] - learner.critic.q1_forward(obs, a_peer)[:, 0]
        w = torch.exp(xi).clamp(0.01, 100)
        w = w / w.sum()
        expected = float((w * (learner.actor(obs) - a_peer).pow(2).mean(dim=1)).sum())
    learner.distill_step()
    stats = learner.pop_dpd_stats()
    assert stats["dpd_steps"] == 1 and stats["dpd_loss"] == pytest.approx(expected, rel=1e-5)
    assert stats["dpd_xi_mean"] == pytest.approx(float(xi.mean()), rel=1e-5, abs=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(critic_before, learner.critic.parameters()))  # actor only
    assert not all(torch.equal(a, b) for a, b in zip(actor_before, learner.actor.parameters()))


@pytest.mark.parametrize("sign", ["peer_minus_own", "own_minus_peer"])
def test_the_ppo_step_imitates_the_peers_sampled_action_weighted_by_the_value_gap(sign: str) -> None:
    pytest.importorskip("stable_baselines3")
    learner, peer = _pair(_pendulum("ppo", "dpd.batch_size=32", f"dpd.sign={sign}"))
    peer.learn(128)  # one update: 128 visited states in the peer's memory
    assert peer.memory.size == 128
    state, torch_state = np.random.get_state(), torch.get_rng_state()
    obs = torch.as_tensor(peer.memory.sample(32))
    with torch.no_grad():
        a_peer = peer.policy.get_distribution(obs).sample()
        v_peer, v_own = peer.policy.predict_values(obs)[:, 0], learner.policy.predict_values(obs)[:, 0]
        xi = (v_peer - v_own) if sign == "peer_minus_own" else (v_own - v_peer)
        w = torch.exp(0.5 * xi).clamp(0.01, 100)
        w = w / w.sum()
        mean = learner.policy.get_distribution(obs).distribution.mean
        expected = float((w * (mean - a_peer).pow(2).mean(dim=1)).mean())
    np.random.set_state(state)
    torch.set_rng_state(torch_state)
    learner.distill_step()
    stats = learner.pop_dpd_stats()
    assert stats["dpd_loss"] == pytest.approx(expected, rel=1e-5)
    assert stats["dpd_xi_mean"] == pytest.approx(float(xi.mean()), rel=1e-5, abs=1e-6)


def test_config_checks_name_the_key() -> None:
    with pytest.raises(ConfigError, match="dpd.learner: ddpg does not fit env.suite minatar"):
        load_rl_config(DPDConfig, CONFIGS / "minatar_breakout_dpd.yaml", ["dpd.learner=ddpg"])
    with pytest.raises(ConfigError, match="use ddpg or ppo"):
        load_rl_config(DPDConfig, CONFIGS / "classic_control_pendulum_dpd_ppo.yaml", ["dpd.learner=dqn"])
    with pytest.raises(ConfigError, match="must be a multiple of ppo.n_steps"):
        _pendulum("ppo", "dpd.round_steps=100")
    with pytest.raises(ConfigError, match="dpd.disadvantage: 'peer_action' is not one of value"):
        _pendulum("ppo", "dpd.disadvantage=peer_action")
    with pytest.raises(ConfigError, match="dpd.sign"):
        _pendulum("ddpg", "dpd.sign=paper")
    with pytest.raises(ConfigError, match="dpd.every is not used by DQN"):
        load_rl_config(DPDConfig, CONFIGS / "minatar_breakout_dpd.yaml", ["dpd.every=2"])


def test_unset_dpd_keys_take_the_learners_defaults() -> None:
    base = ["env.suite=classic_control", "env.game=Pendulum", "ppo.n_steps=2048", "dpd.round_steps=2048"]
    ppo = load_rl_config(DPDConfig, None, [*base, "dpd.learner=ppo", "ppo.learning_rate=2e-4"]).dpd
    assert (ppo.beta, ppo.batch_size, ppo.lr, ppo.every, ppo.disadvantage) == (0.5, 512, 2e-4, 5, "value")
    ddpg = load_rl_config(DPDConfig, None, [*base, "dpd.learner=ddpg", "dpd.round_steps=2000"]).dpd
    assert (ddpg.beta, ddpg.batch_size, ddpg.lr, ddpg.every, ddpg.disadvantage) == (1.0, 512, 1e-4, 1, "peer_action")
    dqn = load_rl_config(DPDConfig, None, []).dpd  # the DQN adaptation's values, as before the learner choice
    assert (dqn.beta, dqn.batch_size, dqn.lr, dqn.every, dqn.disadvantage) == (1.0, 64, 1e-5, None, "value")


# ----------------------------------------------------------------------------- through the CLI
# tiny runs: three rounds, replay buffer / state memory smaller than the steps taken (they wrap)
_TINY = {
    "ddpg": ["ddpg.n_timesteps=300", "dpd.round_steps=100", "ddpg.learning_starts=50", "ddpg.train_freq=50",
             "ddpg.gradient_steps=10", "ddpg.buffer_size=250", "dpd.batch_size=32", "ddpg.net_arch=[16,16]"],
    "ppo": ["ppo.n_timesteps=384", "dpd.round_steps=128", "ppo.n_steps=64", "ppo.batch_size=32", "ppo.n_epochs=2",
            "dpd.every=1", "dpd.memory_size=300", "dpd.batch_size=32", "ppo.net_arch=[16,16]"],
}


def _args(learner: str, output_dir: Path, *extra: str) -> list[str]:
    return [str(CONFIGS / f"classic_control_pendulum_dpd_{learner}.yaml"), *_TINY[learner],
            "env.max_episode_steps=50", "env.eval_num_envs=2", "eval.episodes_per_round=2", "eval.final_episodes=2",
            "runtime.progress=false", "runtime.plot=false", "runtime.num_threads=1", f"output_dir={output_dir}",
            *extra]


@pytest.mark.parametrize("learner", ["ddpg", "ppo"])
def test_a_tiny_dpd_run_and_the_learners_alone_through_the_cli(learner: str, tmp_path: Path) -> None:
    from socratic.cli import main
    from socratic.engine.logger import read_metrics

    pytest.importorskip("stable_baselines3")
    assert main(["rl", "dpd", *_args(learner, tmp_path)]) == 0
    run_dir = tmp_path / f"classic_control_pendulum_dpd_{learner}" / "seed0"
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert [m["learner0_timesteps"] for m in metrics] == [100, 200, 300] if learner == "ddpg" else [128, 256, 384]
    for i in (0, 1):
        assert sum(m[f"learner{i}_dpd_steps"] for m in metrics) > 0
        assert all(0 < m[f"learner{i}_dpd_weight_max"] <= 1 for m in metrics[1:])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["kind"], summary["algo"], summary["method"], summary["episodes"]) == ("rl_dpd", learner, "dpd", 2)
    assert summary["score_best_learner"] == max(summary["learner0_score_mean"], summary["learner1_score_mean"])
    best = torch.load(run_dir / "checkpoints" / "learner0_best.pt", weights_only=True)
    assert best["meta"]["algo"] == learner and (run_dir / "checkpoints" / "learner1_best.zip").is_file()

    assert main(["rl", "dpd", *_args(learner, tmp_path, "dpd.enabled=false", "name=alone")]) == 0
    alone = read_metrics(tmp_path / "alone" / "seed0" / "metrics.jsonl")
    assert all(m["learner0_dpd_steps"] == 0 and m["learner1_dpd_steps"] == 0 for m in alone)
    assert json.loads((tmp_path / "alone" / "seed0" / "summary.json").read_text())["method"] == "alone"


def test_bad_input_exits_2_before_a_run_folder_exists(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from socratic.cli import main

    assert main(["rl", "dpd", *_args("ppo", tmp_path, "dpd.sign=reference")]) == 2
    assert "dpd.sign: 'reference' is not one of peer_minus_own, own_minus_peer" in capsys.readouterr().err
    assert not tmp_path.joinpath("classic_control_pendulum_dpd_ppo").exists()


# ----------------------------------------------------------------------------------- resume


class Interrupt(Exception):
    """Raised by a test callback to stop a run as a crash would."""


def _run(learner: str, output_dir: Path, resume: bool = False, **callbacks: list) -> dict:
    from socratic.rl.dpd import run_dpd

    config, *overrides = _args(learner, output_dir)
    return run_dpd(load_rl_config(DPDConfig, config, overrides), resume=resume, **callbacks)


def _outcome(run_dir: Path) -> dict:
    from socratic.engine.logger import read_metrics

    checkpoints = {path.name: torch.load(path, weights_only=True)
                   for path in sorted((run_dir / "checkpoints").glob("*.pt"))}
    return {"metrics": read_metrics(run_dir / "metrics.jsonl"), "checkpoints": checkpoints,
            "summary": json.loads((run_dir / "summary.json").read_text())}


@pytest.mark.parametrize("learner", ["ddpg", "ppo"])
def test_a_run_stopped_after_a_round_and_mid_round_resumes_bit_for_bit(learner: str, tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    with torch.random.fork_rng():
        _run(learner, tmp_path / "full")
    run_dir = tmp_path / "cut" / f"classic_control_pendulum_dpd_{learner}" / "seed0"
    reference = _outcome(tmp_path / "full" / f"classic_control_pendulum_dpd_{learner}" / "seed0")
    last = reference["checkpoints"]["last.pt"]["learners"]
    assert last[0]["replay_buffer" if learner == "ddpg" else "memory"]["pos"] > 0  # wrapped: 300 > 250, 384 > 300

    def after_round_1(epoch: int, metrics: dict) -> None:
        if epoch == 1:
            raise Interrupt

    def mid_round_3(epoch: int, step: int) -> None:
        if epoch == 3 and step == 150:  # learner 1's half of the round
            raise Interrupt

    stop: Callable = after_round_1
    with pytest.raises(Interrupt):
        _run(learner, tmp_path / "cut", epoch_callbacks=[stop])
    with pytest.raises(Interrupt):  # the second session does round 2, then dies in the middle of round 3
        _run(learner, tmp_path / "cut", resume=True, step_callbacks=[mid_round_3])
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    _run(learner, tmp_path / "cut", resume=True)
    assert_same(_outcome(run_dir), reference)


def test_dpd_runs_can_be_searched(tmp_path: Path) -> None:
    """--kind rl-dpd: each trial is an `rl dpd` run folder valued by its best per-round eval_score_mean."""
    import yaml

    from socratic.config.loader import apply_overrides
    from socratic.engine.logger import read_metrics
    from socratic.search import load_study, run_search

    pytest.importorskip("optuna")
    pytest.importorskip("stable_baselines3")
    config, *overrides = _args("ppo", tmp_path / "runs", "ppo.n_timesteps=128", "runtime.tensorboard=false")
    values = apply_overrides(yaml.safe_load(Path(config).read_text()), overrides)
    config_path, space_path = tmp_path / "dpd.yaml", tmp_path / "space.yaml"
    config_path.write_text(yaml.safe_dump(values))
    space_path.write_text(yaml.safe_dump({"params": {"dpd.beta": {"type": "float", "low": 0.1, "high": 2.0}}}))
    result = run_search(config_path, space_path, n_trials=2, study_name="dpd", pruner="none", seed=0, report=False,
                        kind="rl-dpd")
    assert result["trials"] == {"COMPLETE": 2}
    study, _ = load_study(tmp_path / "runs" / "dpd")
    for trial in study.get_trials():
        history = read_metrics(Path(trial.user_attrs["run_dir"]) / "metrics.jsonl")
        assert trial.value == max(m["eval_score_mean"] for m in history)
