"""Tests of socratic.models: the CIFAR zoo, the registry, external wrappers, summaries."""

from __future__ import annotations

import copy
import functools
import sys
import types

import pytest
import torch
from torch import nn

from socratic.models import (
    Features,
    count_flops,
    count_parameters,
    create_model,
    describe_models,
    list_models,
    register_model,
)

# Parameter counts for num_classes=100, in_channels=3: (exact count, exact?) --
# exact where the reference definitions give the number, else within 0.5%.
PARAM_COUNTS = {
    "resnet8": (83_892, False),
    "resnet14": (181_108, False),
    "resnet20": (278_324, True),
    "resnet32": (473_000, False),
    "resnet44": (667_188, False),
    "resnet56": (861_620, True),
    "resnet110": (1_736_564, True),
    "resnet8x4": (1_233_540, True),
    "resnet32x4": (7_433_860, True),
    "vgg8_bn": (3_965_028, True),
    "vgg11_bn": (9_277_284, False),
    "vgg13_bn": (9_462_180, True),
    "vgg16_bn": (14_774_436, False),
    "vgg19_bn": (20_086_692, False),
    "ShuffleV1": (949_000, False),
    "ShuffleV2": (1_355_528, True),
    "mobile_half": (813_000, False),
    "mobilenetv2": (2_353_000, False),
    "wrn_16_1": (180_916, False),
    "wrn_16_2": (703_000, False),
    "wrn_40_1": (570_000, False),
    "wrn_40_2": (2_255_000, False),
    "wrn_28_4": (5_872_000, False),
    "regnetx_200mf": (2_355_000, False),
    "regnetx_400mf": (4_814_000, False),
    "regnety_400mf": (5_749_000, False),
    "convnet": (504_420, True),  # depth 3, width 128, instance norm: MTT/MKDT's ConvNet
    "resnet18_cifar": (11_220_132, True),  # torchvision's count with the 3x3 stem, 100 classes
}
ZOO = sorted(PARAM_COUNTS)


@functools.lru_cache(maxsize=None)
def _model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes, in_channels=in_channels).eval()


def _check_features(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    with torch.no_grad():
        logits = model(x)
        feats = model.forward_features(x)
    assert isinstance(feats, Features)
    assert logits.shape == (x.shape[0], num_classes)
    assert len(feats.stages) == len(model.stage_channels) > 0
    for stage, channels in zip(feats.stages, model.stage_channels):
        assert stage.dim() == 4 and stage.shape[:2] == (x.shape[0], channels)
    assert feats.embedding.shape == (x.shape[0], model.embedding_dim)
    assert torch.allclose(feats.logits, logits, atol=1e-6)
    assert torch.isfinite(logits).all()


def test_registry_lists_the_zoo():
    assert list_models() == sorted(ZOO)
    assert {"vgg8", "vgg13", "vgg19", "shufflev1"} <= set(list_models(include_aliases=True))


@pytest.mark.parametrize("name", ZOO)
def test_cifar_input(name):
    model = _model(name, 100, 3)
    _check_features(model, torch.randn(2, 3, 32, 32), 100)


@pytest.mark.parametrize("name", ZOO)
def test_fashion_mnist_input(name):
    model = _model(name, 10, 1)
    _check_features(model, torch.randn(2, 1, 28, 28), 10)


@pytest.mark.parametrize("name", ZOO)
def test_parameter_count(name):
    expected, exact = PARAM_COUNTS[name]
    got = count_parameters(_model(name, 100, 3))
    if exact:
        assert got == expected
    else:
        assert abs(got - expected) <= 0.005 * expected, got


@pytest.mark.parametrize("alias,name", [("vgg8", "vgg8_bn"), ("vgg11", "vgg11_bn"), ("vgg13", "vgg13_bn"),
                                        ("vgg16", "vgg16_bn"), ("vgg19", "vgg19_bn"), ("shufflev2", "ShuffleV2")])
def test_aliases(alias, name):
    model = create_model(alias, num_classes=100)
    assert type(model) is type(_model(name, 100, 3))
    assert count_parameters(model) == count_parameters(_model(name, 100, 3))


def test_unknown_name():
    with pytest.raises(ValueError, match="resnet9000") as info:
        create_model("resnet9000", num_classes=10)
    assert "resnet8x4" in str(info.value) and "wrn_40_2" in str(info.value)


def test_register_model_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet8")(lambda num_classes, in_channels=3: nn.Linear(1, 1))


def test_stages_carry_gradients():
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10).train()
    feats = model.forward_features(torch.randn(2, 3, 32, 32))
    (feats.stages[1].sum() + feats.embedding.sum()).backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0


def test_kwargs_reach_constructor():
    model = create_model("wrn_16_1", num_classes=10, drop_rate=0.3)
    assert model.block1[0].drop_rate == 0.3


# -- external models ----------------------------------------------------------------


class _TinyResNet(nn.Module):
    """A small torchvision-like ResNet: conv1, layer1..layer4, avgpool, fc."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 8, 3, stride=2, padding=1)
        widths = [8, 16, 32, 64]
        cin = 8
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(nn.Conv2d(cin, w, 3, stride, 1), nn.ReLU()))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


@pytest.fixture
def fake_torchvision(monkeypatch):
    calls = []

    def get_model(name, num_classes=1000, **kwargs):
        calls.append((name, num_classes, kwargs))
        return _TinyResNet(num_classes)

    tv = types.ModuleType("torchvision")
    tv.models = types.SimpleNamespace(get_model=get_model)
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    return calls


def test_torchvision_wrapper(fake_torchvision):
    model = create_model("torchvision:resnet18", num_classes=10).eval()
    assert fake_torchvision == [("resnet18", 10, {})]
    assert model.stage_channels == [8, 16, 32, 64]
    assert model.embedding_dim == 64
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert [tuple(s.shape) for s in feats.stages] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]
    assert feats.embedding.shape == (2, 64)
    assert torch.allclose(feats.logits, logits) and logits.shape == (2, 10)
    # embedding really is the classifier's input
    assert torch.allclose(model.model.fc(feats.embedding), logits, atol=1e-6)


def test_torchvision_wrapper_options(fake_torchvision):
    model = create_model("torchvision:anything", num_classes=5, in_channels=1,
                         feature_layers=["conv1", "layer2"], input_size=(1, 32, 32)).eval()
    assert model.stage_channels == [8, 16]
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 1, 28, 28))
    assert [s.shape[1] for s in feats.stages] == [8, 16] and feats.logits.shape == (2, 5)
    # a deep copy (EMA teachers, checkpoints) gets its own working hooks
    clone = copy.deepcopy(model)
    with torch.no_grad():
        feats2 = clone.forward_features(torch.randn(2, 1, 28, 28))
    assert [s.shape[1] for s in feats2.stages] == [8, 16]
    with pytest.raises(ValueError, match="nope"):
        create_model("torchvision:x", num_classes=5, feature_layers=["nope"])


def test_timm_wrapper(monkeypatch):
    def create(name, num_classes=1000, in_chans=3, pretrained=False):
        model = _TinyResNet(num_classes, in_chans)
        model.feature_info = [dict(num_chs=8, reduction=2, module="conv1"),
                              dict(num_chs=32, reduction=8, module="layer3")]
        model.pretrained_cfg = {"input_size": (3, 32, 32)}
        model.get_classifier = lambda: model.fc
        return model

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=create))
    model = create_model("timm:tiny", num_classes=7, in_channels=1).eval()
    assert model.stage_channels == [8, 32] and model.embedding_dim == 64
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 1, 28, 28))
    assert feats.logits.shape == (2, 7) and feats.embedding.shape == (2, 64)


def test_missing_optional_dependency(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ImportError, match=r'pip install "socratic-kd\[vision\]"'):
        create_model("torchvision:resnet18", num_classes=10)
    with pytest.raises(ImportError, match=r'pip install "socratic-kd\[vision\]"'):
        create_model("timm:resnet18", num_classes=10)


# -- summaries ----------------------------------------------------------------------


def test_count_flops():
    small = count_flops(_model("resnet8x4", 100, 3))
    big = count_flops(_model("resnet32x4", 100, 3))
    assert 0 < small < big
    model = create_model("resnet8", num_classes=10).train()
    assert count_flops(model, input_size=(3, 28, 28)) > 0 and model.training  # mode restored


def test_describe_models():
    rows = describe_models(["resnet8", "wrn_16_1"], num_classes=10, input_size=(1, 28, 28))
    assert [r["name"] for r in rows] == ["resnet8", "wrn_16_1"]
    for row in rows:
        assert row["params"] == count_parameters(create_model(row["name"], 10, in_channels=1))
        assert row["flops"] > 0
