"""Logit standardisation (Sun et al., CVPR 2024): the transform against a hand computation, KD and DKD with
`standardize: true` equal to the plain losses on standardised logits, gradients only into the student, and a CLI
run of KD+LS with and without DA."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from socratic.cli import main
from socratic.config import config_from_dict
from socratic.context import TrainContext
from socratic.distillers import create_distiller, method_options
from socratic.distillers.dkd import dkd_terms
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.losses import cross_entropy, kd_loss, standardize_logits
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_transform_matches_a_hand_computation() -> None:
    rows = [[1.0, 2.0, 4.0, -1.0], [0.5, 0.5, 0.5, 3.5], [0.0, 1e-7, 2e-7, 3e-7]]  # the last: std ~ eps
    want = []
    for row in rows:
        mean = sum(row) / len(row)
        std = math.sqrt(sum((v - mean) ** 2 for v in row) / (len(row) - 1))  # unbiased, N - 1
        want.append([(v - mean) / (1e-7 + std) for v in row])  # eps added to the std, not under the sqrt
    got = standardize_logits(torch.tensor(rows, dtype=torch.float64))
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-4, atol=1e-5)
    assert got[2, 3].item() == pytest.approx(1.5e-7 / (1e-7 + 1.2910e-7), rel=1e-3)  # eps under a sqrt: ~5e-4
    assert got[0].std().item() == pytest.approx(1.0, rel=1e-5)  # unit unbiased std (a biased one gives != 1)
    assert torch.equal(standardize_logits(torch.full((1, 5), 3.0)), torch.zeros(1, 5))  # the eps: 0 / 1e-7, no NaN
    # invariant to a shift and a positive scale of the logits (why LS frees the student from the teacher's scale)
    z = torch.tensor(rows[:2])  # (the tiny row would drown in fp32 next to + 7)
    assert torch.allclose(standardize_logits(3.0 * z + 7.0), standardize_logits(z), atol=1e-5)


@pytest.fixture()
def pair() -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet14", num_classes=10)
    return student, teacher, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])


def test_kd_with_standardize_is_kd_on_standardised_logits(pair) -> None:
    student, teacher, x, y = pair
    distiller = create_distiller("kd", student, teacher, temperature=2.0, kd_weight=9.0, standardize=True).train()
    logits, losses = distiller.forward_train(x, y, TrainContext())
    t = teacher(x).detach()
    assert losses["kd"].item() == pytest.approx(
        9.0 * kd_loss(standardize_logits(logits), standardize_logits(t), 2.0).item(), rel=1e-5)
    assert losses["ce"].item() == pytest.approx(0.1 * cross_entropy(logits, y).item(), rel=1e-6)  # raw logits
    plain = create_distiller("kd", student, teacher, temperature=2.0, kd_weight=9.0).train()
    _, plain_losses = plain.forward_train(x, y, TrainContext())
    assert abs(plain_losses["kd"].item() - losses["kd"].item()) > 1e-4  # the option changes the loss
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters()) and student.fc.weight.grad is not None


def test_dkd_with_standardize_is_dkd_on_standardised_logits(pair) -> None:
    student, teacher, x, y = pair
    distiller = create_distiller("dkd", student, teacher, alpha=9.0, beta=72.0, temperature=2.0,
                                 standardize=True).train()
    logits, losses = distiller.forward_train(x, y, TrainContext(epoch=20))
    tckd, nckd = dkd_terms(standardize_logits(logits), standardize_logits(teacher(x).detach()), y, 2.0)
    assert losses["tckd"].item() == pytest.approx(9.0 * tckd.item(), rel=1e-5)
    assert losses["nckd"].item() == pytest.approx(72.0 * nckd.item(), rel=1e-5)
    assert losses["ce"].item() == pytest.approx(cross_entropy(logits, y).item(), rel=1e-6)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters()) and student.fc.weight.grad is not None


def test_standardize_must_be_a_boolean() -> None:
    for name in ("kd", "dkd"):
        with pytest.raises(ValueError, match="method.standardize"):
            method_options(name, standardize="yes")


def test_kd_ls_runs_from_the_command_line_with_and_without_da(run_config: dict, tmp_path: Path) -> None:
    torch.manual_seed(5)
    teacher = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, teacher)
    config = {**run_config, "name": "kd_ls", "teachers": [{"name": "resnet8", "checkpoint": str(teacher)}],
              "method": {"name": "dkd", "alpha": 9.0, "beta": 72.0, "temperature": 2.0, "standardize": True},
              "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
              "optim": {**run_config["optim"], "epochs": 1},
              "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}
    kd_config = {**config, "name": "kd_ls_da", "method": {"name": "kd", "temperature": 2.0, "kd_weight": 9.0,
                                                           "standardize": True}}
    (tmp_path / "dkd_ls.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "kd_ls.yaml").write_text(yaml.safe_dump(kd_config))
    assert main(["distill", str(tmp_path / "dkd_ls.yaml")]) == 0
    assert main(["distill", str(tmp_path / "kd_ls.yaml"), "da.enabled=true", "da.prob=1.0"]) == 0
    plain = read_metrics(run_dir_for(config_from_dict(config)) / "metrics.jsonl")
    with_da = read_metrics(run_dir_for(config_from_dict(kd_config)) / "metrics.jsonl")
    assert plain[0]["train_nckd"] > 0 and "da_perturbed" not in plain[0]
    assert with_da[0]["da_perturbed"] == 1.0 and with_da[0]["train_kd"] > 0
