"""`socratic rl ...` end to end on MinAtar Breakout: distillation that beats random play, DA, a DQN teacher
trained for a few thousand steps (SB3 .zip and weights-only .pt), dual policy distillation, evaluation, report,
and bad input (exit code 2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from socratic.cli import main
from socratic.engine.checkpoint import CheckpointError
from socratic.engine.logger import read_metrics
from socratic.rl.envs import env_info, make_vec_env
from socratic.rl.networks import QNetwork
from socratic.rl.rollout import play_episodes
from socratic.rl.teachers import load_teacher

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "rl"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _scripted_config(tmp_path: Path, **changes: dict) -> dict:
    config = yaml.safe_load((CONFIGS / "minatar_breakout_pd_scripted.yaml").read_text())
    config["output_dir"] = str(tmp_path / "runs")
    config["env"]["max_episode_steps"] = 1000
    config["collect"].update(states_per_epoch=4000, buffer_size=20000)
    config["optim"].update(epochs=4, lr=2e-3)
    config["eval"].update(episodes_per_epoch=8, final_episodes=120, teacher_episodes=40)
    config["runtime"]["progress"] = False
    for key, value in changes.items():
        config.setdefault(key, {}).update(value)
    return config


def test_distillation_from_a_scripted_teacher_beats_random_play(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = _scripted_config(tmp_path)
    path = _write(config, tmp_path / "pd.yaml")
    assert main(["rl", "distill", str(path)]) == 0
    run_dir = tmp_path / "runs" / config["name"] / "seed0"
    for item in ("config.yaml", "metrics.jsonl", "summary.json", "scores.json", "learning_curve.png",
                 "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (run_dir / item).exists(), item
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[-1]["buffer_states"] == 16000 and metrics[0]["collect_states"] == 4000
    assert 0.02 < metrics[0]["collect_random_fraction"] < 0.09
    assert metrics[-1]["train_agreement"] > metrics[0]["train_agreement"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["kind"] == "rl_distill" and summary["method"] == "pd" and summary["episodes"] == 120
    assert summary["student_params"] == 5_691 and summary["teacher_score_mean"] > 5

    # the student against uniformly random play, both over 120 episodes of the same environments
    student = QNetwork.from_spec(torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["meta"]["net"])
    envs = make_vec_env("minatar", "Breakout", 8, max_episode_steps=1000)
    random_scores = play_episodes(student, envs, 120, seed=1, epsilon=1.0)
    envs.close()
    scores = np.array(json.loads((run_dir / "scores.json").read_text())["student"])
    assert len(scores) == 120 and scores.mean() == pytest.approx(summary["score_mean"])
    standard_error = np.sqrt(scores.var() / len(scores) + random_scores.var() / len(random_scores))
    assert scores.mean() > 3 * random_scores.mean()
    assert scores.mean() - random_scores.mean() > 4 * standard_error, (scores.mean(), random_scores.mean())

    capsys.readouterr()
    assert main(["rl", "evaluate", str(run_dir / "checkpoints" / "best.pt"), "--episodes", "16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 16 and result["game"] == "Breakout"

    # PD + DA: the same pipeline with the classification DA module on the states
    da_config = _scripted_config(tmp_path, da={"enabled": True, "lr": 0.01}, optim={"epochs": 2},
                                 eval={"final_episodes": 8, "teacher_episodes": 0})
    da_config["name"] = "pd_da"
    assert main(["rl", "distill", str(_write(da_config, tmp_path / "pd_da.yaml"))]) == 0
    da_metrics = read_metrics(tmp_path / "runs" / "pd_da" / "seed0" / "metrics.jsonl")
    assert 0.2 < da_metrics[-1]["da_perturbed"] < 0.4  # p = 0.3 of the batches
    assert da_metrics[-1]["da_abs_dx"] > 0
    da_summary = json.loads((tmp_path / "runs" / "pd_da" / "seed0" / "summary.json").read_text())
    assert da_summary["method"] == "pd+da" and da_summary["relative_score"] is None

    capsys.readouterr()
    assert main(["rl", "report", str(tmp_path / "runs"), "--csv", str(tmp_path / "rl.csv")]) == 0
    table = capsys.readouterr().out
    assert "| minatar_breakout_pd_scripted | minatar/Breakout | pd (kl) | 5,691 | 1 | 120 |" in table
    assert "pd+da (kl)" in table and (tmp_path / "rl.csv").read_text().startswith("name,kind,suite,game")
    assert main(["rl", "report", str(tmp_path / "runs"), "--baseline", "minatar_breakout_pd_scripted"]) == 0
    assert "| Δ vs minatar_breakout_pd_scripted | Welch t |" in capsys.readouterr().out  # one seed each: t is "–"
    assert main(["rl", "report", str(tmp_path / "runs"), "--baseline", "nope"]) == 2
    assert "no runs named 'nope'" in capsys.readouterr().err


def test_dqn_teacher_zip_and_weights_then_distill_and_dpd(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = str(tmp_path / "runs")
    small = ["net.convs=[8,8,8]", "net.hidden=32", "env.max_episode_steps=300", "runtime.progress=false",
             f"output_dir={runs}"]
    assert main(["rl", "train-teacher", str(CONFIGS / "minatar_breakout_teacher.yaml"), *small,
                 "dqn.n_timesteps=2000", "dqn.learning_starts=500", "eval.every_steps=1000", "eval.episodes=3",
                 "eval.final_episodes=4"]) == 0
    run_dir = Path(runs) / "minatar_breakout_teacher" / "seed0"
    for item in ("best.pt", "best.zip", "last.pt", "last.zip"):
        assert (run_dir / "checkpoints" / item).exists(), item
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["kind"] == "rl_teacher" and summary["n_timesteps"] == 2000 and summary["episodes"] == 4

    breakout = env_info("minatar", "Breakout")
    from_zip = load_teacher(run_dir / "checkpoints" / "best.zip", breakout)  # read without unpickling
    from_pt = load_teacher(run_dir / "checkpoints" / "best.pt", breakout)  # weights_only
    x = torch.randint(0, 2, (16, 4, 10, 10), dtype=torch.uint8)
    torch.testing.assert_close(from_zip(x), from_pt(x))
    assert not any(p.requires_grad for p in from_zip.parameters())
    with pytest.raises(CheckpointError, match="number of actions 3, the environment has 4"):
        load_teacher(run_dir / "checkpoints" / "best.zip", env_info("minatar", "SpaceInvaders"))

    # distil from the SB3 .zip teacher (one short epoch)
    assert main(["rl", "distill", str(CONFIGS / "minatar_breakout_pd.yaml"), f"output_dir={runs}",
                 f"teacher.checkpoint={run_dir / 'checkpoints' / 'best.zip'}", "optim.epochs=1",
                 "collect.states_per_epoch=1000", "collect.buffer_size=2000", "eval.episodes_per_epoch=2",
                 "eval.final_episodes=2", "eval.teacher_episodes=2", "env.max_episode_steps=300",
                 "runtime.progress=false"]) == 0
    assert json.loads((Path(runs) / "minatar_breakout_pd" / "seed0" / "summary.json").read_text())["teacher_params"] == 5_691

    # dual policy distillation: two peers, two rounds
    assert main(["rl", "dpd", str(CONFIGS / "minatar_breakout_dpd.yaml"), *small, "dqn.n_timesteps=1000",
                 "dqn.learning_starts=200", "dpd.round_steps=500", "dpd.batch_size=32", "eval.episodes_per_round=2",
                 "eval.final_episodes=2"]) == 0
    dpd_dir = Path(runs) / "minatar_breakout_dpd" / "seed0"
    metrics = read_metrics(dpd_dir / "metrics.jsonl")
    assert len(metrics) == 2 and metrics[-1]["learner0_timesteps"] == metrics[-1]["learner1_timesteps"] == 1000
    assert metrics[-1]["learner0_dpd_steps"] > 0 and metrics[-1]["learner1_dpd_steps"] > 0
    assert 0 < metrics[-1]["learner0_dpd_weight_max"] <= 1.0
    dpd_summary = json.loads((dpd_dir / "summary.json").read_text())
    assert dpd_summary["kind"] == "rl_dpd" and dpd_summary["method"] == "dpd"
    assert {"learner0_score_mean", "learner1_score_mean", "score_best_learner"} <= set(dpd_summary)


def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    config = _scripted_config(tmp_path)
    path = _write(config, tmp_path / "pd.yaml")
    capsys.readouterr()
    assert main(["rl", "distill", str(path), "env.game=Pong"]) == 2
    err = capsys.readouterr().err
    assert "unknown minatar game 'Pong'" in err and "Asterix, Breakout, Freeway, Seaquest, SpaceInvaders" in err
    assert main(["rl", "distill", str(path), "env.game=SpaceInvaders"]) == 2
    assert "plays minatar Breakout, not minatar SpaceInvaders" in capsys.readouterr().err
    assert main(["rl", "distill", str(path), "loss.temperature=0"]) == 2
    assert "loss.temperature must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing was created for bad input

    monkeypatch.setitem(sys.modules, "minatar", None)
    monkeypatch.setitem(sys.modules, "minatar.gym", None)
    assert main(["rl", "distill", str(path)]) == 2
    assert 'pip install "socratic-kd[rl,minatar]"' in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ale_py", None)
    assert main(["rl", "evaluate", "teacher.zip", "--suite", "atari", "--game", "SpaceInvaders"]) == 2
    assert 'pip install "socratic-kd[rl,atari]"' in capsys.readouterr().err


def test_every_rl_command_has_help(capsys: pytest.CaptureFixture) -> None:
    for command in (["rl"], ["rl", "train-teacher"], ["rl", "distill"], ["rl", "dpd"], ["rl", "evaluate"],
                    ["rl", "report"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "usage: socratic rl" in out
    with pytest.raises(SystemExit):
        main(["rl", "evaluate", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--suite", "--game", "--episodes", "--num-envs", "--seed", "--epsilon", "--max-episode-steps",
                   "--device", "--json"):
        assert option in help_text
