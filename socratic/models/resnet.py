"""CIFAR ResNets (basic blocks, three stages, depth = 6n + 2)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .features import FeatureModel, Features, init_weights
from .registry import register_model


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (1x1 conv-BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )
        else:
            self.downsample = None

    def preact(self, x: Tensor) -> Tensor:
        """The block's output before its final ReLU: bn2(conv2(...)) + shortcut."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.preact(x))


class CifarResNet(FeatureModel):
    """ResNet for 32x32 images (He et al., "Deep Residual Learning for Image
    Recognition", CVPR 2016, Sec. 4.2).

    Follows the CIFAR definitions used by the KD literature (CRD/RepDistiller,
    mdistiller): a 3x3 stem of ``widths[0]`` channels, then three stages of
    ``n = (depth - 2) / 6`` basic blocks with ``widths[1:]`` channels, the last
    two at stride 2, global average pooling and a linear classifier.
    ``resnet8x4`` / ``resnet32x4`` use widths ``[32, 64, 128, 256]``.

    ``Features.stages``: the stem output and the output of each of the three
    stages (``stage_channels == widths``).
    """

    classifier_name = "fc"

    def __init__(self, depth: int, widths: list[int], num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        layers = []
        for i, width in enumerate(widths[1:]):
            stride = 1 if i == 0 else 2
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, width, stride if b == 0 else 1))
                cin = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        self.stage_channels = list(widths)
        self.embedding_dim = widths[-1]

        init_weights(self)

    preact_taps = True

    def preact_bns(self) -> list[nn.BatchNorm2d]:
        """The stem's BN and the bn2 of each stage's last block (the reference's `get_bn_before_relu`)."""
        return [self.bn1, *(layer[-1].bn2 for layer in (self.layer1, self.layer2, self.layer3))]

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:
        pre = self.bn1(self.conv1(x))
        out = F.relu(pre)
        stages, preacts = [out], ([pre] if preact else None)  # pre-ReLU maps kept only when asked for
        for layer in (self.layer1, self.layer2, self.layer3):
            for block in layer[:-1]:
                out = block(out)
            pre = layer[-1].preact(out)
            out = F.relu(pre)
            stages.append(out)
            if preacts is not None:
                preacts.append(pre)
        emb = self.avgpool(out).flatten(1)
        return Features(stages=stages, embedding=emb, logits=self.fc(emb), preact_stages=preacts)


_BASE = [16, 16, 32, 64]
_X4 = [32, 64, 128, 256]


@register_model("resnet8")
def resnet8(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(8, _BASE, num_classes, in_channels)


@register_model("resnet14")
def resnet14(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(14, _BASE, num_classes, in_channels)


@register_model("resnet20")
def resnet20(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(20, _BASE, num_classes, in_channels)


@register_model("resnet32")
def resnet32(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(32, _BASE, num_classes, in_channels)


@register_model("resnet44")
def resnet44(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(44, _BASE, num_classes, in_channels)


@register_model("resnet56")
def resnet56(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(56, _BASE, num_classes, in_channels)


@register_model("resnet110")
def resnet110(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(110, _BASE, num_classes, in_channels)


@register_model("resnet8x4")
def resnet8x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(8, _X4, num_classes, in_channels)


@register_model("resnet32x4")
def resnet32x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return CifarResNet(32, _X4, num_classes, in_channels)
