"""OFD: the models' pre-ReLU taps (ReLU of each is the stage), the margins and the partial L2 against hand
computations, the stage weights, gradients only into the student and the connectors, config errors for models
without taps or margins, and a CLI run with and without DA with the connectors in `last.pt`."""

from __future__ import annotations

import math

import pytest
import torch

from socratic.distillers import create_distiller
from socratic.distillers.ofd import OFD, bn_margins, partial_l2
from socratic.engine.logger import read_metrics
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", ["resnet8", "vgg8_bn", "ShuffleV2"])
def test_the_pre_relu_taps_are_the_stages_before_their_relu(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    plain, tapped = model.forward_features(x), model.forward_features(x, preact=True)
    assert plain.preact_stages is None and len(tapped.preact_stages) == len(model.stage_channels)
    assert torch.equal(plain.logits, tapped.logits)
    for stage, pre in zip(tapped.stages, tapped.preact_stages):
        assert torch.equal(torch.relu(pre), stage) and (pre < 0).any()


def test_margins_match_the_truncated_normal_expectation() -> None:
    weight, bias = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 3.0])
    got = bn_margins(weight, bias).tolist()

    def phi(v: float) -> float:
        return math.exp(-v * v / 2) / math.sqrt(2 * math.pi)

    def cdf(v: float) -> float:
        return 0.5 * (1 + math.erf(v / math.sqrt(2)))

    assert got[0] == pytest.approx(0.0 - 1.0 * phi(0.0) / cdf(0.0), rel=1e-6)
    assert got[1] == pytest.approx(1.0 - 2.0 * phi(0.5) / cdf(-0.5), rel=1e-6)  # s = |gamma|
    assert got[2] == pytest.approx(-3 * 0.5)  # Phi(-6) < 0.001: -3 s


def test_partial_l2_matches_a_hand_computation() -> None:
    student = torch.tensor([[[[0.5, -2.0, 1.0]], [[-0.5, 0.2, 3.0]]]])  # B=1, C=2, 1x3
    teacher = torch.tensor([[[[-1.0, -0.5, 2.0]], [[-3.0, -0.1, 1.0]]]])
    margin = torch.tensor([-0.8, -1.0])
    # channel 0: targets max(t, -0.8) = [-0.8, -0.5, 2.0]: s > t' at 0 (0.5 > -0.8), no at 1, t' > 0 at 2
    # channel 1: targets [-1.0, -0.1, 1.0]: s > t' at 0 (-0.5 > -1), at 1 (0.2 > -0.1), at 2 (t' > 0)
    expected = (0.5 + 0.8) ** 2 + (1.0 - 2.0) ** 2 + (-0.5 + 1.0) ** 2 + (0.2 + 0.1) ** 2 + (3.0 - 1.0) ** 2
    assert partial_l2(student, teacher, margin).item() == pytest.approx(expected, rel=1e-6)
    assert partial_l2(torch.cat([student, student]), torch.cat([teacher, teacher]), margin).item() == \
        pytest.approx(expected, rel=1e-6)  # averaged over the batch


def test_gradients_reach_only_the_student_and_the_connectors() -> None:
    torch.manual_seed(0)
    student, teacher = create_model("ShuffleV2", num_classes=10), create_model("resnet20", num_classes=10)
    distiller = create_distiller("ofd", student, teacher).train()
    assert isinstance(distiller, OFD) and distiller.stages == [1, 2, 3]
    assert [c.conv.weight.shape[:2] for c in distiller.connectors] == [(16, 116), (32, 232), (64, 464)]
    bns = teacher.preact_bns()
    assert torch.equal(distiller.margin2, bn_margins(bns[3].weight, bns[3].bias))
    _, losses = distiller.forward_train(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert set(losses) == {"ce", "ofd"} and losses["ofd"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.connectors.parameters())


def test_models_without_taps_or_margins_are_config_errors() -> None:
    resnet = create_model("resnet8", num_classes=10)
    with pytest.raises(ValueError, match=r"needs the teacher's pre-ReLU stage maps, which WideResNet does not give"):
        create_distiller("ofd", resnet, create_model("wrn_16_1", num_classes=10))
    with pytest.raises(ValueError, match=r"margins from the BN before each stage's last ReLU"):
        create_distiller("ofd", resnet, create_model("ShuffleV2", num_classes=10))
    with pytest.raises(ValueError, match=r"method.stages: null pairs every stage but the stem"):
        create_distiller("ofd", resnet, create_model("vgg8_bn", num_classes=10))


def test_ofd_runs_from_the_command_line_with_and_without_da(method_cli_runs) -> None:
    dirs = method_cli_runs({"name": "ofd"})
    values = {}
    for variant, run_dir in dirs.items():
        values[variant] = read_metrics(run_dir / "metrics.jsonl")[0]["train_ofd"]
        extra = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["extra"]
        keys = {f"{i}.{k}" for i in range(3) for k in ("conv.weight", "bn.weight", "bn.bias")}
        assert keys <= set(extra["connectors"])
    assert values["plain"] > 0 and values["da"] != values["plain"]
