"""DA at its cost floor and adaptive DA (da.select): the perturbed batch is bit-identical to the implementation
before the perturbed step was reworked, select 1 is exactly the paper's DA, the selection picks the right samples,
the teacher's clean logits are reused, and `socratic bench` reports its headroom."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from socratic.augment import DisagreementAugmentation
from socratic.bench import bench_pair, expected_da_over_kd
from socratic.config import ConfigError, config_from_dict
from socratic.context import KnownTeacherLogits, TrainContext
from socratic.distillers import create_distiller
from socratic.engine.trainer import train_step
from socratic.losses import tempered_kl_per_sample
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reference_perturb(x: torch.Tensor, student: nn.Module, teacher: nn.Module, *, steps: int = 1,
                       lr: float = 0.01778, objective: str = "l1_mse", optimizer: str = "adam",
                       temperature: float = 1.0) -> torch.Tensor:
    """The perturbed step as socratic computed it before it was reworked (a copy kept here on purpose): fresh
    Adam on a clone of the batch, the models on a view of it, input gradient only, BatchNorm on batch statistics
    without updating its buffers."""
    x_adv = x.detach().clone().requires_grad_(True)
    adam = torch.optim.Adam([x_adv], lr=lr) if optimizer == "adam" else None
    toggled = [m for m in student.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    for module in toggled:
        module.track_running_stats = False
    try:
        with torch.enable_grad():
            for _ in range(steps):
                x_in = x_adv.view_as(x_adv)
                s, t = student(x_in).float(), teacher(x_in).float()
                if objective == "l1_mse":
                    per_sample = (F.normalize(s, p=1.0, dim=1) - F.normalize(t, p=1.0, dim=1)).pow(2).mean(dim=1)
                elif objective == "mse":
                    per_sample = (s - t).pow(2).mean(dim=1)
                else:
                    per_sample = tempered_kl_per_sample(s, t, temperature)
                (grad,) = torch.autograd.grad(-per_sample.mean(), x_adv)
                with torch.no_grad():
                    if adam is not None:
                        x_adv.grad = grad
                        adam.step()
                        x_adv.grad = None
                    elif optimizer == "sign":
                        x_adv.sub_(grad.sign(), alpha=lr)
                    else:
                        x_adv.sub_(grad, alpha=lr)
    finally:
        for module in toggled:
            module.track_running_stats = True
    return x_adv.detach()


def _pair(classes: int = 10) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=classes).train()
    teacher = create_model("resnet14", num_classes=classes).eval().requires_grad_(False)
    return student, teacher


def _images(batch: int = 8, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("objective,optimizer,steps", [("l1_mse", "adam", 1), ("l1_mse", "adam", 2),
                                                       ("kl", "sign", 1), ("mse", "sgd", 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_perturbed_batch_is_bit_identical_to_the_reference(objective: str, optimizer: str, steps: int,
                                                               channels_last: bool) -> None:
    student, teacher = _pair()
    x = _images()
    if channels_last:
        student, teacher = student.to(memory_format=torch.channels_last), teacher.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    lr = 0.5 if optimizer == "sgd" else 0.01778
    expected = _reference_perturb(x, student, teacher, steps=steps, lr=lr, objective=objective, optimizer=optimizer)
    da = DisagreementAugmentation(steps=steps, lr=lr, prob=1.0, objective=objective, optimizer=optimizer, after_every=1)
    got = da(x, student, [teacher])
    assert not torch.equal(got, x)
    assert torch.equal(got, expected)
    assert da.moved_rows() is None and da.known_teacher_logits() is None


def test_select_one_is_exactly_the_papers_da_through_the_training_step() -> None:
    """select 1 (the default) takes the same training step as the reference DA: same weights, bit for bit."""
    weights = []
    for augmentation in ("reference", "select1"):
        student, teacher = _pair()
        distiller = create_distiller("kd", student, [teacher]).train()
        optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        da = (DisagreementAugmentation(prob=1.0, select=1.0) if augmentation == "select1"
              else lambda x, s, ts: _reference_perturb(x, s, ts[0]))
        for step in range(2):
            train_step(distiller, _images(seed=step), torch.arange(8) % 10, TrainContext(), optimizer, scaler,
                       augmentation=da)
        weights.append({k: v.clone() for k, v in student.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


class _Scale(nn.Module):
    """x -> factor * x (a linear map, so it has input gradients)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x


@pytest.mark.parametrize("select_by", ["largest", "smallest"])
def test_the_selection_moves_the_samples_of_largest_or_smallest_disagreement(select_by: str) -> None:
    # student 2x, teacher x: the raw-logit MSE of sample i is mean(x_i^2), i.e. the square of the row's scale
    scales = torch.tensor([3.0, 0.5, 5.0, 1.0, 4.0, 2.0])
    x = scales[:, None] * torch.ones(6, 4)
    da = DisagreementAugmentation(prob=1.0, objective="mse", optimizer="sign", lr=0.1, select=0.5,
                                  select_by=select_by, after_every=0)
    x_new = da(x, _Scale(2.0), [_Scale(1.0)])
    expected = [0, 2, 4] if select_by == "largest" else [1, 3, 5]
    assert da.moved_rows().tolist() == expected
    changed = (x_new != x).any(dim=1).nonzero().flatten().tolist()
    assert changed == expected
    # the moved samples got the sign step that increases the disagreement (|x| grows where student = 2 teacher)
    torch.testing.assert_close(x_new[expected], x[expected] + 0.1)
    known = da.known_teacher_logits()
    assert known.rows.tolist() == sorted(set(range(6)) - set(expected)) and known.batch is x_new
    torch.testing.assert_close(known.logits, x[known.rows])


def test_the_teacher_logits_of_the_selection_forward_are_reused() -> None:
    student, teacher = _pair()
    seen: list[int] = []
    teacher.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    distiller = create_distiller("kd", student, [teacher]).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x, y = _images(batch=16), torch.arange(16) % 10
    for select, rows in ((1.0, [16, 16]), (0.25, [16, 4, 4]), (0.5, [16, 8, 8])):
        seen.clear()
        da = DisagreementAugmentation(prob=1.0, select=select, after_every=0)
        _, losses = train_step(distiller, x, y, TrainContext(), optimizer, scaler, augmentation=da)
        assert seen == rows  # teacher rows: selection forward (all), the DA step and the loss (moved ones only)
        if select < 1:
            # the reused logits give the KD loss the teacher gives on the whole perturbed batch
            x_new = da(x, student, [teacher])
            reused = da.known_teacher_logits().complete(teacher, x_new)
            with torch.no_grad():
                torch.testing.assert_close(reused, teacher(x_new), rtol=1e-5, atol=1e-5)
    assert KnownTeacherLogits(x, teacher, torch.tensor([0]), torch.zeros(1, 10)).complete(teacher, x.clone()) is None


def test_select_keys_are_checked_for_classification_and_rl() -> None:
    from socratic.rl.config import RLDAConfig

    assert config_from_dict({"da": {"select": 0.25, "select_by": "smallest"}}).da.select == 0.25
    for values, message in (({"select": 0}, "da.select must be a number in (0, 1]"),
                            ({"select": 1.5}, "da.select must be a number in (0, 1]"),
                            ({"select_by": "median"}, "da.select_by: 'median' is not one of largest, smallest")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
            config_from_dict({"da": values})
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
            RLDAConfig(**values).check("da")
    assert RLDAConfig().select == 1.0 and RLDAConfig().select_by == "largest"


def test_rl_distillation_recomputes_only_the_moved_states_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    import socratic.rl.distill as distill

    torch.manual_seed(0)
    student, teacher = nn.Linear(5, 3), nn.Linear(5, 3).requires_grad_(False)
    states, targets = torch.randn(8, 5), torch.randn(8, 3)  # buffer targets unlike the teacher's own outputs
    da = DisagreementAugmentation(prob=1.0, lr=0.01, objective="kl", select=0.25, target=0, after_every=0)
    pd = distill.PolicyDistillation.__new__(distill.PolicyDistillation)  # only what train_step uses
    pd.teacher, pd.student, pd.da, pd.loss, pd.temperature = teacher, student, da, "mse", 1.0
    pd.action_dim = None  # discrete actions
    pd.device, pd.updates = torch.device("cpu"), 0
    pd.optimizer = torch.optim.SGD(student.parameters(), lr=0.0)
    used: list[torch.Tensor] = []
    original = distill.policy_loss
    monkeypatch.setattr(distill, "policy_loss", lambda name, q, t, tau: (used.append(t.clone()), original(name, q, t, tau))[1])
    pd.train_step(states, targets)
    moved = da.moved_rows()
    kept = torch.tensor([i for i in range(8) if i not in moved.tolist()])
    assert moved.numel() == 2 and torch.equal(used[0][kept], targets[kept])
    assert not torch.equal(used[0][moved], targets[moved])


def test_bench_reports_flops_and_the_fraction_of_the_matmul_rate() -> None:
    result = bench_pair("resnet8", "resnet8", batch_size=4, steps=1, warmup=0, num_classes=10, device="cpu",
                        select=0.5)
    assert result["matmul_gflop_per_s"] > 0 and result["da_select"] == 0.5
    for name in ("teacher_forward", "student_step", "kd_step", "da_step"):
        assert result[f"{name}_gflop_per_img"] > 0 and 0 < result[f"{name}_of_matmul"]
        flops = result[f"{name}_gflop_per_img"] * result[f"{name}_img_per_s"] / result["matmul_gflop_per_s"]
        assert result[f"{name}_of_matmul"] == pytest.approx(flops)
    # counted FLOPs: a KD step is the teacher's forward plus the student's step, exactly
    assert result["kd_step_gflop_per_img"] == pytest.approx(result["teacher_forward_gflop_per_img"]
                                                            + result["student_step_gflop_per_img"], rel=1e-9)
    # teacher = student here: F forward, selection 2F, steps 2 * 0.5 * 2F, the loss's teacher on half: 0.5F
    assert result["da_over_kd_expected"] == pytest.approx(expected_da_over_kd(1.0, 1.0, select=0.5))
    assert expected_da_over_kd(1.0, 1.0, select=0.5) == pytest.approx((4 + 2 + 2 - 0.5) / 4)
    assert result["da_over_kd_flops"] == pytest.approx(
        result["da_step_gflop_per_img"] / result["kd_step_gflop_per_img"])
