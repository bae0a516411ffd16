"""SP: the loss against a hand computation, gradients only into the student, a CLI run with and without DA (no
extras in the checkpoint), and a config error for a stage that does not fit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from socratic.cli import main
from socratic.config import config_from_dict
from socratic.distillers import create_distiller
from socratic.distillers.sp import SP, sp_loss
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gram_rows_normalised(rows: list[list[float]]) -> list[list[float]]:
    gram = [[sum(a * b for a, b in zip(u, v)) for v in rows] for u in rows]
    return [[g / math.sqrt(sum(v * v for v in row)) for g in row] for row in gram]


def test_the_loss_matches_a_hand_computation() -> None:
    s = [[1.0, 0.0, 2.0, 1.0], [0.0, 1.0, 1.0, 0.0], [3.0, 1.0, 0.0, 0.5]]  # B=3, flattened 2x1x2 maps
    t = [[0.5, 0.5, 0.0, 1.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.0, 1.0, 1.0], [0.0, 2.0, 1.0, 1.0, 0.0, 0.0]]  # 3x1x2
    g_s, g_t = _gram_rows_normalised(s), _gram_rows_normalised(t)
    expected = sum((g_t[i][j] - g_s[i][j]) ** 2 for i in range(3) for j in range(3)) / 9
    f_s, f_t = torch.tensor(s).reshape(3, 2, 1, 2), torch.tensor(t).reshape(3, 3, 1, 2)
    assert sp_loss(f_s, f_t).item() == pytest.approx(expected, rel=1e-5)
    assert sp_loss(f_s, 2 * f_s).item() == pytest.approx(0.0, abs=1e-8)  # rows are normalised
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the Gram matrices stay fp32
        under_autocast = sp_loss(f_s, f_t)
    assert under_autocast.dtype == torch.float32 and under_autocast.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="same batch"):
        sp_loss(f_s, f_t[:2])


def test_gradients_reach_only_the_student() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("vgg8_bn", num_classes=10)
    distiller = create_distiller("sp", student, teacher).train()  # 64x8x8 against 512x4x4: any shapes fit
    assert isinstance(distiller, SP) and distiller.stage == -1 and distiller.sp_weight == 3000.0
    assert distiller.extra_modules() == {}
    _, losses = distiller.forward_train(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert set(losses) == {"ce", "sp"} and losses["sp"].item() > 0
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv1.weight.grad is not None and student.conv1.weight.grad.abs().sum() > 0


def test_a_stage_out_of_range_is_a_config_error() -> None:
    student, teacher = create_model("resnet8", num_classes=10), create_model("vgg8_bn", num_classes=10)
    assert create_distiller("sp", student, teacher, stage=2).stage == 2
    with pytest.raises(ValueError, match=r"method.stage: stage 4 is out of range for the student.*\[16, 16, 32, 64\]"
                                         r".*\[64, 128, 256, 512, 512\]"):
        create_distiller("sp", student, teacher, stage=4)


@pytest.fixture()
def sp_config(run_config: dict, tmp_path: Path) -> dict:
    torch.manual_seed(5)
    path = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, path)
    return {**run_config, "name": "sp", "teachers": [{"name": "resnet8", "checkpoint": str(path)}],
            "method": {"name": "sp"},
            "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
            "optim": {**run_config["optim"], "epochs": 1},
            "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}


def test_sp_runs_from_the_command_line_with_and_without_da(sp_config: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "sp.yaml"
    path.write_text(yaml.safe_dump(sp_config))
    assert main(["distill", str(path)]) == 0
    assert main(["distill", str(path), "name=sp_da", "da.enabled=true", "da.prob=1.0"]) == 0
    plain_dir = run_dir_for(config_from_dict(sp_config))
    plain = read_metrics(plain_dir / "metrics.jsonl")
    with_da = read_metrics(run_dir_for(config_from_dict({**sp_config, "name": "sp_da"})) / "metrics.jsonl")
    assert plain[0]["train_sp"] > 0 and "da_perturbed" not in plain[0]
    assert with_da[0]["da_perturbed"] == 1.0 and with_da[0]["train_sp"] != plain[0]["train_sp"]
    assert torch.load(plain_dir / "checkpoints" / "last.pt", weights_only=True)["extra"] == {}  # SP learns no extras
    capsys.readouterr()
    assert main(["distill", str(path), "name=sp_bad", "method.stage=5"]) == 2
    assert "method.stage: stage 5 is out of range" in capsys.readouterr().err
