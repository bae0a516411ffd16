"""Resumable SB3 DQN runs: a learner's state as weights-only plain data, rounds that need no environment state,
and `rl train-teacher` / `rl dpd` killed mid-run and resumed to the uninterrupted run's weights and metrics."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from _same_run import assert_same
from socratic.engine.runtime import rng_state, set_rng_state, setup_run
from socratic.rl.config import DPDConfig, load_rl_config
from socratic.rl.sb3_state import (begin_round, decode_array, encode_array, learner_state, load_learner_state,
                                   round_seed)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "rl"
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["net.convs=[8,8,8]", "net.hidden=32", "env.max_episode_steps=300", "runtime.progress=false",
        "runtime.plot=false", "dqn.learning_starts=100", "dqn.buffer_size=500", "dqn.target_update_interval=100"]


def _weights_only_round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_arrays_are_encoded_small_and_decoded_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    cases = {
        "bits": rng.integers(0, 2, size=(7, 1, 4, 10, 10)).astype(np.uint8),  # MinAtar frames
        "uint8": rng.integers(0, 256, size=(5, 3)).astype(np.float32),  # integral floats
        "uint8_actions": rng.integers(0, 6, size=(6, 1, 1)),  # int64
        "raw": rng.normal(size=(5, 3)).astype(np.float32),
        "raw_negative": rng.integers(-3, 9, size=(6, 1, 1)),
        "raw_minus_zero": np.array([0.0, -0.0, 1.0], dtype=np.float32),  # bit for bit: -0.0 is not 0.0
    }
    for case, array in cases.items():
        encoded = _weights_only_round_trip(encode_array(array))
        assert encoded["encoding"] == case.split("_")[0], case
        decoded = decode_array(encoded)
        assert decoded.dtype == array.dtype and decoded.tobytes() == array.tobytes(), case
    assert encode_array(cases["bits"])["data"].numel() == cases["bits"].size // 8  # eight pixels a byte
    empty = decode_array(encode_array(np.zeros((0, 1, 4, 10, 10), dtype=np.uint8)))
    assert empty.shape == (0, 1, 4, 10, 10)


def _dpd_learners(seed_offset: int = 0) -> list:
    from socratic.rl.dqn import DPDDQN, build_dqn
    from socratic.rl.envs import env_info

    cfg = load_rl_config(DPDConfig, CONFIGS / "minatar_breakout_dpd.yaml",
                         [*TINY, "dqn.n_timesteps=2000", "dqn.buffer_size=200", "dpd.batch_size=16"])
    device = setup_run(0, "cpu")
    learners = [build_dqn(cfg, env_info("minatar", "Breakout"), seed_offset + i, device, cls=DPDDQN)
                for i in range(2)]
    for i, learner in enumerate(learners):
        learner.setup_dpd(learners[1 - i], cfg.dpd, cfg.dqn.n_timesteps)
    return learners


def _round(learners: list, round_: int, steps: int = 100) -> None:
    for i, learner in enumerate(learners):
        begin_round(learner, round_seed(0, i, round_))
        learner.learn(steps, reset_num_timesteps=False)


def test_a_dpd_learner_state_round_trips_through_weights_only_and_training_goes_on_identically() -> None:
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("minatar")
    learners = _dpd_learners()
    for round_ in (1, 2, 3):  # 300 steps each: the 200-transition replay buffers have wrapped around
        _round(learners, round_)
    saved = _weights_only_round_trip({"learners": [learner_state(learner) for learner in learners],
                                      "rng": rng_state()})
    assert learners[0].replay_buffer.full and learners[0]._n_updates > 0 and learners[0].dpd_stats["steps"] > 0
    buffer = saved["learners"][0]["replay_buffer"]
    assert buffer["observations"]["encoding"] == "bits"
    # a next observation is stored only where it is not the following row's: episode ends, round ends, the newest
    episode_ends = int(learners[0].replay_buffer.dones.sum())
    assert 0 < len(buffer["next_observations"]["rows"]) <= episode_ends + 4 < 200 / 3

    _round(learners, 4)
    _round(learners, 5)
    resumed = _dpd_learners(seed_offset=7)  # other seeds: everything that matters must come from the state
    for learner, state in zip(resumed, saved["learners"]):
        load_learner_state(learner, state)
    set_rng_state(saved["rng"])
    _round(resumed, 4)
    _round(resumed, 5)
    for learner, original in zip(resumed, learners):
        for name, value in original.policy.state_dict().items():
            assert torch.equal(learner.policy.state_dict()[name], value), name
        for name in ("num_timesteps", "_n_calls", "_n_updates", "_episode_num", "exploration_rate"):
            assert getattr(learner, name) == getattr(original, name), name
        assert learner.dpd_stats == original.dpd_stats
        for name in ("observations", "next_observations", "actions", "rewards", "dones"):
            assert np.array_equal(getattr(learner.replay_buffer, name), getattr(original.replay_buffer, name)), name


# ------------------------------------------------------------------------------- kill and resume, end to end
RUNS = {
    "dpd": ("minatar_breakout_dpd.yaml", ["dpd.round_steps=100", "dpd.batch_size=16", "eval.episodes_per_round=2",
                                          "eval.final_episodes=2"]),
    "train-teacher": ("minatar_breakout_teacher.yaml", ["eval.every_steps=100", "eval.episodes=2",
                                                        "eval.final_episodes=2"]),
}
# three rounds of 100 steps into a 200-transition replay buffer: full at the end of round 2, wrapped in round 3
BUDGET = ["dqn.n_timesteps=300", "dqn.buffer_size=200"]


class Interrupt(Exception):
    """Raised by a test callback to stop a run as a crash would."""


def _args(command: str, output_dir: Path) -> list[str]:
    config, overrides = RUNS[command]
    return [str(CONFIGS / config), *TINY, *BUDGET, *overrides, "env.eval_num_envs=2", "runtime.num_threads=1",
            f"output_dir={output_dir}"]


def _run(command: str, output_dir: Path, resume: bool = False, **callbacks: list) -> dict:
    from socratic.rl.config import TrainTeacherConfig
    from socratic.rl.dqn import run_dpd, train_teacher

    config_file, *overrides = _args(command, output_dir)
    if command == "dpd":
        return run_dpd(load_rl_config(DPDConfig, config_file, overrides), resume=resume, **callbacks)
    return train_teacher(load_rl_config(TrainTeacherConfig, config_file, overrides), resume=resume, **callbacks)


def _run_dir(command: str, output_dir: Path) -> Path:
    name = "minatar_breakout_dpd" if command == "dpd" else "minatar_breakout_teacher"
    return output_dir / name / "seed0"


def _outcome(run_dir: Path) -> dict:
    import json

    from socratic.engine.logger import read_metrics

    checkpoints = {path.name: torch.load(path, weights_only=True)
                   for path in sorted((run_dir / "checkpoints").glob("*.pt"))}
    return {"metrics": read_metrics(run_dir / "metrics.jsonl"), "checkpoints": checkpoints,
            "summary": json.loads((run_dir / "summary.json").read_text())}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict]:
    """Each command's outcome when nothing interrupts it (computed once per test module, on demand)."""
    cache: dict = {}

    def get(command: str) -> dict:
        if command not in cache:
            output_dir = tmp_path_factory.mktemp(f"uninterrupted-{command}")
            with torch.random.fork_rng():
                previous = torch.get_num_threads()
                try:
                    _run(command, output_dir)
                finally:
                    torch.set_num_threads(previous)
            cache[command] = _outcome(_run_dir(command, output_dir))
        return cache[command]

    return get


@pytest.mark.parametrize("command", ["dpd", "train-teacher"])
def test_a_run_stopped_after_a_round_and_mid_round_resumes_bit_for_bit(command: str, tmp_path: Path,
                                                                       uninterrupted: Callable[[str], dict]) -> None:
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("minatar")
    reference = uninterrupted(command)
    assert [m["epoch"] for m in reference["metrics"]] == [1, 2, 3]

    def after_round_1(epoch: int, metrics: dict) -> None:
        if epoch == 1:
            raise Interrupt

    def mid_round_3(epoch: int, step: int) -> None:
        if epoch == 3 and step == 150 // (2 if command == "train-teacher" else 1):
            raise Interrupt

    with pytest.raises(Interrupt):
        _run(command, tmp_path, epoch_callbacks=[after_round_1])
    with pytest.raises(Interrupt):  # the second session does round 2, then dies in the middle of round 3
        _run(command, tmp_path, resume=True, step_callbacks=[mid_round_3])
    run_dir = _run_dir(command, tmp_path)
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    _run(command, tmp_path, resume=True)
    assert_same(_outcome(run_dir), reference)


@pytest.mark.parametrize("command", ["dpd", "train-teacher"])
def test_a_run_killed_by_sigkill_resumes_bit_for_bit(command: str, tmp_path: Path,
                                                     uninterrupted: Callable[[str], dict]) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from socratic.cli import main

    pytest.importorskip("stable_baselines3")
    pytest.importorskip("minatar")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "socratic", "rl", command, *_args(command, tmp_path)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = _run_dir(command, tmp_path) / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if last.is_file():  # round 1 is checkpointed: kill it in round 2 or 3 (or while it writes a checkpoint)
            break
        time.sleep(0.01)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]  # still running: kill it mid-run
    assert last.is_file(), "round 1 wrote no last.pt within 120 s"
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert not (_run_dir(command, tmp_path) / "summary.json").exists()
    assert main(["rl", command, *_args(command, tmp_path), "--resume"]) == 0
    assert_same(_outcome(_run_dir(command, tmp_path)), uninterrupted(command))


def test_a_nan_stops_a_dqn_run_at_the_last_good_round(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from socratic.cli import main

    pytest.importorskip("stable_baselines3")
    pytest.importorskip("minatar")
    # round 1 only collects (learning_starts 150 > 100 steps); the first TD updates of round 2 overflow
    args = [*_args("dpd", tmp_path), "dqn.learning_starts=150", "dqn.learning_rate=1e30", "dqn.max_grad_norm=1e30"]
    assert main(["rl", "dpd", *args]) == 1
    err = capsys.readouterr().err
    assert "round 2, learner 0: the Q-network has non-finite weights" in err and "(epoch 1)" in err
    run_dir = _run_dir("dpd", tmp_path)
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert not (run_dir / "summary.json").exists()

    # the folder is kept for --resume: a fresh run into it, or a resume with a changed key, is refused (exit 2)
    assert main(["rl", "dpd", *args]) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert main(["rl", "dpd", *args, "dqn.learning_rate=1e-4", "--resume"]) == 2
    assert "dqn.learning_rate: 1e+30 -> 0.0001" in capsys.readouterr().err
