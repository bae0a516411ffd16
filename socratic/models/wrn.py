"""CIFAR Wide Residual Networks (depth = 6n + 4, widths 16, 16k, 32k, 64k)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .features import FeatureModel, Features, init_weights
from .registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, plus an identity or 1x1-conv shortcut.

    When the shape changes, the shortcut is taken from the pre-activated input
    (as in the WRN reference code).
    """

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.same_shape = cin == cout and stride == 1
        self.shortcut = (
            None if self.same_shape else nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.same_shape else self.shortcut(act))


class WideResNet(FeatureModel):
    """Wide Residual Network for 32x32 images (Zagoruyko & Komodakis, "Wide
    Residual Networks", BMVC 2016).

    Follows the CIFAR definitions used by the KD literature (CRD/RepDistiller,
    mdistiller): a 3x3 stem of 16 channels, three groups of
    ``n = (depth - 4) / 6`` pre-activation blocks with ``16k, 32k, 64k``
    channels (the last two at stride 2), a final BN-ReLU, global average
    pooling and a linear classifier.

    ``Features.stages``: the stem output and the output of each group (the
    last one before the final BN-ReLU), ``stage_channels == [16, 16k, 32k, 64k]``.
    """

    classifier_name = "fc"

    def pre_logits(self, last_stage: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(F.relu(self.bn(last_stage)), 1).flatten(1)

    def __init__(
        self, depth: int, widen_factor: int, num_classes: int, in_channels: int = 3, drop_rate: float = 0.0
    ):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        groups = []
        cin = widths[0]
        for i, width in enumerate(widths[1:]):
            stride = 1 if i == 0 else 2
            blocks = []
            for b in range(n):
                blocks.append(PreActBlock(cin, width, stride if b == 0 else 1, drop_rate))
                cin = width
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(cin)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self.stage_channels = widths
        self.embedding_dim = cin

        init_weights(self, zero_linear_bias=True)

    def forward_features(self, x: Tensor) -> Features:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        emb = self.avgpool(F.relu(self.bn(f3))).flatten(1)
        return Features(stages=[f0, f1, f2, f3], embedding=emb, logits=self.fc(emb))


@register_model("wrn_16_1")
def wrn_16_1(num_classes: int, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    return WideResNet(16, 1, num_classes, in_channels, drop_rate)


@register_model("wrn_16_2")
def wrn_16_2(num_classes: int, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    return WideResNet(16, 2, num_classes, in_channels, drop_rate)


@register_model("wrn_40_1")
def wrn_40_1(num_classes: int, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    return WideResNet(40, 1, num_classes, in_channels, drop_rate)


@register_model("wrn_40_2")
def wrn_40_2(num_classes: int, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    return WideResNet(40, 2, num_classes, in_channels, drop_rate)


@register_model("wrn_28_4")
def wrn_28_4(num_classes: int, in_channels: int = 3, drop_rate: float = 0.0) -> WideResNet:
    return WideResNet(28, 4, num_classes, in_channels, drop_rate)
