"""Disagreement Augmentation: the step itself, its side effects, its options, and DA runs through the trainer."""

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from socratic.augment import DisagreementAugmentation
from socratic.augment.disagreement import disagreement_score
from socratic.bench import bench_pair, expected_da_over_kd
from socratic.config import ConfigError, config_from_dict
from socratic.engine.logger import read_metrics
from socratic.experiment import prepare_run_dir, run_dir_for, run_experiment


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SmallNet(nn.Module):
    """conv + BN + linear: small enough to be instant, with every kind of buffer BatchNorm has."""

    def __init__(self, seed: int, classes: int = 5, momentum: float | None = 0.1) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6, momentum=momentum)
        self.fc = nn.Linear(6, classes)
        with torch.no_grad():  # running statistics unlike the batch's, so using them would show
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
            self.bn.num_batches_tracked.fill_(7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def _models() -> tuple[nn.Module, nn.Module]:
    student = SmallNet(0).train()
    teacher = SmallNet(1).eval().requires_grad_(False)
    return student, teacher


def _batch(seed: int = 2) -> torch.Tensor:
    return torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("objective", ["l1_mse", "kl", "mse"])
@pytest.mark.parametrize("optimizer", ["adam", "sign", "sgd"])
def test_the_step_increases_the_chosen_objective(objective: str, optimizer: str) -> None:
    student, teacher = _models()
    x = _batch()
    lr = {"adam": 0.05, "sign": 0.05, "sgd": 5.0}[optimizer]
    da = DisagreementAugmentation(steps=2, lr=lr, objective=objective, optimizer=optimizer)
    values: list[torch.Tensor] = []
    x_new = da.perturb(x, student, [teacher], final_forward=True, values=values)
    assert len(values) == 3 and float(values[0]) > 0
    assert float(values[0]) < float(values[1]) < float(values[2])
    with torch.no_grad(), torch.autocast("cpu", enabled=False):
        frozen = copy.deepcopy(student)
        for module in frozen.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.track_running_stats = False
        final = float(disagreement_score(frozen(x_new), teacher(x_new), objective))
        assert final == pytest.approx(float(values[2]), rel=1e-5)


def test_first_adam_step_matches_the_closed_form() -> None:
    torch.manual_seed(0)
    student, teacher = nn.Linear(6, 4), nn.Linear(6, 4).requires_grad_(False)
    x = torch.randn(5, 6)
    x_req = x.clone().requires_grad_(True)
    loss = -F.mse_loss(F.normalize(student(x_req), p=1.0, dim=1), F.normalize(teacher(x_req), p=1.0, dim=1))
    (g,) = torch.autograd.grad(loss, x_req)
    lr = 0.01778
    adam = DisagreementAugmentation(lr=lr, prob=1.0)(x, student, [teacher])
    torch.testing.assert_close(adam, x - lr * g / (g.abs() + 1e-8), rtol=1e-6, atol=1e-7)
    sign = DisagreementAugmentation(lr=lr, prob=1.0, optimizer="sign")(x, student, [teacher])
    torch.testing.assert_close(sign, x - lr * g.sign())
    sgd = DisagreementAugmentation(lr=lr, prob=1.0, optimizer="sgd")(x, student, [teacher])
    torch.testing.assert_close(sgd, x - lr * g)
    assert all(p.grad is None for p in student.parameters())
    assert not (adam - x).abs().max() > lr * (1 + 1e-6)


def test_weights_grads_and_batchnorm_buffers_are_untouched() -> None:
    for momentum in (0.1, None):  # exponential and cumulative running averages
        student = SmallNet(0, momentum=momentum).train()
        teacher = SmallNet(1).eval().requires_grad_(False)
        for p in student.parameters():
            p.grad = torch.full_like(p, 0.5)
        def state() -> dict[str, torch.Tensor]:
            return {**student.state_dict(), **{f"t.{k}": v for k, v in teacher.state_dict().items()}}

        before = {k: v.clone() for k, v in state().items()}
        grads = [p.grad.clone() for p in student.parameters()]
        x = _batch()
        seen: list[torch.Tensor] = []
        da = DisagreementAugmentation(steps=2, prob=1.0, after_every=1)
        x_new = da.perturb(x, student, [teacher], final_forward=True, observe=lambda k, s, t: seen.append(s))
        assert not torch.equal(x_new, x)
        after = state()
        assert [k for k in before if not torch.equal(before[k], after[k])] == []
        assert all(torch.equal(g, p.grad) for g, p in zip(grads, student.parameters()))
        assert all(p.grad is None for p in teacher.parameters())
        assert student.training and not teacher.training and student.bn.track_running_stats
        # the student ran on batch statistics: its logits are those of train-mode BN on this batch
        reference = copy.deepcopy(student)
        with torch.no_grad():
            torch.testing.assert_close(seen[0], reference(x))
            assert not torch.allclose(seen[0], reference.eval()(x))


def test_bf16_autocast_sees_each_updated_batch() -> None:
    student, teacher = _models()
    values: list[torch.Tensor] = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_new = DisagreementAugmentation(steps=3, lr=0.05).perturb(_batch(), student, [teacher], final_forward=True,
                                                                    values=values)
    assert x_new.dtype == torch.float32
    # a stale autocast copy of the input would repeat the first value
    assert float(values[0]) < float(values[1]) < float(values[2]) < float(values[3])


def test_coin_flip_rng_and_epoch_metrics() -> None:
    student, teacher = _models()
    x = _batch()
    state = torch.get_rng_state()
    never = DisagreementAugmentation(prob=0.0)
    assert never(x, student, [teacher]) is x
    assert torch.equal(torch.get_rng_state(), state)  # prob 0: no draw at all
    assert never.epoch_metrics() == {"da_perturbed": 0.0}

    da = DisagreementAugmentation(prob=0.5, after_every=2)
    torch.manual_seed(123)
    draws = [bool(torch.rand(1) < 0.5) for _ in range(12)]
    torch.manual_seed(123)
    outputs = [da(x, student, [teacher]) for _ in range(12)]
    assert [out is not x for out in outputs] == draws  # one draw per batch from the global RNG
    metrics = da.epoch_metrics()
    perturbed = sum(draws)
    assert metrics["da_perturbed"] == pytest.approx(perturbed / 12)
    assert metrics["da_disagreement_after"] > metrics["da_disagreement_before"] > 0
    assert metrics["da_disagreement_gain"] > 1 and metrics["da_abs_dx"] == pytest.approx(0.01778, rel=0.05)
    assert da.epoch_metrics() == {}  # reset


def test_clamp_keeps_pixels_in_range() -> None:
    student, teacher = _models()
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    pixels = torch.rand(8, 3, 6, 6, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    da = DisagreementAugmentation(steps=3, lr=0.5, prob=1.0, clamp=[0.1, 0.9], mean=mean, std=std)
    out = da((pixels - m) / s, student, [teacher]) * s + m
    assert out.min() >= 0.1 - 1e-6 and out.max() <= 0.9 + 1e-6
    assert ((out - 0.1).abs() < 1e-5).any() and ((out - 0.9).abs() < 1e-5).any()  # it did clamp
    with pytest.raises(ValueError, match="da.clamp .* needs the dataset's mean and std"):
        DisagreementAugmentation(clamp=[0.0, 1.0])


def test_several_teachers_mean_or_one() -> None:
    student, t0 = _models()
    t1 = SmallNet(3).eval().requires_grad_(False)
    x = _batch()

    class Mean(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (t0(x) + t1(x)) / 2

    run = lambda target, teachers: DisagreementAugmentation(prob=1.0, target=target)(x, student, teachers)  # noqa: E731
    torch.testing.assert_close(run("mean", [t0, t1]), run("mean", [Mean()]))
    torch.testing.assert_close(run(1, [t0, t1]), run("mean", [t1]))
    assert not torch.equal(run(0, [t0, t1]), run(1, [t0, t1]))
    with pytest.raises(ValueError, match="da.target=2 but there are only 2 teacher"):
        run(2, [t0, t1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prob": 1.5}, "da.prob must be a probability in [0, 1], got 1.5"),
        ({"prob": -0.1}, "da.prob must be a probability in [0, 1]"),
        ({"lr": 0.0}, "da.lr must be a number > 0"),
        ({"lr": -1.0}, "da.lr must be a number > 0"),
        ({"steps": -1}, "da.steps must be an integer >= 0"),
        ({"objective": "l2"}, "da.objective: 'l2' is not one of l1_mse, kl, mse"),
        ({"optimizer": "rmsprop"}, "da.optimizer: 'rmsprop' is not one of adam, sign, sgd"),
        ({"temperature": 0}, "da.temperature must be a number > 0"),
        ({"clamp": [0.8, 0.2]}, "da.clamp must be null or [low, high]"),
        ({"target": "max"}, "da.target must be 'mean'"),
    ],
)
def test_bad_options_name_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        DisagreementAugmentation(**kwargs)
    assert message in str(err.value)
    with pytest.raises(ConfigError) as err:  # the same checks on the config's da section
        config_from_dict({"da": kwargs})
    assert message in str(err.value)


def test_config_section() -> None:
    kd = {"method": {"name": "kd"}, "teachers": [{"name": "resnet8", "checkpoint": "t.pt"}]}
    config = config_from_dict({**kd, "da": {"enabled": True}})
    assert (config.da.steps, config.da.lr, config.da.prob, config.da.objective, config.da.optimizer) == (
        1, 0.01778, 0.7374, "l1_mse", "adam")
    assert config.da.clamp is None and config.da.target == "mean" and config.da.temperature == 1.0
    with pytest.raises(ConfigError, match="da.enabled: Disagreement Augmentation needs a teacher"):
        config_from_dict({"da": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"da.target=1 but the config has 1 model\(s\) in teachers"):
        config_from_dict({**kd, "da": {"enabled": True, "target": 1}})
    with pytest.raises(ConfigError, match="unknown config key 'da.alpha'"):
        config_from_dict({**kd, "da": {"alpha": 0.1}})


def test_a_run_saved_before_the_da_section_still_resumes(tmp_path: Path) -> None:
    config = config_from_dict({"output_dir": str(tmp_path)})
    run_dir = prepare_run_dir(config, resume=False, overwrite=False)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    del saved["da"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    assert prepare_run_dir(config, resume=True, overwrite=False) == run_dir
    changed = config_from_dict({"output_dir": str(tmp_path), "da": {"prob": 0.5}})
    with pytest.raises(ConfigError, match="differs from the saved one in da"):
        prepare_run_dir(changed, resume=True, overwrite=False)


@pytest.fixture()
def kd_config(run_config: dict, tmp_path: Path) -> dict:
    """A one-epoch KD run on 100 tiny images with an (untrained) resnet8 teacher checkpoint."""
    from socratic.engine.checkpoint import save_checkpoint
    from socratic.models import create_model

    torch.manual_seed(5)
    teacher = create_model("resnet8", num_classes=10, in_channels=1)
    path = tmp_path / "teacher.pt"
    save_checkpoint({"model": teacher.state_dict(), "meta": {"model_name": "resnet8", "num_classes": 10}}, path)
    return {**run_config, "name": "kd", "teachers": [{"name": "resnet8", "checkpoint": str(path)}],
            "method": {"name": "kd"}, "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
            "optim": {**run_config["optim"], "epochs": 1},
            "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}


def _weights(config: dict) -> dict[str, torch.Tensor]:
    path = run_dir_for(config_from_dict(config)) / "checkpoints" / "last.pt"
    return torch.load(path, weights_only=True)["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prob_zero_is_exactly_the_kd_run_and_seeded_da_runs_repeat(kd_config: dict) -> None:
    runs = {
        "kd": kd_config,
        "da0": {**kd_config, "name": "da0", "da": {"enabled": True, "prob": 0.0}},
        "da_a": {**kd_config, "name": "da_a", "da": {"enabled": True, "after_every": 1}},
        "da_b": {**kd_config, "name": "da_b", "da": {"enabled": True, "after_every": 1}},
        "da1": {**kd_config, "name": "da1", "da": {"enabled": True, "prob": 1.0}},
    }
    for config in runs.values():
        run_experiment(config_from_dict(config))
    weights = {name: _weights(config) for name, config in runs.items()}
    assert _same(weights["kd"], weights["da0"])
    assert _same(weights["da_a"], weights["da_b"])
    assert not _same(weights["kd"], weights["da1"])
    metrics = {name: read_metrics(run_dir_for(config_from_dict(c)) / "metrics.jsonl")[-1] for name, c in runs.items()}
    assert metrics["da0"]["da_perturbed"] == 0.0 and "da_perturbed" not in metrics["kd"]
    assert metrics["da0"]["train_loss"] == metrics["kd"]["train_loss"]
    a, b = metrics["da_a"], metrics["da_b"]
    measured = ("time", "per_s", "memory")  # wall time, speed and process RSS are the machine's, not the run's
    assert {k: v for k, v in a.items() if not any(m in k for m in measured)} == {
        k: v for k, v in b.items() if not any(m in k for m in measured)}
    assert 0 < a["da_perturbed"] < 1 and a["da_disagreement_after"] > 0 and a["da_abs_dx"] > 0
    assert not _same(weights["kd"], weights["da_a"])
    assert metrics["da1"]["da_perturbed"] == 1.0 and "da_disagreement_after" in metrics["da1"]  # after_every 10


def test_bench_reports_the_da_step() -> None:
    result = bench_pair("resnet8", "resnet8", batch_size=4, steps=1, warmup=0, num_classes=10, device="cpu")
    assert result["da_step_img_per_s"] > 0 and result["da_over_kd_cost"] > 0
    assert result["da_over_kd_expected"] == pytest.approx(expected_da_over_kd(1.0, 1.0))
    assert expected_da_over_kd(1.0, 1.0) == pytest.approx(2.0)  # KD 4 units, DA adds 4
    assert expected_da_over_kd(1.0, 2.0, steps=2) == pytest.approx(1 + 12 / 5)


def test_a_resumed_da_run_reaches_the_same_weights(kd_config: dict, stopped_and_resumed) -> None:
    config = {**kd_config, "da": {"enabled": True}, "optim": {**kd_config["optim"], "epochs": 2}}
    full, cut = stopped_and_resumed(config, epoch=2, step=1)
    weights = [torch.load(d / "checkpoints" / "last.pt", weights_only=True)["model"] for d in (full, cut)]
    assert _same(*weights)


def test_composes_with_every_distiller_that_has_a_teacher() -> None:
    from socratic.context import TrainContext
    from socratic.distillers import create_distiller, list_distillers
    from socratic.models import create_model
    from socratic.registry import METHODS

    torch.manual_seed(0)
    student, teacher = create_model("resnet8", num_classes=10), create_model("resnet14", num_classes=10)
    second = create_model("resnet8", num_classes=10)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    da = DisagreementAugmentation(prob=1.0)
    for name in (n for n in list_distillers() if METHODS.get(n).meta["teachers"][1] != 0):  # DA needs a teacher
        meta = METHODS.get(name).meta
        teachers = [teacher, second] if meta["teachers"][0] >= 2 else [teacher]  # multi-teacher methods need >= 2
        distiller = create_distiller(name, student, teachers).train()
        indices = None
        if meta.get("sample_indices"):  # CRD: a memory bank over the training set, indexed per sample
            distiller.bind_train_set(torch.arange(8) % 4)
            indices = torch.arange(4)
        views = torch.cat([x] * meta.get("views", 1))  # MLKD: the two_view layout, 2B images
        x_new = da(views, distiller.student, distiller.teachers)
        ctx = TrainContext(epoch=1, epochs=2, steps_per_epoch=1, indices=indices)
        logits, losses = distiller.forward_train(x_new, y, ctx)
        assert not torch.equal(x_new, views) and logits.shape == (4, 10) and all(torch.isfinite(v) for v in losses.values())
        assert not distiller.teacher.training


def test_fp16_autocast_scales_the_tiny_input_gradients() -> None:
    from socratic.models import create_model

    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=100).train()
    teacher = create_model("resnet14", num_classes=100).eval().requires_grad_(False)
    x = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    da = DisagreementAugmentation(prob=1.0)
    step32 = da(x, student, [teacher]) - x
    with torch.autocast("cpu", dtype=torch.float16):
        step16 = da(x, student, [teacher]) - x
    # without the loss scale nearly every input gradient underflows in fp16 (mean step 0.06x the fp32 one)
    assert step16.abs().mean() > 0.5 * step32.abs().mean() > 0
    assert torch.corrcoef(torch.stack([step16.flatten(), step32.flatten()]))[0, 1] > 0.9
