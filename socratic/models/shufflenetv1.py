"""CIFAR ShuffleNet (v1), groups = 3."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .features import FeatureModel, Features
from .registry import register_model


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` equal groups: (g, C/g) -> (C/g, g)."""
    if groups == 1:
        return x
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """Grouped 1x1 conv, channel shuffle, 3x3 depthwise, grouped 1x1 conv.

    Stride 1: residual sum. Stride 2: concatenation with a 3x3 average-pooled
    shortcut, so the unit's branch produces ``cout - cin`` channels.
    The first pointwise conv of the network (on the 24-channel stem) is not grouped.
    """

    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        branch_out = cout - cin if stride == 2 else cout
        mid = branch_out // 4
        self.first_groups = 1 if cin == 24 else groups
        self.conv1 = nn.Conv2d(cin, mid, kernel_size=1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch_out, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.pool is not None:
            return F.relu(torch.cat([out, self.pool(x)], dim=1))
        return F.relu(out + x)


class CifarShuffleNetV1(FeatureModel):
    """ShuffleNet for 32x32 images (Zhang et al., "ShuffleNet: An Extremely
    Efficient Convolutional Neural Network for Mobile Devices", CVPR 2018).

    Follows the CIFAR definitions used by the KD literature (CRD/RepDistiller,
    mdistiller; ``ShuffleV1``): a 1x1 stem to 24 channels (no max-pooling),
    three stages of 4, 8, 4 units with 240, 480, 960 channels and 3 groups,
    the first unit of each stage at stride 2, global average pooling and a
    linear classifier.

    ``Features.stages``: the stem output and the output of each stage
    (``stage_channels == [24, 240, 480, 960]``).
    """

    classifier_name = "linear"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        out_channels: tuple[int, ...] = (240, 480, 960),
        num_blocks: tuple[int, ...] = (4, 8, 4),
        groups: int = 3,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        stages = []
        for cout, n in zip(out_channels, num_blocks):
            units = []
            for b in range(n):
                units.append(ShuffleUnit(cin, cout, 2 if b == 0 else 1, groups))
                cin = cout
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(cin, num_classes)
        self.stage_channels = [24, *out_channels]
        self.embedding_dim = cin

    def forward_features(self, x: Tensor) -> Features:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        emb = self.avgpool(f3).flatten(1)
        return Features(stages=[f0, f1, f2, f3], embedding=emb, logits=self.linear(emb))


@register_model("ShuffleV1", aliases=("shufflev1",))
def shufflev1(num_classes: int, in_channels: int = 3) -> CifarShuffleNetV1:
    return CifarShuffleNetV1(num_classes, in_channels)
