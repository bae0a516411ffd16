"""`socratic search`: search-space validation, pruning, two workers on one study, a killed worker resumed.

Trials are 1-3 epoch runs of a tiny BatchNorm-free CNN on 100 images (tests/search_worker.py registers it in
the worker processes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

optuna = pytest.importorskip("optuna")

from _dist_support import FLAT_MODEL, flat_model_registered  # noqa: E402
from socratic.cli import main  # noqa: E402
from socratic.config import ConfigError  # noqa: E402
from socratic.config.loader import read_yaml  # noqa: E402
from socratic.engine.logger import read_metrics  # noqa: E402
from socratic.search import load_search_space, load_study, run_search  # noqa: E402
from socratic.search.runner import build_pruner  # noqa: E402
from socratic.search.storage import HEARTBEAT_ATTR, fail_stale_trials, open_storage  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "search_worker.py"
SPACE = {"params": {"optim.lr": {"type": "log_float", "low": 0.02, "high": 0.3},
                    "data.batch_size": {"type": "categorical", "choices": [25, 50]}}}


@pytest.fixture()
def search_files(run_config: dict, tmp_path: Path) -> tuple[Path, Path]:
    config = {**run_config, "student": {"name": FLAT_MODEL},
              "data": {**run_config["data"], "train_subset": 100},
              "optim": {**run_config["optim"], "epochs": 1},
              "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}
    config_path, space_path = tmp_path / "tiny.yaml", tmp_path / "space.yaml"
    config_path.write_text(yaml.safe_dump(config))
    space_path.write_text(yaml.safe_dump(SPACE))
    return config_path, space_path


def _worker(*args: str, kill: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"SOCRATIC_TEST_KILL": json.dumps(kill)} if kill else {})}
    return subprocess.Popen([sys.executable, str(WORKER), "search", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"search worker timed out:\n{err[-4000:]}")
    assert proc.returncode == 0, f"search worker failed ({proc.returncode}):\n{err[-4000:]}"
    return out


def test_shipped_da_space_fits_the_da_configs() -> None:
    space = load_search_space(REPO / "configs" / "search" / "da_paper.yaml")
    assert {p.key: (p.type, p.low, p.high, p.log) for p in space.params} == {
        "da.steps": ("int", 1, 3, False), "da.lr": ("float", 0.001, 0.1, True), "da.prob": ("float", 0.1, 1.0, False)}
    configs = sorted((REPO / "configs").glob("*/da/*.yaml"))
    assert len(configs) >= 4
    for path in configs:
        space.check(read_yaml(path))
    pruner = build_pruner(space.pruner, epochs=15)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert pruner._min_resource == 6  # 40% of 15 epochs  # noqa: SLF001
    assert build_pruner(space.pruner, epochs=6)._min_resource == 3  # 40% of 6 epochs, rounded up  # noqa: SLF001


@pytest.mark.parametrize(("param", "message"), [
    ({"da.lrr": {"type": "float", "low": 0.01, "high": 0.1}}, "params.da.lrr: .*unknown config key 'da.lrr'"),
    ({"optim.lr": {"type": "float", "low": 0.1, "high": 0.1}}, "params.optim.lr: empty range"),
    ({"optim.lr": {"type": "log_float", "low": 0.1, "high": 0.01}}, "params.optim.lr: inverted range"),
    ({"optim.lr": {"type": "log_float", "low": 0.0, "high": 0.1}}, "params.optim.lr: a log range needs low > 0"),
    ({"da.prob": {"type": "float", "low": 0.5, "high": 1.5}}, "params.da.prob: the value 1.5 .*da.prob must be"),
    ({"data.batch_size": {"type": "float", "low": 8, "high": 64}}, "params.data.batch_size: .*expected an integer"),
    ({"method.name": {"type": "categorical", "choices": []}}, "params.method.name: choices must be a non-empty"),
    ({"optim.lr": {"type": "uniform", "low": 0.01, "high": 0.1}}, "params.optim.lr: type must be one of"),
])
def test_bad_search_space_is_a_clear_error(search_files: tuple[Path, Path], tmp_path: Path, param: dict, message: str,
                                           capsys: pytest.CaptureFixture) -> None:
    config, space = search_files
    space.write_text(yaml.safe_dump({"params": param}))
    assert main(["search", str(config), str(space), "--n-trials", "1"]) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, " ".join(err.split())), err
    assert not (tmp_path / "runs").exists()  # nothing was created


def test_pruned_trial_keeps_its_run_folder(search_files: tuple[Path, Path], tmp_path: Path) -> None:
    config, space = search_files
    # Every report is below 101%: the trial is pruned after its first epoch of two.
    with flat_model_registered():
        result = run_search(config, space, ["optim.epochs=2"], n_trials=1, study_name="prune",
                            pruner=optuna.pruners.ThresholdPruner(lower=101.0))
    assert result["trials"] == {"PRUNED": 1}
    run_dir = tmp_path / "runs" / "prune" / "trial0" / "seed0"
    marker = json.loads((run_dir / "trial.json").read_text())
    assert marker["state"] == "PRUNED" and marker["pruned_at_epoch"] == 1
    assert [m["epoch"] for m in read_metrics(run_dir / "metrics.jsonl")] == [1]
    assert (run_dir / "checkpoints" / "last.pt").exists() and not (run_dir / "summary.json").exists()
    assert "| 0 | PRUNED |" in (tmp_path / "runs" / "prune" / "results.md").read_text()
    # a trial that reaches its last epoch is complete, whatever the pruner says of that epoch
    with flat_model_registered():
        result = run_search(config, space, ["optim.epochs=1"], n_trials=1, study_name="last",
                            pruner=optuna.pruners.ThresholdPruner(lower=101.0))
    assert result["trials"] == {"COMPLETE": 1}


def test_two_workers_share_one_journal_study(search_files: tuple[Path, Path], tmp_path: Path) -> None:
    config, space = search_files
    journal = tmp_path / "shared" / "journal.log"
    args = [str(config), str(space), "--n-trials", "4", "--study-name", "duo", "--storage", f"journal:{journal}"]
    workers = [_worker(*args), _worker(*args, "--no-report")]
    for proc in workers:
        _finish(proc)
    study, _ = load_study(tmp_path / "runs" / "duo")
    trials = [t for t in study.get_trials() if not t.user_attrs.get("surplus")]
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4 and len(trials) == 4  # none lost, none repeated, no extra run
    assert len({t.number for t in finished}) == 4
    assert len({json.dumps(t.params, sort_keys=True) for t in finished}) == 4
    study_dir = tmp_path / "runs" / "duo"
    assert sorted(p.name for p in study_dir.glob("trial*")) == sorted(f"trial{t.number}" for t in finished)
    for trial in finished:
        marker = json.loads((study_dir / f"trial{trial.number}" / "seed0" / "trial.json").read_text())
        assert marker["state"] == trial.state.name and marker["params"] == trial.params
    print(f"two workers: trials per worker {sorted(t.user_attrs['worker'] for t in finished)}")
    rows = (study_dir / "results.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,value,data.batch_size,optim.lr") and len(rows) == 5
    assert (study_dir / "history.png").stat().st_size > 0


@pytest.mark.parametrize("at", ["write", "rename"])
def test_a_worker_killed_in_a_checkpoint_write_resumes_its_trial(at: str, search_files: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    """SIGKILL half-way through the second last.pt of trial 0 (the first stays intact, a .tmp is left), or right
    after its rename: the next worker fails the trial as stale and continues its run from the last good epoch."""
    config, space = search_files
    args = [str(config), str(space), "optim.epochs=3", "--n-trials", "1", "--study-name", f"cut_{at}",
            "--heartbeat", "1", "--grace-period", "2", "--pruner", "none", "--no-report", "--sampler-seed", "0"]
    first = _worker(*args, kill={"at": at, "file": "last.pt", "count": 2})
    first.communicate(timeout=240)
    assert first.returncode == -signal.SIGKILL
    trial0 = tmp_path / "runs" / f"cut_{at}" / "trial0" / "seed0"
    assert torch.load(trial0 / "checkpoints" / "last.pt", weights_only=True)["epoch"] == (1 if at == "write" else 2)
    _finish(_worker(*args))
    trials = {t.number: t for t in load_study(tmp_path / "runs" / f"cut_{at}")[0].get_trials()}
    retry = next(t for t in trials.values() if t.user_attrs.get("retry_of") == 0)
    assert trials[0].state.name == "FAIL" and retry.state.name == "COMPLETE" and retry.params == trials[0].params
    resumed_dir = tmp_path / "runs" / f"cut_{at}" / f"trial{retry.number}" / "seed0"
    def run_numbers(path: Path) -> list[dict]:  # without the machine's own numbers (time, speed, memory)
        return [{k: v for k, v in m.items() if not any(w in k for w in ("time", "per_s", "memory"))}
                for m in read_metrics(path / "metrics.jsonl")]

    resumed, killed = run_numbers(resumed_dir), run_numbers(trial0)
    assert [m["epoch"] for m in resumed] == [1, 2, 3] and resumed[: len(killed)] == killed
    assert not list(resumed_dir.glob("**/.*.tmp"))


def test_killed_search_resumes_and_completes(search_files: tuple[Path, Path], tmp_path: Path) -> None:
    config, space = search_files
    args = [str(config), str(space), "optim.epochs=3", "--n-trials", "2", "--study-name", "killed",
            "--heartbeat", "1", "--grace-period", "2", "--pruner", "none", "--no-report"]
    first = _worker(*args)
    last_pt = tmp_path / "runs" / "killed" / "trial0" / "seed0" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last_pt.exists():  # epoch 1 of trial 0 is done: kill the worker in the middle of epoch 2
        assert first.poll() is None and time.monotonic() < deadline, "the first worker ended too early"
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    study, _ = load_study(tmp_path / "runs" / "killed")  # the default SQLite file in the study folder
    assert [t.state.name for t in study.get_trials()] == ["RUNNING"]  # left behind by the dead worker

    _finish(_worker(*args))  # the same command again: trial 0 is failed as stale, re-queued and resumed
    trials = {t.number: t for t in load_study(tmp_path / "runs" / "killed")[0].get_trials()}
    assert trials[0].state.name == "FAIL"
    retry = next(t for t in trials.values() if t.user_attrs.get("retry_of") == 0)
    assert retry.state.name in ("COMPLETE", "PRUNED") and retry.params == trials[0].params
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials.values()) == 2
    study_dir = tmp_path / "runs" / "killed"
    assert json.loads((study_dir / "trial0" / "seed0" / "trial.json").read_text())["state"] == "FAIL"
    assert retry.state.name == "COMPLETE"  # continued from the killed attempt's last.pt (epoch 1), not from scratch
    resumed = read_metrics(study_dir / f"trial{retry.number}" / "seed0" / "metrics.jsonl")
    killed = read_metrics(study_dir / "trial0" / "seed0" / "metrics.jsonl")
    assert [m["epoch"] for m in resumed] == [1, 2, 3] and resumed[0] == killed[0]
    assert retry.user_attrs["resumed_from"].endswith("trial0/seed0")


def test_journal_storage_fails_and_requeues_a_silent_trial(tmp_path: Path) -> None:
    handle = open_storage(f"journal:{tmp_path / 'j.log'}", tmp_path, heartbeat=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=handle.storage, direction="maximize")
    trial = study.ask()
    trial.suggest_float("optim.lr", 0.01, 0.1)
    study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - 60)  # noqa: SLF001
    assert fail_stale_trials(study, handle) == [0]
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "WAITING"]
    assert study.get_trials()[1].params == study.get_trials()[0].params
    assert fail_stale_trials(study, handle) == []  # a second worker finds nothing left to fail


def test_resumed_worker_with_the_same_sampler_seed_samples_new_points(search_files: tuple[Path, Path]) -> None:
    config, space = search_files
    kwargs = {"study_name": "reseed", "sampler": "random", "pruner": "none", "seed": 0, "report": False}
    with flat_model_registered():
        run_search(config, space, n_trials=2, **kwargs)
        run_search(config, space, n_trials=4, **kwargs)  # the same command after a stop, asked for more trials
    study, _ = load_study(Path(read_yaml(config)["output_dir"]) / "reseed")
    points = [tuple(sorted(t.params.items())) for t in study.get_trials()]
    assert len(points) == 4 and points[2] != points[0] and points[3] != points[1]


def test_rl_distillation_runs_can_be_searched(tmp_path: Path) -> None:
    """--kind rl-distill: each trial is an `rl distill` run folder, valued by its config's search.objective."""
    config = yaml.safe_load((REPO / "configs" / "rl" / "minatar_breakout_pd_scripted.yaml").read_text())
    config.update(name="pd", output_dir=str(tmp_path / "runs"))
    config["env"]["max_episode_steps"] = 200
    config["collect"].update(states_per_epoch=200, buffer_size=400)
    config["optim"].update(epochs=2, max_updates_per_epoch=4)
    config["eval"].update(episodes_per_epoch=2, final_episodes=2, teacher_episodes=0)
    config["runtime"].update(progress=False, plot=False, tensorboard=False)
    config_path, space_path = tmp_path / "pd.yaml", tmp_path / "space.yaml"
    config_path.write_text(yaml.safe_dump(config))
    space_path.write_text(yaml.safe_dump({"params": {"optim.lr": {"type": "log_float", "low": 1e-4, "high": 1e-2}}}))
    result = run_search(config_path, space_path, n_trials=2, study_name="rl", pruner="none", seed=0, report=False,
                        kind="rl-distill")
    assert result["trials"] == {"COMPLETE": 2}
    study, _ = load_study(tmp_path / "runs" / "rl")
    for trial in study.get_trials():
        history = read_metrics(Path(trial.user_attrs["run_dir"]) / "metrics.jsonl")
        assert trial.value == max(m["eval_score_mean"] for m in history)
    assert study.user_attrs["objective"] == "eval_score_mean"
    with pytest.raises(ConfigError, match="search.objective: 'val_top1' is not a numeric key"):
        run_search(config_path, space_path, ["search.objective=val_top1"], n_trials=1, study_name="wrong",
                   pruner="none", seed=0, report=False, kind="rl-distill")
