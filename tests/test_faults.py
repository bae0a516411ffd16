"""Faults, concurrency and bad places to write (issue 18): each test reproduces one fault and checks the guarantee
listed in docs/reliability.md.

Kills are real SIGKILLs of a subprocess (tests/fault_worker.py) at three points -- mid-epoch, half-way through a
checkpoint write, right after a checkpoint's rename -- or an exception from a step callback in-process; after
`--resume` the weights, optimiser state and metrics (except wall time, speed and memory) must be bit-identical
to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from socratic.cli import main
from socratic.config import ConfigError, config_from_dict
from socratic.engine.logger import read_metrics
from socratic.engine.run import (DiskFullError, RunFolder, RunLockedError, config_changes, run_dir_for)
from socratic.experiment import run_experiment

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("fault_worker.py")
MEASURED = ("time", "per_s", "memory")  # the machine's numbers, not the run's


class Killed(Exception):
    pass


def _kill_at(epoch: int, step: int):
    def callback(e: int, s: int) -> None:
        if (e, s) == (epoch, step):
            raise Killed

    return callback


def _write(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _run_worker(spec: dict, tmp_path: Path, *, wait: bool = True) -> subprocess.Popen:
    spec_path = tmp_path / f"spec_{spec['config']['name']}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(spec_path)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -9, f"expected a SIGKILL, got exit {proc.returncode}: {err[-2000:]}"
    return proc


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if not any(x in k for x in MEASURED)}
            for m in read_metrics(run_dir / "metrics.jsonl")]


def _same_tensors(a: Any, b: Any) -> bool:
    """Equal nested state (dicts, lists, tensors, numbers), tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b))
    return a == b


def _assert_same_run(full: Path, resumed: Path, keys: tuple[str, ...] = ("model", "optimizer")) -> None:
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    for key in (*keys, "epoch", "rng"):
        assert _same_tensors(a[key], b[key]), key
    assert _metrics(full) == _metrics(resumed)
    best_a = torch.load(full / "checkpoints" / "best.pt", weights_only=True)["model"]
    best_b = torch.load(resumed / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert _same_tensors(best_a, best_b)
    assert not list(resumed.glob("**/.*.tmp"))


# ------------------------------------------------------------------------------------------ classification
@pytest.fixture(scope="module")
def fault_base(tiny_fashion: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-epoch run of 4 steps per epoch on 100 tiny images, and its uninterrupted result (`full`)."""
    tmp = tmp_path_factory.mktemp("faults")
    base = {
        "name": "full", "output_dir": str(tmp / "runs"),
        "data": {"name": "fashion_mnist", "root": str(tiny_fashion), "batch_size": 25, "eval_batch_size": 100,
                 "train_subset": 100, "cache_dir": str(tmp / "cache")},
        "student": {"name": "resnet8"}, "method": {"name": "ce"},
        "optim": {"epochs": 2, "lr": 0.05, "schedule": "cosine"},
        "runtime": {"device": "cpu", "precision": "fp32", "progress": False, "deterministic": True,
                    "tensorboard": False, "num_threads": 1},
    }
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_experiment(config_from_dict(base))
    finally:
        torch.set_num_threads(before)
    return base


def _full_dir(base: dict) -> Path:
    return run_dir_for(base["output_dir"], "full", 0)


@pytest.mark.parametrize("kill", [
    {"at": "step", "epoch": 2, "step": 1},  # mid-epoch
    {"at": "write", "file": "last.pt", "count": 2},  # half-way through epoch 2's last.pt: a .tmp is left over
    {"at": "rename", "file": "last.pt", "count": 1},  # right after epoch 1's last.pt is in place
], ids=["mid_epoch", "during_write", "after_rename"])
def test_sigkill_then_resume_gives_identical_weights(fault_base: dict, kill: dict, tmp_path: Path) -> None:
    config = {**fault_base, "name": f"killed_{kill['at']}"}
    _run_worker({"kind": "train", "config": config, "kill": kill}, tmp_path)
    run_dir = run_dir_for(config["output_dir"], config["name"], 0)
    if kill["at"] == "write":
        assert list((run_dir / "checkpoints").glob(".last.pt.*.tmp")), "the kill should leave an orphan .tmp"
        assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert main(["train", str(_write(config, tmp_path / "c.yaml")), "--resume"]) == 0
    _assert_same_run(_full_dir(fault_base), run_dir, keys=("model", "optimizer", "scaler"))


def test_a_second_writer_is_refused_naming_the_pid(fault_base: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    config = {**fault_base, "name": "locked"}
    path = _write(config, tmp_path / "c.yaml")
    ready = tmp_path / "ready"
    holder = _run_worker({"kind": "train", "config": config,
                          "kill": {"at": "hold", "epoch": 1, "step": 0, "ready": str(ready)}}, tmp_path, wait=False)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None, holder.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.2)
        capsys.readouterr()
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert main(["train", str(path), *extra]) == 2, extra
            err = capsys.readouterr().err
            assert f"in use by process {holder.pid}" in err and "one writer" in err, err
        run_dir = run_dir_for(config["output_dir"], "locked", 0)
        assert (run_dir / "config.yaml").exists()  # --overwrite did not delete the folder under the holder
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    # the holder is gone: its lock is stale and the next writer takes it over
    with RunFolder(run_dir_for(config["output_dir"], "locked", 0), {}, overwrite=True) as folder:
        assert (folder.path / "config.yaml").exists()


def test_the_lock_is_exclusive_within_a_process_too_and_released_on_close(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "x" / "seed0"
    first = RunFolder(path, {"a": 1}).open()
    with pytest.raises(RunLockedError, match=f"in use by process {os.getpid()}"):
        RunFolder(path, {"a": 1}, overwrite=True).open()
    assert (path / "config.yaml").exists()
    first.close()
    assert not list(path.parent.glob(".*.lock"))  # released and removed
    with RunFolder(path, {"a": 1}, overwrite=True):
        pass


def test_orphaned_tmp_files_are_removed_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "x" / "seed0"
    with RunFolder(path, {"a": 1}) as folder:
        folder.save_checkpoint({"epoch": 1}, "last")
    orphans = [path / "checkpoints" / ".last.pt.k3j2.tmp", path / ".summary.json.a1.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"")
    with RunFolder(path, {"a": 1}, resume=True):
        assert not any(p.exists() for p in orphans)
    assert (path / "checkpoints" / "last.pt").exists()


def test_a_metrics_line_cut_short_is_dropped_on_resume(tmp_path: Path) -> None:
    from socratic.engine.logger import RunLogger

    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "loss": 0.4}\n{"epoch": 3, "lo')
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.truncate_after(2)
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.4}]


def test_numerics_changes_on_resume_are_refused_or_recorded(fault_base: dict, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    config = {**fault_base, "name": "changed"}
    with pytest.raises(Killed):
        run_experiment(config_from_dict(config), callbacks=[_kill_at(2, 0)])
    run_dir = run_dir_for(config["output_dir"], "changed", 0)
    path = _write(config, tmp_path / "c.yaml")
    capsys.readouterr()
    assert main(["train", str(path), "--resume", "runtime.channels_last=true"]) == 2
    assert "runtime.channels_last: False -> True" in capsys.readouterr().err
    # the run folder is checked before any data is loaded (the data root below does not exist)
    assert main(["train", str(path), f"data.root={tmp_path / 'no_data_here'}"]) == 2
    err = capsys.readouterr().err
    assert "exists: pass --resume" in err and "no_data_here" not in err
    assert main(["train", str(path), "--resume", "runtime.precision=bf16", "runtime.deterministic=false"]) == 2
    err = capsys.readouterr().err
    assert "runtime.deterministic: True -> False" in err and "runtime.precision: 'fp32' -> 'bf16'" in err
    # the device type and the precision (`auto` resolves per machine) the run used are in last.pt: a resume that
    # resolves them differently is a numerics change too
    last = run_dir / "checkpoints" / "last.pt"
    saved = last.read_bytes()
    state = torch.load(last, weights_only=True)
    assert state["resolved"] == {"runtime.device (device type)": "cpu", "runtime.precision (resolved)": "fp32",
                                 "teacher outputs (resolved)": "exact"}
    torch.save({**state, "resolved": {"runtime.device (device type)": "cuda", "runtime.precision (resolved)": "bf16"}},
               last)
    assert main(["train", str(path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "runtime.device (device type): 'cuda' -> 'cpu'" in err and "runtime.precision (resolved): 'bf16' -> 'fp32'" in err
    last.write_bytes(saved)

    # a copy of the folder resumes at its new place; keys that do not change numbers may change
    moved = {**config, "output_dir": str(tmp_path / "elsewhere")}
    shutil.copytree(run_dir, run_dir_for(moved["output_dir"], "changed", 0))
    assert main(["train", str(_write(moved, tmp_path / "moved.yaml")), "--resume", "runtime.progress=true",
                 "runtime.tensorboard=true", "runtime.eval_every=2"]) == 0
    full = torch.load(_full_dir(fault_base) / "checkpoints" / "last.pt", weights_only=True)
    moved_last = torch.load(run_dir_for(moved["output_dir"], "changed", 0) / "checkpoints" / "last.pt",
                            weights_only=True)
    assert _same_tensors(full["model"], moved_last["model"])

    # --accept-config-changes continues and records the change in the run folder
    assert main(["train", str(path), "--resume", "--accept-config-changes", "runtime.channels_last=true"]) == 0
    record = json.loads((run_dir / "config_changes.jsonl").read_text().splitlines()[-1])
    assert record["resumed_after_epoch"] == 1
    assert record["changes"] == [{"key": "runtime.channels_last", "old": False, "new": True}]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["runtime"]["channels_last"] is True


def test_config_changes_names_dotted_keys_and_ignores_non_numeric_ones() -> None:
    saved = {"output_dir": "a", "optim": {"lr": 0.1}, "runtime": {"progress": True, "precision": "fp32"}}
    current = {"output_dir": "b", "optim": {"lr": 0.2}, "runtime": {"progress": False, "precision": "fp32"},
               "da": {"prob": 0.5}}
    assert config_changes(saved, current, defaults={"da": {"prob": 0.5}}) == [("optim.lr", 0.1, 0.2)]
    assert config_changes(saved, current) == [("da.prob", "(absent)", 0.5), ("optim.lr", 0.1, 0.2)]


def test_nan_in_the_first_epoch_leaves_no_run_folder(fault_base: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    config = {**fault_base, "name": "nan", "output_dir": str(tmp_path / "runs"),
              "optim": {**fault_base["optim"], "lr": 1e30}}
    assert main(["train", str(_write(config, tmp_path / "c.yaml"))]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 1" in err and "There is no last good checkpoint" in err
    assert not (tmp_path / "runs" / "nan").exists()


# ----------------------------------------------------------------------------------------- bad places to write
def test_output_dir_under_a_file_is_refused_before_loading_data(fault_base: dict, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    config = {**fault_base, "output_dir": str(blocker / "runs"),
              "data": {**fault_base["data"], "root": str(tmp_path / "no_data_here")}}
    capsys.readouterr()
    assert main(["train", str(_write(config, tmp_path / "c.yaml"))]) == 2
    err = capsys.readouterr().err
    assert f"output_dir {blocker / 'runs'}" in err and "is a file" in err
    assert "no_data_here" not in err  # checked before the data


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `path` (needs root); the test is skipped where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; this test checks a read-only / full file system")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_output_dir_is_refused_before_loading_data(fault_base: dict, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    with _tmpfs(tmp_path / "ro", "ro,size=1m") as mount:
        config = {**fault_base, "output_dir": str(mount / "runs"),
                  "data": {**fault_base["data"], "root": str(tmp_path / "no_data_here")}}
        capsys.readouterr()
        assert main(["train", str(_write(config, tmp_path / "c.yaml"))]) == 2
        err = capsys.readouterr().err
        assert f"output_dir {mount / 'runs'} is not writable" in err and "no_data_here" not in err
        assert not any(mount.iterdir())


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(fault_base: dict, tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "small", "size=8m") as mount:
        config = {**fault_base, "name": "full_disk", "output_dir": str(mount / "runs")}
        filler = mount / "filler"

        def fill_the_disk(epoch: int, metrics: dict) -> None:
            if epoch == 1:
                with filler.open("wb") as file, contextlib.suppress(OSError):
                    while True:
                        file.write(b"\0" * 65536)
                        file.flush()

        with pytest.raises(DiskFullError) as err:
            run_experiment(config_from_dict(config), epoch_callbacks=[fill_the_disk])
        assert isinstance(err.value, ConfigError)  # the CLI exits 2
        run_dir = run_dir_for(config["output_dir"], "full_disk", 0)
        message = str(err.value)
        assert "no space left" in message and f"{run_dir / 'checkpoints' / 'last.pt'} (epoch 1) is intact" in message
        assert "--resume" in message
        assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
        assert not list(run_dir.glob("**/.*.tmp"))
        filler.unlink()
        assert main(["train", str(_write(config, tmp_path / "c.yaml")), "--resume"]) == 0
        _assert_same_run(_full_dir(fault_base), run_dir)


# ------------------------------------------------------------------------------------------ RL distillation
def _rl_config(tmp_path: Path, name: str) -> dict:
    config = yaml.safe_load((ROOT / "configs" / "rl" / "minatar_breakout_pd_scripted.yaml").read_text())
    config["name"] = name
    config["output_dir"] = str(tmp_path / "runs")
    config["env"]["max_episode_steps"] = 300
    # 5 epochs of 500 states into a FIFO of 1200: a resume after epoch 4 replays epochs 2-4 into a wrapped ring
    config["collect"].update(states_per_epoch=500, buffer_size=1200)
    config["optim"].update(epochs=5, max_updates_per_epoch=12)
    config["eval"].update(episodes_per_epoch=2, final_episodes=2, teacher_episodes=2)
    config["runtime"].update(progress=False, plot=False)
    return config


RL_STATE = ("model", "optimizer", "updates", "buffer")


def test_rl_distill_killed_mid_epoch_resumes_bit_identical(tmp_path: Path) -> None:
    from socratic.rl.config import DistillConfig, rl_config_from_dict
    from socratic.rl.distill import run_distillation

    full = _rl_config(tmp_path, "full")
    assert main(["rl", "distill", str(_write(full, tmp_path / "full.yaml"))]) == 0
    full_dir = run_dir_for(full["output_dir"], "full", 0)

    cut = _rl_config(tmp_path, "cut")
    with pytest.raises(Killed):
        run_distillation(rl_config_from_dict(DistillConfig, cut), step_callbacks=[_kill_at(5, 3)])
    assert [m["epoch"] for m in read_metrics(run_dir_for(cut["output_dir"], "cut", 0) / "metrics.jsonl")] == [1, 2, 3, 4]
    assert main(["rl", "distill", str(_write(cut, tmp_path / "cut.yaml")), "--resume"]) == 0
    cut_dir = run_dir_for(cut["output_dir"], "cut", 0)
    _assert_same_run(full_dir, cut_dir, keys=RL_STATE)
    summaries = [{k: v for k, v in json.loads((d / "summary.json").read_text()).items() if "time" not in k and k != "name"}
                 for d in (full_dir, cut_dir)]
    assert summaries[0] == summaries[1]

    # a real SIGKILL of a subprocess: in the middle of epoch 4, half-way through the 3rd last.pt write, and right
    # after the 3rd last.pt was renamed into place
    for name, kill in (("sigkill_step", {"at": "step", "epoch": 4, "step": 5}),
                       ("sigkill_write", {"at": "write", "file": "last.pt", "count": 3}),
                       ("sigkill_rename", {"at": "rename", "file": "last.pt", "count": 3})):
        killed = _rl_config(tmp_path, name)
        _run_worker({"kind": "rl", "config": killed, "kill": kill}, tmp_path)
        assert main(["rl", "distill", str(_write(killed, tmp_path / f"{name}.yaml")), "--resume"]) == 0
        _assert_same_run(full_dir, run_dir_for(killed["output_dir"], name, 0), keys=RL_STATE)


def test_rl_resume_refuses_a_changed_config_and_an_unwritable_output(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    config = _rl_config(tmp_path, "rl")
    config["optim"]["epochs"] = 1
    path = _write(config, tmp_path / "rl.yaml")
    assert main(["rl", "distill", str(path)]) == 0
    capsys.readouterr()
    assert main(["rl", "distill", str(path)]) == 2
    assert "exists: pass --resume" in capsys.readouterr().err
    assert main(["rl", "distill", str(path), "--resume", "loss.temperature=0.1"]) == 2
    assert "loss.temperature: 0.01 -> 0.1" in capsys.readouterr().err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["rl", "distill", str(path), f"output_dir={blocker / 'runs'}"]) == 2
    assert "is a file" in capsys.readouterr().err
