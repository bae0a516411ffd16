"""PKT: the loss against a hand computation, gradients only into the student, a CLI run with and without DA (no
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
from socratic.distillers.pkt import PKT, cosine_probabilities, pkt_loss
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _probabilities(rows: list[list[float]]) -> list[list[float]]:
    unit = [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in rows]
    sim = [[(sum(a * b for a, b in zip(u, v)) + 1) / 2 for v in unit] for u in unit]
    return [[v / sum(row) for v in row] for row in sim]


def test_the_loss_matches_a_hand_computation() -> None:
    s = [[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0]]
    t = [[0.5, 0.0, 1.0], [1.0, 1.0, -1.0], [0.0, 2.0, 0.5]]  # the embedding widths differ
    p_s, p_t = _probabilities(s), _probabilities(t)
    expected = sum(p_t[i][j] * math.log(p_t[i][j] / p_s[i][j]) for i in range(3) for j in range(3)) / 9
    assert pkt_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(expected, rel=1e-4)
    assert cosine_probabilities(torch.tensor(s)).sum(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert pkt_loss(torch.tensor(s), 5 * torch.tensor(s)).item() == pytest.approx(0.0, abs=1e-7)  # scale-free
    assert pkt_loss(torch.tensor(t), torch.tensor(s)).item() != pytest.approx(expected, rel=1e-3)  # KL(T || S) only
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the similarities stay fp32
        under_autocast = pkt_loss(torch.tensor(s), torch.tensor(t))
    assert under_autocast.dtype == torch.float32 and under_autocast.item() == pytest.approx(expected, rel=1e-4)
    zero = torch.zeros(2, 3)
    assert torch.isfinite(pkt_loss(zero, torch.rand(2, 4)))  # a zero embedding has cosine 0 with every sample


def test_gradients_reach_only_the_student() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("vgg8_bn", num_classes=10)
    distiller = create_distiller("pkt", student, teacher).train()  # 64-d against 512-d embeddings
    assert isinstance(distiller, PKT) and distiller.pkt_weight == 30000.0 and distiller.extra_modules() == {}
    _, losses = distiller.forward_train(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert set(losses) == {"ce", "pkt"} and losses["pkt"].item() > 0
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv1.weight.grad is not None and student.conv1.weight.grad.abs().sum() > 0


def test_a_model_without_an_embedding_and_bad_values_are_config_errors() -> None:
    # no nn.Linear classifier, so no embedding (a plain MLP now has one: its classifier's input)
    plain = nn.Sequential(nn.Conv2d(3, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="method.name 'pkt' needs a student with an embedding.*Sequential"):
        create_distiller("pkt", plain, create_model("resnet8", num_classes=10))
    with pytest.raises(ValueError, match="method.pkt_weight must be >= 0"):
        create_distiller("pkt", create_model("resnet8", num_classes=10), create_model("resnet8", num_classes=10),
                         pkt_weight=-1.0)


@pytest.fixture()
def pkt_config(run_config: dict, tmp_path: Path) -> dict:
    torch.manual_seed(5)
    path = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, path)
    return {**run_config, "name": "pkt", "teachers": [{"name": "resnet8", "checkpoint": str(path)}],
            "method": {"name": "pkt"},
            "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
            "optim": {**run_config["optim"], "epochs": 1},
            "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}


def test_pkt_runs_from_the_command_line_with_and_without_da(pkt_config: dict, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "pkt.yaml"
    path.write_text(yaml.safe_dump(pkt_config))
    assert main(["distill", str(path)]) == 0
    assert main(["distill", str(path), "name=pkt_da", "da.enabled=true", "da.prob=1.0"]) == 0
    plain_dir = run_dir_for(config_from_dict(pkt_config))
    plain = read_metrics(plain_dir / "metrics.jsonl")
    with_da = read_metrics(run_dir_for(config_from_dict({**pkt_config, "name": "pkt_da"})) / "metrics.jsonl")
    assert plain[0]["train_pkt"] > 0 and "da_perturbed" not in plain[0]
    assert with_da[0]["da_perturbed"] == 1.0 and with_da[0]["train_pkt"] != plain[0]["train_pkt"]
    assert torch.load(plain_dir / "checkpoints" / "last.pt", weights_only=True)["extra"] == {}  # no extras
    capsys.readouterr()
    assert main(["distill", str(path), "name=pkt_bad", "method.eps=0"]) == 2
    assert "method.eps must be > 0" in capsys.readouterr().err
