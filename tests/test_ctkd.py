"""CTKD (global variant): the lambda schedule, tau's start, the gradient reversal on theta, the loss by hand, theta
trained and checkpointed, a CLI run with and without DA, and a stop-and-resume that reproduces the uninterrupted
run."""

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
from socratic.distillers.ctkd import CTKD, GlobalTemperature, ctkd_kd_loss, gradient_reversal, grl_lambda
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.losses import kd_loss, standardize_logits
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_lambda_schedule_is_the_reference_cosine() -> None:
    assert grl_lambda(1) == pytest.approx(-0.0245, abs=1e-4)
    assert grl_lambda(5) == pytest.approx(-0.5, abs=1e-12)
    assert [grl_lambda(e) for e in (10, 11, 240)] == [-1.0, -1.0, -1.0]
    values = [grl_lambda(e) for e in range(1, 11)]
    assert all(a > b for a, b in zip(values, values[1:]))  # monotone from 0 towards -1
    assert grl_lambda(3, decay_max=0.0, decay_min=-2.0, decay_loops=4) == pytest.approx(
        0.5 * (math.cos(math.pi * 3 / 4) + 1) * 2 - 2)


def test_tau_starts_at_15_62_and_the_grl_scales_the_gradient_of_theta() -> None:
    module = GlobalTemperature()
    assert module(0.0).item() == pytest.approx(1 + 20 / (1 + math.exp(-1)), abs=1e-5)
    assert module(0.0).item() == pytest.approx(15.62, abs=5e-3)
    sig = 1 / (1 + math.exp(-1))
    for lam in (-1.0, -0.25, 0.5):
        module.zero_grad()
        module(lam).sum().backward()  # d tau / d theta = 20 sigma'(1), times lambda through the reversal
        assert module.theta.grad.item() == pytest.approx(lam * 20 * sig * (1 - sig), rel=1e-5)
    x = torch.tensor([2.0], requires_grad=True)
    y = gradient_reversal(x, -1.0)
    assert torch.equal(y, x)  # the forward pass is the identity
    (3 * y).sum().backward()
    assert x.grad.item() == pytest.approx(-3.0)


def test_the_loss_and_where_its_gradient_goes() -> None:
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    assert ctkd_kd_loss(s, t, torch.tensor([3.0])).item() == pytest.approx(kd_loss(s, t, 3.0).item(), rel=1e-6)
    assert ctkd_kd_loss(s, t, 3.0).item() == pytest.approx(kd_loss(s, t, 3.0).item(), rel=1e-6)
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet14", num_classes=10)
    distiller = create_distiller("ctkd", student, teacher).train()
    assert isinstance(distiller, CTKD) and set(distiller.extra_modules()) == {"temperature"}
    trainable = [id(p) for m in distiller.trainable_modules().values() for p in m.parameters()]
    assert id(distiller.temperature.theta) in trainable  # the run's optimiser trains theta with the student
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    logits, losses = distiller.forward_train(x, y, TrainContext(epoch=10))
    tau = 1 + 20 / (1 + math.exp(-1))
    assert losses["kd"].item() == pytest.approx(0.9 * kd_loss(logits, teacher(x), tau).item(), rel=1e-5)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters()) and student.fc.weight.grad is not None
    # lambda = -1 at epoch 10: theta's gradient is minus the gradient of the loss (it ascends the KD loss)
    theta = distiller.temperature.theta
    grad_reversed = theta.grad.clone()
    theta_copy = theta.detach().clone().requires_grad_(True)
    direct = 0.9 * ctkd_kd_loss(logits.detach(), teacher(x), 1 + 20 * torch.sigmoid(theta_copy))
    direct.backward()
    assert grad_reversed.item() == pytest.approx(-theta_copy.grad.item(), rel=1e-4)
    metrics = distiller.epoch_metrics()
    assert metrics["ctkd_tau"] == pytest.approx(tau, rel=1e-6) and metrics["ctkd_lambda"] == -1.0
    assert distiller.epoch_metrics() == {}  # reset once read
    with pytest.raises(ValueError, match="needs the training context"):
        distiller.forward_train(x, y)
    ls = create_distiller("ctkd", student, teacher, standardize=True).train()
    logits, losses = ls.forward_train(x, y, TrainContext(epoch=1))
    assert losses["kd"].item() == pytest.approx(0.9 * kd_loss(standardize_logits(logits), standardize_logits(
        teacher(x)), tau).item(), rel=1e-5)
    with pytest.raises(ValueError, match="method.decay_min"):
        method_options("ctkd", decay_min=1.0)
    with pytest.raises(ValueError, match="method.t_end"):
        method_options("ctkd", t_end=0.0)


@pytest.fixture()
def ctkd_config(run_config: dict, tmp_path: Path) -> dict:
    torch.manual_seed(5)
    path = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, path)
    return {**run_config, "name": "ctkd", "teachers": [{"name": "resnet8", "checkpoint": str(path)}],
            "method": {"name": "ctkd", "decay_loops": 2},
            "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
            "optim": {**run_config["optim"], "epochs": 2},
            "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}


def test_ctkd_runs_from_the_command_line_with_and_without_da(ctkd_config: dict, tmp_path: Path) -> None:
    path = tmp_path / "ctkd.yaml"
    path.write_text(yaml.safe_dump(ctkd_config))
    assert main(["distill", str(path)]) == 0
    assert main(["distill", str(path), "name=ctkd_da", "da.enabled=true", "da.prob=1.0"]) == 0
    plain = read_metrics(run_dir_for(config_from_dict(ctkd_config)) / "metrics.jsonl")
    with_da = read_metrics(run_dir_for(config_from_dict({**ctkd_config, "name": "ctkd_da"})) / "metrics.jsonl")
    assert [m["ctkd_lambda"] for m in plain] == [grl_lambda(1, decay_loops=2), -1.0]
    assert plain[0]["ctkd_tau"] != plain[1]["ctkd_tau"]  # theta is trained
    assert plain[0]["train_kd"] > 0 and "da_perturbed" not in plain[0]
    assert with_da[0]["da_perturbed"] == 1.0 and with_da[0]["train_kd"] != plain[0]["train_kd"]


def test_a_resume_reproduces_the_uninterrupted_run(ctkd_config: dict, stopped_and_resumed) -> None:
    runs = stopped_and_resumed(ctkd_config, epoch=2, step=1)
    full, cut = (torch.load(r / "checkpoints" / "last.pt", weights_only=True) for r in runs)
    assert all(torch.equal(full["model"][k], cut["model"][k]) for k in full["model"])
    assert torch.equal(full["extra"]["temperature"]["theta"], cut["extra"]["temperature"]["theta"])
    assert not torch.equal(full["extra"]["temperature"]["theta"], torch.ones(1))  # theta was trained and saved
    metrics = [[(m["ctkd_tau"], m["ctkd_lambda"], m["train_kd"]) for m in read_metrics(r / "metrics.jsonl")]
               for r in runs]
    assert metrics[0] == metrics[1]
