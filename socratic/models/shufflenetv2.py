"""CIFAR ShuffleNetV2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .features import FeatureModel, Features
from .registry import register_model
from .shufflenetv1 import channel_shuffle

# net_size -> (stage output channels + final 1x1 conv channels, units per stage)
CONFIGS: dict[float, tuple[tuple[int, ...], tuple[int, ...]]] = {
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2: ((224, 488, 976, 2048), (3, 7, 3)),
}


class SplitUnit(nn.Module):
    """Half of the channels pass through, the other half go 1x1 -> 3x3 dw -> 1x1; concat, shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        self.half = channels // 2
        c = channels - self.half
        self.conv1 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, kernel_size=3, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(output, the output with the branch taken before its final ReLU: shuffle(cat(keep, bn3(...))))."""
        keep, branch = x[:, : self.half], x[:, self.half :]
        out = F.relu(self.bn1(self.conv1(branch)))
        out = self.bn2(self.conv2(out))
        pre = self.bn3(self.conv3(out))
        return (channel_shuffle(torch.cat([keep, F.relu(pre)], dim=1), 2),
                channel_shuffle(torch.cat([keep, pre], dim=1), 2))

    def forward(self, x: Tensor) -> Tensor:
        keep, branch = x[:, : self.half], x[:, self.half :]
        out = F.relu(self.bn1(self.conv1(branch)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([keep, out], dim=1), 2)


class DownUnit(nn.Module):
    """Stride-2 unit: both branches see the whole input; each gives ``cout // 2`` channels."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        # left: 3x3 dw (stride 2) -> 1x1
        self.conv1 = nn.Conv2d(cin, cin, kernel_size=3, stride=2, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right: 1x1 -> 3x3 dw (stride 2) -> 1x1
        self.conv3 = nn.Conv2d(cin, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], dim=1), 2)


class CifarShuffleNetV2(FeatureModel):
    """ShuffleNetV2 for 32x32 images (Ma et al., "ShuffleNet V2: Practical
    Guidelines for Efficient CNN Architecture Design", ECCV 2018).

    Follows the CIFAR definitions used by the KD literature (CRD/RepDistiller,
    mdistiller; ``ShuffleV2`` is ``net_size=1``): a 1x1 stem to 24 channels (no
    max-pooling), three stages (a stride-2 unit followed by 3, 7, 3 split
    units) with 116, 232, 464 channels, a 1x1 conv to 1024 channels, global
    average pooling and a linear classifier.

    ``Features.stages``: the stem output and the output of each stage
    (``stage_channels == [24, 116, 232, 464]``); the embedding is the pooled
    1024-channel map.
    """

    classifier_name = "linear"

    def pre_logits(self, last_stage: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(F.relu(self.bn2(self.conv2(last_stage))), 1).flatten(1)

    def __init__(self, num_classes: int, in_channels: int = 3, net_size: float = 1):
        super().__init__()
        if net_size not in CONFIGS:
            raise ValueError(f"net_size must be one of {sorted(CONFIGS)}, got {net_size}")
        out_channels, num_blocks = CONFIGS[net_size]
        self.conv1 = nn.Conv2d(in_channels, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        stages = []
        for cout, n in zip(out_channels[:3], num_blocks):
            stages.append(nn.Sequential(DownUnit(cin, cout), *[SplitUnit(cout) for _ in range(n)]))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(cin, out_channels[3], kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(out_channels[3], num_classes)
        self.stage_channels = [24, *out_channels[:3]]
        self.embedding_dim = out_channels[3]

    preact_taps = True  # as a student: a stage's pre-ReLU map has no single BN (preact_bns is None)

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:
        pre = self.bn1(self.conv1(x))
        out = F.relu(pre)
        stages, preacts = [out], ([pre] if preact else None)
        for layer in (self.layer1, self.layer2, self.layer3):
            if preacts is not None:
                for unit in layer[:-1]:
                    out = unit(out)
                out, pre = layer[-1].forward_preact(out)
                preacts.append(pre)
            else:
                out = layer(out)
            stages.append(out)
        emb = self.avgpool(F.relu(self.bn2(self.conv2(out)))).flatten(1)
        return Features(stages=stages, embedding=emb, logits=self.linear(emb), preact_stages=preacts)


@register_model("ShuffleV2", aliases=("shufflev2",))
def shufflev2(num_classes: int, in_channels: int = 3) -> CifarShuffleNetV2:
    return CifarShuffleNetV2(num_classes, in_channels, net_size=1)
