"""VID: the loss against a hand computation (the pure function and the method's path through pooling and the
regressor), the initial variance, gradients only into the student and the extras, the regressors and variances in
`last.pt` after a CLI run with and without DA (learned, or fixed when asked), and config errors for stages that do
not fit."""

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
from socratic.distillers.vid import VID, VIDRegressor, vid_loss
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.models import create_model
from socratic.models.features import Features

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_loss_matches_a_hand_computation() -> None:
    mean = [[[[1.0, 2.0]], [[0.0, -1.0]]]]  # B=1, C=2, 1x2
    target = [[[[0.5, 2.0]], [[1.0, 1.0]]]]
    variance = [2.0, 0.5]
    terms = [0.5 * ((mean[0][c][0][w] - target[0][c][0][w]) ** 2 / variance[c] + math.log(variance[c]))
             for c in range(2) for w in range(2)]
    got = vid_loss(torch.tensor(mean), torch.tensor(target), torch.tensor(variance))
    assert got.item() == pytest.approx(sum(terms) / 4, rel=1e-6) and got.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = vid_loss(torch.tensor(mean), torch.tensor(target), torch.tensor(variance))
    assert under_autocast.dtype == torch.float32 and under_autocast.item() == pytest.approx(got.item(), rel=1e-6)


def test_the_variance_starts_at_init_variance_and_is_learned_or_fixed() -> None:
    learned = VIDRegressor(3, 4)
    assert learned.variance().tolist() == pytest.approx([5.0] * 4, rel=1e-6)
    assert sorted(name for name, _ in learned.named_parameters()) == ["alpha", "mean.0.weight", "mean.2.weight",
                                                                      "mean.4.weight"]  # 1x1 convs, no biases
    assert learned.mean[0].weight.shape == (4, 3, 1, 1) and learned.mean[4].weight.shape == (4, 4, 1, 1)
    fixed = VIDRegressor(3, 4, init_variance=2.0, learn_variance=False)
    assert "alpha" in dict(fixed.named_buffers()) and "alpha" not in dict(fixed.named_parameters())
    assert fixed.variance().tolist() == pytest.approx([2.0] * 4, rel=1e-6)
    assert VIDRegressor(1, 1, init_variance=40.0).variance().item() == pytest.approx(40.0)  # no overflow


class _Fixed(nn.Module):
    """A model of the feature API whose stages are given maps (scaled by a parameter, so the student has one)."""

    def __init__(self, stages: list[torch.Tensor]) -> None:
        super().__init__()
        self.maps, self.scale = stages, nn.Parameter(torch.ones(()))
        self.stage_channels, self.embedding_dim = [m.shape[1] for m in stages], 1

    def forward_features(self, x: torch.Tensor) -> Features:
        return Features(stages=[self.scale * m for m in self.maps], embedding=x.flatten(1)[:, :1],
                        logits=self.scale * x.flatten(1)[:, :2])


def test_the_method_pools_then_regresses_each_stage() -> None:
    student_map = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])  # B=1, C=1, 2x2: pooled to its mean, 3
    teacher_map = torch.tensor([[[[1.0]]]])  # 1x1
    student, teacher = _Fixed([student_map, student_map]), _Fixed([teacher_map, teacher_map])
    distiller = create_distiller("vid", student, teacher, vid_weight=2.0)
    assert distiller.stages == [1]
    with torch.no_grad():
        for conv in distiller.regressors[0].mean[::2]:
            conv.weight.fill_(1.0)  # r(x) = x for x >= 0
    _, losses = distiller.forward_train(torch.ones(1, 4), torch.tensor([0]))
    assert losses["vid"].item() == pytest.approx(2.0 * 0.5 * ((3.0 - 1.0) ** 2 / 5.0 + math.log(5.0)), rel=1e-5)


def test_gradients_reach_only_the_student_and_the_extras() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("vgg8_bn", num_classes=10)
    distiller = create_distiller("vid", student, teacher, stages=[1, 2, 3]).train()
    assert isinstance(distiller, VID) and set(distiller.trainable_modules()) == {"student", "regressors"}
    assert [r.mean[0].weight.shape[:2] for r in distiller.regressors] == [(128, 16), (256, 32), (512, 64)]
    _, losses = distiller.forward_train(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert set(losses) == {"ce", "vid"} and torch.isfinite(losses["vid"])
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv1.weight.grad is not None and student.conv1.weight.grad.abs().sum() > 0
    for regressor in distiller.regressors:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in regressor.parameters())


def test_stages_that_do_not_fit_are_config_errors() -> None:
    student, teacher = create_model("resnet8", num_classes=10), create_model("vgg8_bn", num_classes=10)
    with pytest.raises(ValueError, match=r"method.stages: null pairs every stage but the stem.*4 and 5 stages"):
        create_distiller("vid", student, teacher)
    with pytest.raises(ValueError, match=r"method.stages: stage -5 is out of range for the student"):
        create_distiller("vid", student, teacher, stages=[-5])
    with pytest.raises(ValueError, match=r"method.init_variance must be > eps"):
        create_distiller("vid", student, student, init_variance=0.0)


@pytest.fixture()
def vid_config(run_config: dict, tmp_path: Path) -> dict:
    torch.manual_seed(5)
    path = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, path)
    return {**run_config, "name": "vid", "teachers": [{"name": "resnet8", "checkpoint": str(path)}],
            "method": {"name": "vid"},
            "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
            "optim": {**run_config["optim"], "epochs": 1},
            "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}


def test_vid_runs_from_the_command_line_and_checkpoints_its_extras(vid_config: dict, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "vid.yaml"
    path.write_text(yaml.safe_dump(vid_config))
    assert main(["distill", str(path)]) == 0
    assert main(["distill", str(path), "name=vid_da", "da.enabled=true", "da.prob=1.0"]) == 0
    assert main(["distill", str(path), "name=vid_fixed", "method.learn_variance=false"]) == 0
    names = ("vid", "vid_da", "vid_fixed")
    dirs = {name: run_dir_for(config_from_dict({**vid_config, "name": name})) for name in names}
    plain, with_da = (read_metrics(dirs[name] / "metrics.jsonl") for name in ("vid", "vid_da"))
    assert math.isfinite(plain[0]["train_vid"]) and "da_perturbed" not in plain[0]
    assert with_da[0]["da_perturbed"] == 1.0 and with_da[0]["train_vid"] != plain[0]["train_vid"]
    init_alpha = math.log(math.exp(5.0 - 1e-5) - 1.0)
    for name, learned in (("vid", True), ("vid_fixed", False)):
        extra = torch.load(dirs[name] / "checkpoints" / "last.pt", weights_only=True)["extra"]["regressors"]
        assert {f"{i}.{k}" for i in range(3) for k in ("mean.0.weight", "mean.2.weight", "mean.4.weight", "alpha")} \
            == set(extra)
        moved = (extra["0.alpha"] - init_alpha).abs().max().item()
        assert (moved > 1e-6) == learned, (name, moved)  # the optimiser trains the variance unless it is fixed
    capsys.readouterr()
    assert main(["distill", str(path), "name=vid_bad", "method.stages=[4]"]) == 2
    assert "method.stages: stage 4 is out of range" in capsys.readouterr().err


def test_a_resumed_run_restores_the_regressors_and_variances(vid_config: dict, stopped_and_resumed) -> None:
    config = {**vid_config, "optim": {**vid_config["optim"], "epochs": 2}}
    runs = stopped_and_resumed(config, epoch=2, step=1)
    full, cut = (torch.load(r / "checkpoints" / "last.pt", weights_only=True) for r in runs)
    assert all(torch.equal(full["model"][k], cut["model"][k]) for k in full["model"])
    extra_full, extra_cut = full["extra"]["regressors"], cut["extra"]["regressors"]
    assert set(extra_full) == set(extra_cut) and all(torch.equal(extra_full[k], extra_cut[k]) for k in extra_full)
