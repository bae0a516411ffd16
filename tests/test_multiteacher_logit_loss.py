"""Logit methods as the per-teacher loss of the multi-teacher distiller (`method.logit_loss`): DKD and DIST
against each teacher, weighted by AVER and CA-MKD, equal to the hand-assembled sums of the single-teacher losses;
KD with logit standardisation; config errors; CLI runs (DKD with and without DA, DIST under MTKD-RL)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from socratic.config import ConfigError, config_from_dict
from socratic.context import TrainContext
from socratic.distillers import create_distiller, method_options
from socratic.distillers.dist import dist_loss, dist_loss_per_sample
from socratic.distillers.dkd import dkd_terms
from socratic.engine.logger import read_metrics
from socratic.losses import kd_loss_per_sample, standardize_logits
from socratic.models import create_model
from socratic.multiteacher import confidence_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup(method: str, logit_loss):
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10, in_channels=1)
    teachers = [create_model("resnet8", num_classes=10, in_channels=1),
                create_model("wrn_16_1", num_classes=10, in_channels=1)]
    distiller = create_distiller(method, student, teachers, feature_loss=False, logit_loss=logit_loss).train()
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 1, 28, 28, generator=generator), torch.randint(0, 10, (6,), generator=generator)
    return distiller, x, y


def _logits(distiller, x):
    with torch.no_grad():  # BN in train mode for the student, as in forward_train
        state = {k: v.clone() for k, v in distiller.student.state_dict().items()}
        z_s = distiller.student(x)
        distiller.student.load_state_dict(state)
        return z_s, [t(x) for t in distiller.teachers]


def test_dist_per_sample_averages_to_the_single_teacher_loss() -> None:
    z_s, z_t = torch.randn(5, 7), torch.randn(5, 7)
    per = dist_loss_per_sample(z_s, z_t, 4.0, 1.0, 2.0)
    assert per.shape == (5,) and per.mean().item() == pytest.approx(dist_loss(z_s, z_t, 4.0, 1.0, 2.0).item(), rel=1e-5)


def test_dkd_against_each_teacher_with_aver_weights() -> None:
    dkd = method_options("dkd", beta=6.0, warmup_epochs=4)
    distiller, x, y = _setup("aver", dkd)
    z_s, z_t = _logits(distiller, x)
    ctx = TrainContext(epoch=2)  # warm-up factor 2 / 4
    logits, losses = distiller.forward_train(x, y, ctx)
    assert torch.allclose(logits, z_s, atol=1e-5) and set(losses) == {"ce", "kd"}
    expected = 0.0
    for t in z_t:  # AVER: 1/M of each teacher's DKD term
        tckd, nckd = dkd_terms(z_s, t, y, 4.0)
        expected += 0.5 * 0.5 * (1.0 * tckd + 6.0 * nckd)
    assert losses["kd"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert losses["ce"].item() == pytest.approx(F.cross_entropy(z_s, y).item(), rel=1e-5)  # DKD's ce_weight 1


def test_dist_against_each_teacher_with_camkd_weights() -> None:
    dist = method_options("dist")
    distiller, x, y = _setup("camkd", dist)
    z_s, z_t = _logits(distiller, x)
    _, losses = distiller.forward_train(x, y, TrainContext())
    w = confidence_weights(torch.stack([F.cross_entropy(t, y, reduction="none") for t in z_t], dim=1))
    per = torch.stack([2.0 * dist_loss_per_sample(z_s, t, 4.0) for t in z_t], dim=1)
    scale = distiller.strategy.logit_scale  # CA-MKD's reference 1/M
    assert losses["kd"].item() == pytest.approx((scale * (w * per).sum(1).mean()).item(), rel=1e-4)


def test_kd_with_logit_standardisation_per_teacher() -> None:
    ls = method_options("kd", temperature=2.0, kd_weight=9.0, ce_weight=0.1, standardize=True)
    distiller, x, y = _setup("aver", ls)
    z_s, z_t = _logits(distiller, x)
    _, losses = distiller.forward_train(x, y, TrainContext())
    expected = sum(0.5 * 9.0 * kd_loss_per_sample(standardize_logits(z_s), standardize_logits(t), 2.0).mean()
                   for t in z_t)
    assert losses["kd"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert losses["ce"].item() == pytest.approx(0.1 * F.cross_entropy(z_s, y).item(), rel=1e-5)


def test_logit_loss_config_errors(method_cli_runs) -> None:
    config = method_cli_runs.config({"name": "aver", "logit_loss": {"name": "ctkd"}}, teachers=2)
    with pytest.raises(ConfigError, match=r"method.logit_loss.name: 'ctkd' cannot be a per-teacher loss; use one "
                                          r"of .*dist.*dkd.*kd"):
        config_from_dict(config)
    config["method"]["logit_loss"] = {"name": "dkd", "gamma": 1}
    with pytest.raises(ConfigError, match=r"unknown config key 'method.logit_loss.gamma'"):
        config_from_dict(config)
    config["method"]["logit_loss"] = {"name": "dkd", "temperature": 0}
    with pytest.raises(ConfigError, match=r"method.logit_loss.temperature"):
        config_from_dict(config)
    config["method"]["logit_loss"] = None
    assert config_from_dict(config).method.logit_loss is None


def test_dkd_and_dist_per_teacher_from_the_command_line(method_cli_runs) -> None:
    dkd = method_cli_runs({"name": "camkd", "feature_loss": False, "logit_loss": {"name": "dkd", "warmup_epochs": 1}},
                          teachers=2)
    for variant, run_dir in dkd.items():
        metrics = read_metrics(run_dir / "metrics.jsonl")[0]
        assert metrics["train_kd"] > 0 and ("da_perturbed" in metrics) == (variant == "da")
    config = method_cli_runs.config({"name": "mtkd_rl", "logit_loss": {"name": "dist"}}, teachers=2)
    assert config_from_dict(config).method.logit_loss.name == "dist"


def test_dist_per_teacher_under_mtkd_rl_trains_a_step() -> None:
    distiller, x, y = _setup("mtkd_rl", method_options("dist"))
    _, losses = distiller.forward_train(x, y, TrainContext())
    assert torch.isfinite(losses["kd"]) and losses["kd"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is None for t in distiller.teachers for p in t.parameters())
    assert distiller.student.conv1.weight.grad.abs().sum() > 0
