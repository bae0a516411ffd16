"""End to end through the command line: train, distill, evaluate, report, resume, and bad input."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from socratic.cli import main
from socratic.config import config_from_dict
from socratic.engine.logger import read_metrics
from socratic.experiment import run_experiment


def _write(config: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _run_dir(config: dict) -> Path:
    return Path(config["output_dir"]) / config["name"] / f"seed{config.get('seed', 0)}"


def test_train_distill_evaluate_report(run_config: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    teacher = {**run_config, "name": "teacher", "student": {"name": "resnet14"}, "optim": {**run_config["optim"], "epochs": 6, "lr": 0.1}}
    assert main(["train", str(_write(teacher, tmp_path / "teacher.yaml"))]) == 0
    teacher_dir = _run_dir(teacher)
    for item in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt", "tb"):
        assert (teacher_dir / item).exists(), item
    metrics = read_metrics(teacher_dir / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert {"train_ce", "train_loss", "val_top1", "val_top5", "best_top1", "lr"} <= set(metrics[0])
    summary = json.loads((teacher_dir / "summary.json").read_text())
    assert summary["best_top1"] > 30.0  # 10 classes: chance is 10%
    assert summary["epoch_time"] == pytest.approx(sum(m["train_time"] for m in metrics) / 6)
    assert summary["peak_memory_mb"] == max(m["peak_memory_mb"] for m in metrics) > 0

    checkpoint = str(teacher_dir / "checkpoints" / "best.pt")
    kd = {**run_config, "name": "kd", "teachers": [{"name": "resnet14", "checkpoint": checkpoint}],
          "method": {"name": "kd"}}
    kd_path = _write(kd, tmp_path / "kd.yaml")
    assert main(["distill", str(kd_path), "seed=1"]) == 0
    assert main(["distill", str(kd_path), "seed=2", "method.name=fitnet", "method.ce_weight=1.0"]) == 0
    assert read_metrics(tmp_path / "runs" / "kd" / "seed1" / "metrics.jsonl")[-1]["train_kd"] > 0
    assert "train_hint" in read_metrics(tmp_path / "runs" / "kd" / "seed2" / "metrics.jsonl")[-1]

    capsys.readouterr()
    assert main(["evaluate", checkpoint, "--root", run_config["data"]["root"]]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(summary["best_top1"], abs=1e-6) and result["samples"] == 200
    assert main(["evaluate", checkpoint]) == 0  # without --root: the training run's data root, kept in the checkpoint
    assert json.loads(capsys.readouterr().out)["samples"] == 200

    csv_path = tmp_path / "report.csv"
    assert main(["report", str(tmp_path / "runs"), "--csv", str(csv_path)]) == 0
    out = capsys.readouterr().out
    assert "| teacher | ce | - | resnet14 |" in out
    assert all(line.startswith("|") and line.endswith("|") for line in out.strip().splitlines())  # no wrapping
    # seed 1 (kd) and seed 2 (fitnet) differ in method: two groups of one seed each
    assert out.count("| kd |") == 2 and csv_path.read_text().startswith("name,method,student")


def test_resume_after_interruption_reaches_the_same_result(run_config: dict, tmp_path: Path) -> None:
    run_config["optim"]["epochs"] = 3
    full = run_experiment(config_from_dict({**run_config, "name": "full"}))

    class Killed(Exception):
        pass

    def kill(epoch: int, step: int) -> None:
        if epoch == 2 and step == 3:
            raise Killed

    interrupted = config_from_dict({**run_config, "name": "interrupted"})
    with pytest.raises(Killed):
        run_experiment(interrupted, callbacks=[kill])
    assert [m["epoch"] for m in read_metrics(_run_dir({**run_config, "name": "interrupted"}) / "metrics.jsonl")] == [1]
    resumed = run_experiment(config_from_dict({**run_config, "name": "interrupted"}), resume=True)
    assert resumed["last_top1"] == full["last_top1"] and resumed["best_top1"] == full["best_top1"]
    a = read_metrics(_run_dir({**run_config, "name": "full"}) / "metrics.jsonl")
    b = read_metrics(_run_dir({**run_config, "name": "interrupted"}) / "metrics.jsonl")
    assert [m["train_loss"] for m in a] == [m["train_loss"] for m in b]
    wa = torch.load(_run_dir({**run_config, "name": "full"}) / "checkpoints/last.pt", weights_only=True)["model"]
    wb = torch.load(_run_dir({**run_config, "name": "interrupted"}) / "checkpoints/last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_input_exits_2_without_a_run_folder(run_config: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write(run_config, tmp_path / "c.yaml")
    runs = Path(run_config["output_dir"])
    assert "unknown config key 'optim.lrate'" in _error(["train", str(path), "optim.lrate=1"], capsys)
    assert "optim.epochs: expected an integer, got 'many'" in _error(["train", str(path), "optim.epochs=many"], capsys)
    missing = _error(["train", str(path), f"data.root={tmp_path / 'nowhere'}"], capsys)
    assert str(tmp_path / "nowhere") in missing and "dataset-fashion-mnist" in missing
    assert "use 'socratic distill'" in _error(["train", str(path), "method.name=kd", "teachers.0.name=resnet8",
                                              "teachers.0.checkpoint=x.pt"], capsys)
    assert "student.name: unknown model 'resnet9'" in _error(["train", str(path), "student.name=resnet9"], capsys)
    assert "student.kwargs" in _error(["train", str(path), "student.kwargs={wings: 2}"], capsys)
    assert not runs.exists()


def test_teacher_checkpoint_that_does_not_fit(run_config: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_config["optim"]["epochs"] = 1
    run_experiment(config_from_dict({**run_config, "name": "t"}))
    checkpoint = _run_dir({**run_config, "name": "t"}) / "checkpoints" / "best.pt"
    path = _write({**run_config, "name": "kd", "method": {"name": "kd"},
                   "teachers": [{"name": "resnet14", "checkpoint": str(checkpoint)}]}, tmp_path / "kd.yaml")
    err = _error(["distill", str(path)], capsys)
    assert "teachers.0 (resnet14): checkpoint" in err and "does not fit the architecture" in err and "made for resnet8" in err
    state = torch.load(checkpoint, weights_only=True)
    state["meta"]["num_classes"] = 100
    torch.save(state, tmp_path / "hundred.pt")
    err = _error(["distill", str(path), "teachers.0.name=resnet8", f"teachers.0.checkpoint={tmp_path / 'hundred.pt'}"], capsys)
    assert "trained for 100 classes but the dataset has 10" in err
    assert not (Path(run_config["output_dir"]) / "kd").exists()


def test_nan_loss_stops_with_epoch_and_step(run_config: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _write({**run_config, "optim": {**run_config["optim"], "lr": 1.0e30, "epochs": 3}}, tmp_path / "c.yaml")
    assert main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 1, step" in err and "last good checkpoint" in err


def test_nan_in_a_later_epoch_keeps_the_last_good_checkpoint(run_config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from socratic.engine.trainer import NonFiniteLossError

    run_config["optim"]["epochs"] = 3
    config = config_from_dict(run_config)
    holder: dict = {}

    def poison(epoch: int, step: int) -> None:  # corrupt the weights after the first step of epoch 2
        if epoch == 2 and step == 0:
            with torch.no_grad():
                holder["model"].conv1.weight.fill_(float("nan"))

    import socratic.experiment as experiment

    original = experiment.build_distiller

    def capture(*args, **kwargs):
        distiller = original(*args, **kwargs)
        holder["model"] = distiller.student
        return distiller

    monkeypatch.setattr(experiment, "build_distiller", capture)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 2, step 1"):
        run_experiment(config, callbacks=[poison])
    last = torch.load(_run_dir(run_config) / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_existing_run_folder_needs_resume_or_overwrite(run_config: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_config["optim"]["epochs"] = 1
    path = _write(run_config, tmp_path / "c.yaml")
    assert main(["train", str(path)]) == 0
    assert "exists: pass --resume" in _error(["train", str(path)], capsys)
    assert "differs from the saved one in optim" in _error(["train", str(path), "--resume", "optim.lr=0.2"], capsys)
    assert main(["train", str(path), "--overwrite"]) == 0


def test_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("train", "distill", "evaluate", "report", "models", "bench", "data", "demo"):
        assert command in out


def test_models_and_bench_commands(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["models", "resnet8x4", "resnet32x4"]) == 0
    out = capsys.readouterr().out
    assert "1,233,540" in out and "7,433,860" in out
    assert main(["bench", "--teacher", "resnet14", "--student", "resnet8", "--batch-size", "8", "--steps", "1",
                 "--warmup", "0", "--num-classes", "10", "--json", str(tmp_path / "b.json")]) == 0
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["kd_step_img_per_s"] > 0 and result["peak_memory_mb"] > 0


def test_da_distill_then_robustness_and_visualize_da(run_config: dict, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    threads = torch.get_num_threads()
    small = {**run_config, "data": {**run_config["data"], "train_subset": 100},
             "optim": {**run_config["optim"], "epochs": 1},
             "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}
    try:
        assert main(["train", str(_write({**small, "name": "t"}, tmp_path / "t.yaml"))]) == 0
        teacher = str(_run_dir({**small, "name": "t"}) / "checkpoints" / "best.pt")
        da = {**small, "name": "da", "method": {"name": "kd"}, "teachers": [{"name": "resnet8", "checkpoint": teacher}],
              "da": {"enabled": True, "prob": 1.0}}
        assert main(["distill", str(_write(da, tmp_path / "da.yaml"))]) == 0
        assert read_metrics(_run_dir(da) / "metrics.jsonl")[-1]["da_perturbed"] == 1.0
        student = str(_run_dir(da) / "checkpoints" / "best.pt")
        capsys.readouterr()
        assert "kd+da" in (main(["report", str(tmp_path / "runs")]) == 0 and capsys.readouterr().out)

        root, out = run_config["data"]["root"], tmp_path / "robust"
        assert main(["robustness", "--teacher", teacher, "--students", student, teacher, "--steps", "2",
                     "--limit", "40", "--root", root, "--device", "cpu", "--out", str(out)]) == 0
        lines = (out / "robustness.csv").read_text().splitlines()
        assert lines[0] == "steps,model,role,perturbed_against,checkpoint,top1,disagreement,samples"
        assert len(lines) == 1 + 2 * 3 * 2  # 2 students x steps 0..2 x (student, teacher)
        assert (out / "robustness.png").read_bytes()[:4] == b"\x89PNG"
        rows = list(csv.DictReader(lines))
        assert {r["perturbed_against"] for r in rows} == {"resnet8 (da/seed0)", "resnet8 (t/seed0)"}
        # the teacher against itself never disagrees: the gradient is 0, nothing moves, accuracy is flat
        assert len({r["top1"] for r in rows if r["perturbed_against"] == "resnet8 (t/seed0)"}) == 1

        png = tmp_path / "vis" / "da.png"
        assert main(["visualize-da", "--teacher", teacher, "--student", student, "--root", root, "--count", "3",
                     "--steps", "2", "--device", "cpu", "--out", str(png)]) == 0
        assert png.read_bytes()[:4] == b"\x89PNG"

        assert "--steps must be >= 0" in _error(["robustness", "--teacher", teacher, "--students", student,
                                                 "--steps", "-1", "--root", root, "--out", str(out)], capsys)
        assert "--lr must be a number > 0" in _error(["visualize-da", "--teacher", teacher, "--student", student,
                                                      "--lr", "0", "--root", root, "--out", str(png)], capsys)
        assert "checkpoint not found" in _error(["visualize-da", "--teacher", str(tmp_path / "no.pt"), "--student",
                                                 student, "--root", root, "--out", str(png)], capsys)
    finally:
        torch.set_num_threads(threads)


def test_list_prints_every_registered_method_with_its_defaults(capsys: pytest.CaptureFixture) -> None:
    from socratic.cli import main

    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name in ("ce", "kd", "fitnet", "dkd", "aver", "mtkd_rl"):
        assert f"│ {name} " in out
    assert "beta=8.0" in out and "teachers=(1, 1)" in out
    assert main(["list", "augmentations"]) == 0 and "padding=4" in capsys.readouterr().out


def test_version_and_print_config(run_config: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml

    from socratic import __version__
    from socratic.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"socratic {__version__}"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(run_config))
    assert main(["train", str(path), "optim.lr=0.2", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 0.2 and printed["data"]["augment"] == {"name": "crop_flip", "padding": 2,
                                                                            "flip": True}
    assert not (tmp_path / "runs").exists()  # nothing ran
    rl = Path(__file__).resolve().parent.parent / "configs" / "rl" / "minatar_breakout_pd.yaml"
    assert main(["rl", "distill", str(rl), "--print-config", "da.enabled=true"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["da"] == {  # the RL presets of the shared da section
        "enabled": True, "steps": 1, "lr": 0.001, "prob": 0.3, "objective": "kl", "optimizer": "adam",
        "temperature": 1.0, "clamp": None, "target": "mean", "after_every": 10, "select": 1.0,
            "select_by": "largest", "clamp_to_obs_bounds": False}


def test_the_run_folder_is_printed_at_start_and_end(run_config: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    import yaml

    from socratic.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**run_config, "optim": {**run_config["optim"], "epochs": 1},
                                    "data": {**run_config["data"], "train_subset": 100}}))
    assert main(["train", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"run folder {tmp_path / 'runs' / 'tiny' / 'seed0'}" in err and "summary.json" in err
