"""DIST: the relation losses against a hand computation, their limits, gradients only into the student, and a CLI
run with and without DA."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from socratic.cli import main
from socratic.config import config_from_dict
from socratic.distillers import create_distiller
from socratic.distillers.dist import DIST, dist_loss, pearson_rows
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    den = math.sqrt(sum((x - ma) ** 2 for x in a)) * math.sqrt(sum((y - mb) ** 2 for y in b))
    return num / (den + 1e-8)


def _softmax(row: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_dist_matches_a_hand_computation() -> None:
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [0.3, 0.1, 0.2]]
    teacher = [[2.0, 0.0, 1.0], [1.0, 2.0, 1.0], [0.0, 0.5, 0.4]]
    t, beta, gamma = 2.0, 1.0, 0.5
    y_s = [_softmax(r, t) for r in student]
    y_t = [_softmax(r, t) for r in teacher]
    inter = 1 - sum(_pearson(a, b) for a, b in zip(y_s, y_t)) / 3
    cols = lambda m, c: [row[c] for row in m]  # noqa: E731
    intra = 1 - sum(_pearson(cols(y_s, c), cols(y_t, c)) for c in range(3)) / 3
    got = dist_loss(torch.tensor(student), torch.tensor(teacher), t, beta, gamma)
    assert got.item() == pytest.approx(t * t * (beta * inter + gamma * intra), rel=1e-5)
    same = torch.tensor(teacher)
    assert dist_loss(same, same, t).item() == pytest.approx(0.0, abs=1e-4)  # fp32 rounding times tau^2 = 4
    assert pearson_rows(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])).item() == pytest.approx(-1)


def test_gradients_reach_only_the_student() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet14", num_classes=10)
    distiller = create_distiller("dist", student, teacher).train()
    assert isinstance(distiller, DIST) and distiller.kd_weight == 2.0 and distiller.temperature == 4.0
    _, losses = distiller.forward_train(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert set(losses) == {"ce", "dist"} and losses["dist"].item() > 0
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters()) and student.fc.weight.grad is not None


def test_dist_runs_from_the_command_line_with_and_without_da(run_config: dict, tmp_path: Path) -> None:
    torch.manual_seed(5)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, teacher)
    config = {**run_config, "name": "dist", "teachers": [{"name": "resnet8", "checkpoint": str(teacher)}],
              "method": {"name": "dist"}, "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
              "optim": {**run_config["optim"], "epochs": 1},
              "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}
    path = tmp_path / "dist.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["distill", str(path)]) == 0
    assert main(["distill", str(path), "name=dist_da", "da.enabled=true", "da.prob=1.0"]) == 0
    (plain,) = read_metrics(run_dir_for(config_from_dict(config)) / "metrics.jsonl")
    (with_da,) = read_metrics(run_dir_for(config_from_dict({**config, "name": "dist_da"})) / "metrics.jsonl")
    assert plain["train_dist"] > 0 and with_da["da_perturbed"] == 1.0 and with_da["train_dist"] != plain["train_dist"]
