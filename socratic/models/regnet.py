"""CIFAR RegNets (X and Y), as used by MTKD-RL."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .features import FeatureModel, Features
from .registry import register_model

CONFIGS: dict[str, dict] = {
    "regnetx_200mf": dict(depths=(1, 1, 4, 7), widths=(24, 56, 152, 368), group_width=8, se_ratio=0.0),
    "regnetx_400mf": dict(depths=(1, 2, 7, 12), widths=(32, 64, 160, 384), group_width=16, se_ratio=0.0),
    "regnety_400mf": dict(depths=(1, 2, 7, 12), widths=(32, 64, 160, 384), group_width=16, se_ratio=0.25),
}
STRIDES = (1, 1, 2, 2)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, kernel_size=1)
        self.expand = nn.Conv2d(squeezed, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.expand(F.relu(self.reduce(s))).sigmoid()


class XBlock(nn.Module):
    """1x1, grouped 3x3 (groups of ``group_width`` channels), optional SE, 1x1; residual."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int,
                 bottleneck_ratio: float = 1.0, se_ratio: float = 0.0):
        super().__init__()
        mid = int(round(cout * bottleneck_ratio))
        self.conv1 = nn.Conv2d(cin, mid, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, stride=stride, padding=1,
                               groups=mid // group_width, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # SE width is a fraction of the block *input* width (as in the reference).
        self.se = SqueezeExcite(mid, int(round(cin * se_ratio))) if se_ratio > 0 else None
        self.conv3 = nn.Conv2d(mid, cout, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.shortcut = None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class CifarRegNet(FeatureModel):
    """RegNet for 32x32 images (Radosavovic et al., "Designing Network Design
    Spaces", CVPR 2020).

    Follows the CIFAR definitions used by the KD literature, here MTKD-RL's
    (kuangliu/pytorch-cifar style): a 3x3 stem of 64 channels at stride 1,
    four stages of X blocks (bottleneck ratio 1, SE for the Y models) with
    strides 1, 1, 2, 2, so a 32x32 input ends on an 8x8 map; global average
    pooling and a linear classifier.

    ``Features.stages``: the stem output and the output of each of the four
    stages (``stage_channels == [64, *widths]``).
    """

    classifier_name = "linear"

    def __init__(self, depths, widths, group_width: int, se_ratio: float, num_classes: int,
                 in_channels: int = 3, bottleneck_ratio: float = 1.0, stem_width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem_width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        cin = stem_width
        stages = []
        for depth, width, stride in zip(depths, widths, STRIDES):
            blocks = []
            for b in range(depth):
                blocks.append(XBlock(cin, width, stride if b == 0 else 1, group_width, bottleneck_ratio, se_ratio))
                cin = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, num_classes)
        self.stage_channels = [stem_width, *widths]
        self.embedding_dim = cin

    def forward_features(self, x: Tensor) -> Features:
        out = F.relu(self.bn1(self.conv1(x)))
        stages = [out]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = layer(out)
            stages.append(out)
        emb = self.avgpool(out).flatten(1)
        return Features(stages=stages, embedding=emb, logits=self.linear(emb))


@register_model("regnetx_200mf")
def regnetx_200mf(num_classes: int, in_channels: int = 3) -> CifarRegNet:
    return CifarRegNet(**CONFIGS["regnetx_200mf"], num_classes=num_classes, in_channels=in_channels)


@register_model("regnetx_400mf")
def regnetx_400mf(num_classes: int, in_channels: int = 3) -> CifarRegNet:
    return CifarRegNet(**CONFIGS["regnetx_400mf"], num_classes=num_classes, in_channels=in_channels)


@register_model("regnety_400mf")
def regnety_400mf(num_classes: int, in_channels: int = 3) -> CifarRegNet:
    return CifarRegNet(**CONFIGS["regnety_400mf"], num_classes=num_classes, in_channels=in_channels)
