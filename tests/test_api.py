"""The public API for a user's own loop (socratic/api.py, docs/own-loop.md): lazy top-level names, load_teacher
and its normalisation, DistillationLoss over every registered method with plain nn.Modules, the feature taps of
plain modules, the usage checks (forgotten extras and epoch hooks), and DA with one module or a list."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import socratic
from socratic.context import TrainContext
from socratic.engine.checkpoint import CheckpointError, save_checkpoint
from socratic.engine.trainer import train_step
from socratic.models import create_model
from socratic.models.external import as_feature_model, find_feature_layers, infer_input_shape
from socratic.models.teacher import InputNormalizationWarning
from socratic.multiteacher import MultiTeacherDistiller, MultiTeacherOptions

ROOT = Path(__file__).resolve().parents[1]
RESNET20 = ROOT / "teachers" / "cifar10_jpeg" / "resnet20" / "model.pt"
MULTI = {"aver", "ebkd", "camkd", "aekd", "mtkd_rl"}


def _plain(width: int = 8, classes: int = 10, channels: int = 3) -> nn.Sequential:
    """A plain conv classifier without the zoo's feature API: maps at full, 1/2 and 1/4 resolution."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, classes))


def _batch(n: int = 8, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


# --------------------------------------------------------------------------------------- the top level
def test_import_socratic_stays_cheap_and_resolves_names_lazily() -> None:
    code = ("import sys, socratic; assert 'torch' not in sys.modules, 'import socratic imported torch'; "
            "assert 'load_teacher' in dir(socratic) and 'socratic.api' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
    from socratic.augment.disagreement import DisagreementAugmentation
    from socratic.distillers.kd import KD

    assert socratic.KD is KD and socratic.DisagreementAugmentation is DisagreementAugmentation
    assert "kd" in socratic.methods() and "mtkd_rl" in socratic.methods()
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        socratic.nope  # noqa: B018


# ------------------------------------------------------------------------------------------- teachers
def test_load_teacher_is_frozen_in_eval_mode_with_its_normalisation() -> None:
    teacher = socratic.load_teacher(RESNET20)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not teacher.model.training
    assert teacher.input_shape == (3, 32, 32) and teacher.stage_channels == [16, 16, 32, 64]
    x = torch.rand(8, 3, 16, 16)  # the zoo's CIFAR models pool adaptively: small inputs keep the test fast
    normalized = socratic.load_teacher(RESNET20, normalize=True)
    with torch.no_grad():
        manual = teacher.model((x - teacher.mean) / teacher.std)
        assert torch.allclose(normalized(x), manual, atol=1e-5)
        assert torch.allclose(normalized.forward_features(x).logits, manual, atol=1e-5)
        assert not torch.allclose(teacher.model(x), manual, atol=1e-2)  # raw pixels really do differ


def test_a_teacher_warns_once_when_the_input_statistics_do_not_match() -> None:
    raw = torch.rand(8, 3, 16, 16)  # [0, 1] pixels: std ~0.29, the teacher expects ~1
    teacher = socratic.load_teacher(RESNET20)
    with pytest.warns(InputNormalizationWarning, match=r"std \[0\.2.*normalize=True") as record:
        with torch.no_grad():
            teacher(raw), teacher(raw), teacher(raw * 2 - 1)
    assert len([w for w in record if w.category is InputNormalizationWarning]) == 1
    normalized = (raw - teacher.mean) / teacher.std
    for loaded, batch in ((socratic.load_teacher(RESNET20), normalized),
                          (socratic.load_teacher(RESNET20, normalize=True), raw)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", InputNormalizationWarning)
            with torch.no_grad():
                loaded(batch)
    with pytest.warns(InputNormalizationWarning, match=r"not \[0, 1\] pixels"):  # normalised twice
        with torch.no_grad():
            socratic.load_teacher(RESNET20, normalize=True)(normalized)


def test_load_teacher_normalize_needs_the_statistics(tmp_path: Path) -> None:
    model = create_model("resnet8", num_classes=10)
    path = tmp_path / "old.pt"
    save_checkpoint({"model": model.state_dict(), "meta": {"model_name": "resnet8", "num_classes": 10,
                                                           "in_channels": 3}}, path)
    assert socratic.load_teacher(path).checks_left == 0  # nothing to check against
    with pytest.raises(CheckpointError, match="stores no input mean/std"):
        socratic.load_teacher(path, normalize=True)


# ------------------------------------------------------------------------------ every method, any module
@pytest.mark.parametrize("method", sorted(socratic.methods()))
def test_every_method_trains_plain_modules(method: str) -> None:
    torch.manual_seed(0)
    student = _plain(8)
    teachers = [] if method == "ce" else [_plain(12), _plain(16)] if method in MULTI else _plain(16)
    options = {"camkd_feature_weights": "equal"} if method == "camkd" else {}  # confidence needs a zoo head
    if method == "reviewkd":  # a plain teacher has no pre-ReLU maps: ReviewKD distils into its post-ReLU stages
        options = {"teacher_preact": False}
    if method == "dml":  # no teacher: the peers are the user's own modules
        teachers, options = [], {"peers": [_plain(12)]}
    if method == "ofd":  # OFD needs pre-ReLU maps and the BN margins before them: zoo models only
        with pytest.raises(ValueError, match="needs the student's pre-ReLU stage maps"):
            socratic.DistillationLoss(method, teachers, student, input_shape=(3, 16, 16))
        return
    criterion = socratic.DistillationLoss(method, teachers, student, input_shape=(3, 16, 16), **options)
    optimizer = torch.optim.SGD(criterion.parameters(), lr=0.01)
    x, y = _batch()
    x = torch.cat([x, x.flip(-1)]) if method == "mlkd" else x  # MLKD: two views per label
    indices = None
    if method == "crd":  # a per-sample memory: the training set's labels, then each batch's dataset indices
        indices = torch.arange(len(y)) * 5
        labels = torch.arange(40) % 10
        labels[indices] = y
        criterion.bind_train_set(labels)
    loss = criterion(x, y, epoch=1, indices=indices)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    criterion.on_epoch_end(1)
    assert torch.isfinite(loss) and criterion.logits.shape == (8, 10) and criterion.losses
    assert student[0].weight.grad is not None and student[-1].weight.grad is not None
    assert all(p.grad is None for t in criterion.teachers for p in t.parameters())


def test_plain_modules_get_feature_taps_with_inferred_shapes() -> None:
    # a model that only runs on 28 x 28 single-channel images: the probe finds the size, not 224 x 224
    mnist = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
    assert infer_input_shape(mnist) == (1, 28, 28)
    hooked = as_feature_model(mnist)
    assert hooked.feature_layers == ["1", "3"] and hooked.stage_channels == [4, 8] and hooked.embedding_dim == 1568
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    assert infer_input_shape(mlp) == (3, 32, 32)
    assert as_feature_model(mlp).embedding_dim == 3 * 32 * 32  # the classifier's input: PKT and RKD can use it
    conv_head = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 10, 1), nn.AdaptiveAvgPool2d(1),
                              nn.Flatten())  # no nn.Linear: stages, but no embedding
    hooked = as_feature_model(conv_head, (3, 8, 8))
    assert hooked.feature_layers == ["2"] and hooked.embedding_dim is None
    assert find_feature_layers(_plain(), (3, 20, 20)) == ["2", "5", "8"]

    class Shared(nn.Module):  # a ReLU module used twice is no single place of the network: never a tap
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.relu = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()
            self.fc = nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.b(self.relu(self.a(x))))
            return self.fc(x.mean(dim=(2, 3)))

    assert find_feature_layers(Shared(), (3, 8, 8)) == ["b"]
    zoo = create_model("resnet8", num_classes=10)
    assert as_feature_model(zoo) is zoo
    teacher = socratic.load_teacher(RESNET20)
    assert as_feature_model(teacher) is teacher  # the zoo model's own taps, behind the normalisation
    student = socratic.DistillationLoss("at", teacher, _plain(), stages=[-1]).student
    assert student.input_shape == (3, 32, 32)  # from the teacher's checkpoint


def test_multi_teacher_errors_name_the_fix_for_plain_modules() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))  # no feature map at all
    teachers = [_plain(8), _plain(12)]
    with pytest.raises(ValueError, match="feature_loss needs a feature map of the student.*set feature_loss: false"):
        socratic.create_distiller("aver", mlp, teachers)
    logit_only = socratic.create_distiller("aver", mlp, teachers, feature_loss=False)  # logit terms: fine
    x, y = _batch()
    assert set(logit_only.forward_train(x, y)[1]) == {"ce", "kd"}
    with pytest.raises(ValueError, match=r"teachers.0 \(Sequential\) has no forward_features.*create_distiller"):
        MultiTeacherDistiller.from_options(MultiTeacherOptions(name="aver"), _plain(8), teachers)
    hooked = [as_feature_model(t, (3, 16, 16)) for t in teachers]
    with pytest.raises(ValueError, match=r"the student \(Sequential\) has no forward_features.*create_distiller"):
        MultiTeacherDistiller.from_options(MultiTeacherOptions(name="aver"), _plain(8), hooked)


# --------------------------------------------------------------------------------------- usage checks
def _fitnet(student: nn.Module) -> socratic.DistillationLoss:
    torch.manual_seed(0)
    return socratic.DistillationLoss("fitnet", _plain(16), student, hint_layer=-1, input_shape=(3, 16, 16))


@pytest.mark.parametrize("fused", [False, True])
def test_extras_left_out_of_the_optimiser_raise_on_the_next_step(fused: bool) -> None:
    student = _plain(8)
    criterion = _fitnet(student)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3, fused=fused)  # the regressor is missing
    x, y = _batch()
    loss = criterion(x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with pytest.raises(socratic.DistillerUsageError,
                       match=r"'fitnet' trains extra modules \(regressor\).*add_param_group"):
        criterion(x, y)
    optimizer.add_param_group({"params": criterion.extra_parameters()})
    for _ in range(2):
        loss = criterion(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_steps_that_do_not_train_the_student_are_not_checked() -> None:
    student = _plain(8)
    criterion = _fitnet(student)
    other = torch.optim.SGD(_plain(4).parameters(), lr=0.1)  # an unrelated optimiser steps meanwhile
    x, y = _batch()
    for _ in range(2):
        criterion(x, y).backward()  # gradients only, no optimiser over the student: e.g. accumulation
        other.step()
    with torch.no_grad():
        criterion(x, y)  # evaluation passes between steps are fine


def test_an_epoch_hook_that_is_not_called_raises() -> None:
    torch.manual_seed(0)
    student, teachers = _plain(8), [_plain(8), _plain(12)]
    criterion = socratic.DistillationLoss("mtkd_rl", teachers, student, input_shape=(3, 16, 16))
    optimizer = torch.optim.SGD(criterion.parameters(), lr=0.01)
    x, y = _batch()
    with pytest.raises(socratic.DistillerUsageError, match="'mtkd_rl' learns once per epoch.*epoch=e"):
        criterion(x, y)

    def epoch(e: int) -> dict[str, float]:
        for _ in range(2):
            loss = criterion(x, y, epoch=e)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return criterion.epoch_metrics()

    assert epoch(1)["w_logit_0"] == 1.0  # warm-up: every weight 1
    criterion.on_epoch_end(1)
    assert epoch(2)["w_logit_0"] != 1.0  # the agent acts after the hook
    with pytest.raises(socratic.DistillerUsageError, match=r"epoch 3 started but on_epoch_end\(2\) was not called"):
        criterion(x, y, epoch=3)


def test_the_trainers_step_satisfies_the_checks_even_when_they_run() -> None:
    """The Trainer turns the checks off; its step (optimiser over every trainable module, on_epoch_end after
    each epoch) would pass them anyway, for a method with extras and one with an epoch hook."""
    for method, teachers in (("fitnet", _plain(16)), ("mtkd_rl", [_plain(8), _plain(12)])):
        distiller = socratic.create_distiller(method, _plain(8), teachers, input_shape=(3, 16, 16))
        assert distiller.usage_checks
        params = [p for m in distiller.trainable_modules().values() for p in m.parameters()]
        optimizer = torch.optim.SGD(params, lr=0.01)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        x, y = _batch()
        for epoch in (1, 2):
            train_step(distiller, x, y, TrainContext(epoch, 0, 2, 1), optimizer, scaler)
            distiller.on_epoch_end(epoch)


# ------------------------------------------------------------------------------------------------- DA
def test_da_takes_one_module_a_sequential_or_a_list() -> None:
    torch.manual_seed(0)
    student, teacher = _plain(8), _plain(12).eval()
    x, _ = _batch()
    da = socratic.DisagreementAugmentation(prob=1.0)
    reference = da.perturb(x, student, [teacher])
    assert not torch.equal(reference, x)
    for teachers in (teacher, nn.ModuleList([teacher])):
        assert torch.equal(da(x, student, teachers), reference)
    sequential = nn.Sequential(*teacher)  # once iterated layer by layer: one teacher now
    assert torch.equal(da(x, student, sequential), reference)
