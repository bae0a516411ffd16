"""DKD: the two terms against values computed by hand, the warm-up from the training context, gradients only into
the student, a CLI run with and without DA, and a resume in the middle of the warm-up that matches the uninterrupted
run exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from socratic.cli import main
from socratic.config import config_from_dict
from socratic.context import TrainContext
from socratic.distillers import create_distiller
from socratic.distillers.dkd import DKD, dkd_terms, warmup_factor
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _softmax(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def test_terms_match_a_hand_computation() -> None:
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    target = [0, 2]
    t = 2.0
    tckd = nckd = 0.0
    for s_row, t_row, y in zip(student, teacher, target):
        p_s, p_t = _softmax([v / t for v in s_row]), _softmax([v / t for v in t_row])
        tckd += _kl([p_t[y], 1 - p_t[y]], [p_s[y], 1 - p_s[y]])
        rest = [c for c in range(3) if c != y]
        q_s = _softmax([s_row[c] / t for c in rest])
        q_t = _softmax([t_row[c] / t for c in rest])
        nckd += _kl(q_t, q_s)
    got_tckd, got_nckd = dkd_terms(torch.tensor(student), torch.tensor(teacher), torch.tensor(target), t)
    assert got_tckd.item() == pytest.approx(t * t * tckd / 2, rel=1e-5)
    assert got_nckd.item() == pytest.approx(t * t * nckd / 2, rel=1e-4)
    same = torch.tensor(teacher)
    zero_t, zero_n = dkd_terms(same, same, torch.tensor(target), t)
    assert zero_t.item() == pytest.approx(0, abs=1e-6) and zero_n.item() == pytest.approx(0, abs=1e-6)


def test_the_warm_up_follows_the_epoch_of_the_context() -> None:
    assert [warmup_factor(TrainContext(epoch=e), 20) for e in (1, 10, 20, 30)] == [0.05, 0.5, 1.0, 1.0]
    assert warmup_factor(TrainContext(epoch=1), 0) == 1.0
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet14", num_classes=10)
    distiller = create_distiller("dkd", student, teacher, warmup_epochs=4).train()
    assert isinstance(distiller, DKD) and distiller.ce_weight == 1.0 and distiller.beta == 8.0
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)
    _, early = distiller.forward_train(x, y, TrainContext(epoch=1, epochs=10))
    torch.manual_seed(1)
    _, late = distiller.forward_train(x, y, TrainContext(epoch=8, epochs=10))
    assert early["nckd"].item() == pytest.approx(late["nckd"].item() / 4, rel=1e-4)  # factor 1/4 against 1
    assert early["ce"].item() == pytest.approx(late["ce"].item(), rel=1e-5)  # the warm-up never scales CE
    sum(late.values()).backward()
    assert all(p.grad is None for p in teacher.parameters()) and student.fc.weight.grad is not None
    with pytest.raises(ValueError, match="needs the training context"):
        distiller.forward_train(x, y)


@pytest.fixture()
def dkd_config(run_config: dict, tmp_path: Path) -> dict:
    torch.manual_seed(5)
    path = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, path)
    return {**run_config, "name": "dkd", "teachers": [{"name": "resnet8", "checkpoint": str(path)}],
            "method": {"name": "dkd", "warmup_epochs": 3},
            "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
            "optim": {**run_config["optim"], "epochs": 2},
            "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}


def test_dkd_runs_from_the_command_line_with_and_without_da(dkd_config: dict, tmp_path: Path) -> None:
    path = tmp_path / "dkd.yaml"
    path.write_text(yaml.safe_dump(dkd_config))
    assert main(["distill", str(path)]) == 0
    assert main(["distill", str(path), "name=dkd_da", "da.enabled=true", "da.prob=1.0"]) == 0
    plain = read_metrics(run_dir_for(config_from_dict(dkd_config)) / "metrics.jsonl")
    with_da = read_metrics(run_dir_for(config_from_dict({**dkd_config, "name": "dkd_da"})) / "metrics.jsonl")
    assert plain[0]["train_nckd"] > 0 and plain[0]["train_tckd"] >= 0 and "da_perturbed" not in plain[0]
    assert with_da[0]["da_perturbed"] == 1.0 and with_da[0]["train_nckd"] != plain[0]["train_nckd"]


def test_a_resume_in_the_warm_up_reproduces_the_uninterrupted_run(dkd_config: dict, stopped_and_resumed) -> None:
    runs = stopped_and_resumed(dkd_config, epoch=2, step=1)  # warm-up factor 1/3 in epoch 1, 2/3 in epoch 2
    full, cut = (torch.load(r / "checkpoints" / "last.pt", weights_only=True)["model"] for r in runs)
    assert all(torch.equal(full[k], cut[k]) for k in full)
    losses = [[m["train_nckd"] for m in read_metrics(r / "metrics.jsonl")] for r in runs]
    assert losses[0] == losses[1]
