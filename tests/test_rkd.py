"""RKD: both terms against a hand computation, gradients only into the student, a CLI run with and without DA (no
extras in the checkpoint), and config errors for models without an embedding and for bad option values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from socratic.cli import main
from socratic.config import config_from_dict
from socratic.distillers import create_distiller
from socratic.distillers.rkd import RKD, normalised_distances, rkd_angle_loss, rkd_distance_loss
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

S = [[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0], [0.0, 0.0]]
T = [[0.5, 0.0, 1.0], [1.0, 1.0, -1.0], [0.0, 2.0, 0.5], [2.0, 0.0, 0.0]]  # the widths differ


def _smooth_l1(a: float, b: float) -> float:
    diff = abs(a - b)
    return 0.5 * diff * diff if diff < 1 else diff - 0.5


def _distances(rows: list[list[float]]) -> list[list[float]]:
    d = [[math.dist(u, v) for v in rows] for u in rows]
    positive = [v for row in d for v in row if v > 0]
    mean = sum(positive) / len(positive)
    return [[v / mean for v in row] for row in d]


def _angles(rows: list[list[float]]) -> list[float]:
    def unit(i: int, j: int) -> list[float]:
        diff = [b - a for a, b in zip(rows[i], rows[j])]
        norm = math.sqrt(sum(v * v for v in diff))
        return [v / norm for v in diff] if norm > 0 else [0.0] * len(diff)

    n = range(len(rows))
    return [sum(a * b for a, b in zip(unit(i, j), unit(i, k))) for i in n for j in n for k in n]


def test_both_terms_match_a_hand_computation() -> None:
    d_s, d_t = _distances(S), _distances(T)
    distance = sum(_smooth_l1(a, b) for rs, rt in zip(d_s, d_t) for a, b in zip(rs, rt)) / 16  # mean over B^2
    angle = sum(_smooth_l1(a, b) for a, b in zip(_angles(S), _angles(T))) / 64  # mean over B^3
    s, t = torch.tensor(S), torch.tensor(T)
    assert rkd_distance_loss(s, t).item() == pytest.approx(distance, rel=1e-5)
    assert rkd_angle_loss(s, t).item() == pytest.approx(angle, rel=1e-5)
    big = 10 * s  # each side is normalised by its own mean distance; angles ignore scale
    assert rkd_distance_loss(s, big).item() == pytest.approx(0.0, abs=1e-6)
    assert rkd_angle_loss(s, big).item() == pytest.approx(0.0, abs=1e-6)
    assert normalised_distances(s).diagonal().tolist() == [0.0] * 4
    with torch.autocast("cpu", dtype=torch.bfloat16):  # distances and cosines stay fp32
        under_autocast = rkd_distance_loss(s, t), rkd_angle_loss(s, t)
    assert all(v.dtype == torch.float32 for v in under_autocast)
    assert [v.item() for v in under_autocast] == pytest.approx([distance, angle], rel=1e-5)
    one = torch.ones(1, 3)  # no positive distance: a finite zero, not the NaN of an empty mean
    assert rkd_distance_loss(one, one).item() == 0.0


def test_gradients_reach_only_the_student() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("vgg8_bn", num_classes=10)
    distiller = create_distiller("rkd", student, teacher).train()  # 64-d against 512-d embeddings
    assert isinstance(distiller, RKD) and (distiller.distance_weight, distiller.angle_weight) == (25.0, 50.0)
    assert distiller.extra_modules() == {}
    _, losses = distiller.forward_train(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert set(losses) == {"ce", "rkd_distance", "rkd_angle"}
    assert losses["rkd_distance"].item() > 0 and losses["rkd_angle"].item() > 0
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    grad = student.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    no_angle = create_distiller("rkd", student, teacher, angle_weight=0.0)
    assert no_angle.forward_train(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))[1]["rkd_angle"].item() == 0.0


def test_a_model_without_an_embedding_and_bad_values_are_config_errors() -> None:
    # no nn.Linear classifier, so no embedding (a plain MLP now has one: its classifier's input)
    plain = nn.Sequential(nn.Conv2d(3, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="method.name 'rkd' needs a teacher with an embedding.*Sequential"):
        create_distiller("rkd", create_model("resnet8", num_classes=10), plain)
    with pytest.raises(ValueError, match="method.angle_weight must be >= 0"):
        create_distiller("rkd", create_model("resnet8", num_classes=10), create_model("resnet8", num_classes=10),
                         angle_weight=-1.0)


@pytest.fixture()
def rkd_config(run_config: dict, tmp_path: Path) -> dict:
    torch.manual_seed(5)
    path = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, path)
    return {**run_config, "name": "rkd", "teachers": [{"name": "resnet8", "checkpoint": str(path)}],
            "method": {"name": "rkd"},
            "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
            "optim": {**run_config["optim"], "epochs": 1},
            "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}


def test_rkd_runs_from_the_command_line_with_and_without_da(rkd_config: dict, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "rkd.yaml"
    path.write_text(yaml.safe_dump(rkd_config))
    assert main(["distill", str(path)]) == 0
    assert main(["distill", str(path), "name=rkd_da", "da.enabled=true", "da.prob=1.0"]) == 0
    plain_dir = run_dir_for(config_from_dict(rkd_config))
    plain = read_metrics(plain_dir / "metrics.jsonl")
    with_da = read_metrics(run_dir_for(config_from_dict({**rkd_config, "name": "rkd_da"})) / "metrics.jsonl")
    assert plain[0]["train_rkd_distance"] > 0 and plain[0]["train_rkd_angle"] > 0 and "da_perturbed" not in plain[0]
    assert with_da[0]["da_perturbed"] == 1.0 and with_da[0]["train_rkd_angle"] != plain[0]["train_rkd_angle"]
    assert torch.load(plain_dir / "checkpoints" / "last.pt", weights_only=True)["extra"] == {}  # no extras
    capsys.readouterr()
    assert main(["distill", str(path), "name=rkd_bad", "method.distance_weight=-2"]) == 2
    assert "method.distance_weight must be >= 0" in capsys.readouterr().err
