"""AT: the loss against a hand computation, the pooling of the larger map, gradients only into the student, a CLI
run with and without DA (no extras in the checkpoint), and config errors for stages that do not fit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from socratic.cli import main
from socratic.config import config_from_dict
from socratic.distillers import create_distiller
from socratic.distillers.at import AT, at_loss
from socratic.distillers.taps import match_spatial
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _attention(sample: list[list[list[float]]], p: float) -> list[float]:
    """mean over channels of f^p at each position (row-major), divided by its L2 norm."""
    h, w = len(sample[0]), len(sample[0][0])
    a = [sum(channel[i][j] ** p for channel in sample) / len(sample) for i in range(h) for j in range(w)]
    norm = math.sqrt(sum(v * v for v in a))
    return [v / norm for v in a]


def _hand_at(student: list, teacher: list, p: float = 2.0) -> float:
    diffs = [(u - v) ** 2 for s, t in zip(student, teacher) for u, v in zip(_attention(s, p), _attention(t, p))]
    return sum(diffs) / len(diffs)


def test_the_loss_matches_a_hand_computation() -> None:
    s = [[[[1.0, 0.0], [2.0, 1.0]], [[0.5, 0.0], [0.0, 3.0]]],
         [[[0.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [1.0, 0.0]]]]  # B=2, C=2, 2x2
    t = [[[[0.0, 1.0], [1.0, 0.0]], [[1.0, 1.0], [0.0, 2.0]], [[0.5, 0.5], [0.5, 0.5]]],
         [[[3.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]], [[1.0, 2.0], [0.0, 0.0]]]]  # C=3: channels may differ
    f_s, f_t = torch.tensor(s), torch.tensor(t)
    one = _hand_at(s, t)
    assert at_loss([f_s], [f_t]).item() == pytest.approx(one, rel=1e-5)
    assert at_loss([f_s, f_s], [f_t, f_s]).item() == pytest.approx(one, rel=1e-5)  # summed over stages
    assert at_loss([f_s], [f_t], p=4.0).item() == pytest.approx(_hand_at(s, t, 4.0), rel=1e-5)
    assert at_loss([f_s], [3 * f_s]).item() == pytest.approx(0.0, abs=1e-8)  # per-sample normalisation
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = at_loss([f_s.bfloat16()], [f_t.bfloat16()])
    assert under_autocast.dtype == torch.float32 and under_autocast.item() == pytest.approx(one, rel=1e-2)


def test_the_larger_map_is_pooled_to_the_smaller() -> None:
    big = torch.arange(32, dtype=torch.float32).reshape(1, 2, 4, 4)
    small = torch.rand(1, 3, 2, 2)
    pooled_s, same_t = match_spatial(big, small, "at", 1)
    assert same_t is small and pooled_s.shape == (1, 2, 2, 2)
    assert pooled_s[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4)  # the mean of each 2x2 block
    same_s, pooled_t = match_spatial(small, big, "at", 1)
    assert same_s is small and pooled_t.shape == (1, 2, 2, 2)
    with pytest.raises(ValueError, match=r"method.stages: at cannot match stage 2.*\(4, 2\).*\(2, 4\)"):
        match_spatial(torch.rand(1, 2, 4, 2), torch.rand(1, 2, 2, 4), "at", 2)


def test_gradients_reach_only_the_student() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet14", num_classes=10)
    distiller = create_distiller("at", student, teacher).train()
    assert isinstance(distiller, AT) and distiller.stages == [1, 2, 3] and distiller.at_weight == 1000.0
    assert distiller.extra_modules() == {} and not teacher.training
    logits, losses = distiller.forward_train(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert set(losses) == {"ce", "at"} and losses["at"].item() > 0 and logits.shape == (4, 10)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv1.weight.grad is not None and student.conv1.weight.grad.abs().sum() > 0


def test_stages_that_do_not_fit_are_config_errors() -> None:
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet14", num_classes=10)
    with pytest.raises(ValueError, match=r"method.stages: stage 4 is out of range.*stage_channels \[16, 16, 32, 64\]"):
        create_distiller("at", student, teacher, stages=[1, 4])
    vgg = create_model("vgg8_bn", num_classes=10)  # 5 stages against the resnet's 4
    with pytest.raises(ValueError, match=r"method.stages: null pairs every stage but the stem.*5 and 4"):
        create_distiller("at", vgg, teacher)
    assert create_distiller("at", vgg, teacher, stages=[1, -1]).stages == [1, -1]
    with pytest.raises(ValueError, match=r"method.stages: \[3, -1\] names a stage of the student twice"):
        create_distiller("at", student, teacher, stages=[3, -1])
    with pytest.raises(ValueError, match="method.stages is empty"):
        create_distiller("at", student, teacher, stages=[])


@pytest.fixture()
def at_config(run_config: dict, tmp_path: Path) -> dict:
    torch.manual_seed(5)
    path = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, path)
    return {**run_config, "name": "at", "teachers": [{"name": "resnet8", "checkpoint": str(path)}],
            "method": {"name": "at"},
            "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
            "optim": {**run_config["optim"], "epochs": 1},
            "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}


def test_at_runs_from_the_command_line_with_and_without_da(at_config: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "at.yaml"
    path.write_text(yaml.safe_dump(at_config))
    assert main(["distill", str(path)]) == 0
    assert main(["distill", str(path), "name=at_da", "da.enabled=true", "da.prob=1.0"]) == 0
    plain_dir = run_dir_for(config_from_dict(at_config))
    plain = read_metrics(plain_dir / "metrics.jsonl")
    with_da = read_metrics(run_dir_for(config_from_dict({**at_config, "name": "at_da"})) / "metrics.jsonl")
    assert plain[0]["train_at"] > 0 and "da_perturbed" not in plain[0]
    assert with_da[0]["da_perturbed"] == 1.0 and with_da[0]["train_at"] != plain[0]["train_at"]
    assert torch.load(plain_dir / "checkpoints" / "last.pt", weights_only=True)["extra"] == {}  # AT learns no extras
    capsys.readouterr()
    assert main(["distill", str(path), "name=at_bad", "method.stages=[1, 7]"]) == 2
    assert "method.stages: stage 7 is out of range" in capsys.readouterr().err
