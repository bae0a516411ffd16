import pytest
import torch

from socratic.distillers import FitNet, create_distiller
from socratic.losses import kd_loss
from socratic.models import create_model


def _pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=10), create_model("resnet14", num_classes=10)


def test_kd_losses_are_weighted_and_teacher_is_frozen() -> None:
    student, teacher = _pair()
    distiller = create_distiller("kd", student, teacher, ce_weight=0.1, kd_weight=0.9, temperature=4)
    distiller.train()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    logits, losses = distiller.forward_train(x, y)
    assert set(losses) == {"ce", "kd"}
    with torch.no_grad():
        expected_kd = 0.9 * kd_loss(student(x), teacher(x), 4.0)
        expected_ce = 0.1 * torch.nn.functional.cross_entropy(student(x), y)
    # student in train mode: BN uses batch statistics both times, so values agree
    assert losses["kd"].item() == pytest.approx(expected_kd.item(), rel=1e-5)
    assert losses["ce"].item() == pytest.approx(expected_ce.item(), rel=1e-5)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.fc.weight.grad is not None


def test_fitnet_regressor_maps_to_teacher_hint() -> None:
    student, teacher = _pair()
    distiller = create_distiller("fitnet", student, [teacher], hint_layer=2, ce_weight=1.0)
    assert isinstance(distiller, FitNet) and set(distiller.trainable_modules()) == {"student", "regressor"}
    _, losses = distiller.train().forward_train(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert set(losses) == {"ce", "hint"} and losses["hint"].item() > 0
    losses["hint"].backward()
    assert distiller.regressor.conv.weight.grad is not None


def test_fitnet_rejects_out_of_range_hint_layer() -> None:
    student, teacher = _pair()
    with pytest.raises(ValueError, match="method.hint_layer=9 is out of range"):
        create_distiller("fitnet", student, [teacher], hint_layer=9)


def test_unknown_method() -> None:
    student, teacher = _pair()
    from socratic.registry import METHODS

    available = ", ".join(METHODS.names())
    assert {"ce", "kd", "fitnet", "aver", "mtkd_rl"} <= set(METHODS.names())
    with pytest.raises(ValueError, match=f"unknown method 'magic'; valid: {available}"):
        create_distiller("magic", student, [teacher])


def test_teacher_count_and_option_checks() -> None:
    student, teacher = _pair()
    with pytest.raises(ValueError, match="method 'kd' takes 1 teacher"):
        create_distiller("kd", student, [teacher, teacher])
    with pytest.raises(ValueError, match="method.temperature must be > 0, got 0"):
        create_distiller("kd", student, teacher, temperature=0)
    with pytest.raises(TypeError):
        create_distiller("kd", student, teacher, hint_layer=2)  # not a KD option
