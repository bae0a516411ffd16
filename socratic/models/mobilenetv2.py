"""CIFAR MobileNetV2 (inverted residuals with linear bottlenecks)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .features import FeatureModel, Features, init_weights
from .registry import register_model


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, linear 1x1 projection; residual when shapes match.

    The expansion convolution is kept even for ``expand_ratio == 1`` (as in the
    CIFAR reference definition).
    """

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = cin * expand_ratio
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            *_conv_bn_relu(cin, hidden, 1),
            *_conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class CifarMobileNetV2(FeatureModel):
    """MobileNetV2 for 32x32 images (Sandler et al., "MobileNetV2: Inverted
    Residuals and Linear Bottlenecks", CVPR 2018).

    Follows the CIFAR definitions used by the KD literature (CRD/RepDistiller,
    mdistiller; MTKD-RL's ``mobilenet`` is the width-1.0 model): a stride-2 3x3
    stem, the seven inverted-residual groups ``(t, c, n, s)`` =
    ``(1,16,1,1) (T,24,2,1) (T,32,3,2) (T,64,4,2) (T,96,3,1) (T,160,3,2)
    (T,320,1,1)`` with channels scaled by ``width_mult``, a 1x1 conv to 1280
    channels (``int(1280 * width_mult)`` when ``width_mult > 1``), global
    average pooling and a linear classifier.

    ``Features.stages``: the stem output and the outputs of groups 2, 3, 5 and
    7, i.e. ``stage_channels == int(c * width_mult) for c in [32, 24, 32, 96, 320]``.
    """

    classifier_name = "classifier"

    def pre_logits(self, last_stage: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.head(last_stage), 1).flatten(1)

    SETTINGS = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
                (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1)]
    STAGE_GROUPS = (1, 2, 4, 6)  # indices of the groups whose outputs are stages

    def __init__(self, num_classes: int, in_channels: int = 3, width_mult: float = 1.0, expand_ratio: int = 6):
        super().__init__()
        cin = int(32 * width_mult)
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, cin, 3, stride=2))
        groups = []
        stage_channels = [cin]
        for i, (t, c, n, s) in enumerate(self.SETTINGS):
            t = expand_ratio if t is None else t
            cout = int(c * width_mult)
            blocks = []
            for b in range(n):
                blocks.append(InvertedResidual(cin, cout, s if b == 0 else 1, t))
                cin = cout
            groups.append(nn.Sequential(*blocks))
            if i in self.STAGE_GROUPS:
                stage_channels.append(cout)
        self.blocks = nn.ModuleList(groups)
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.head = nn.Sequential(*_conv_bn_relu(cin, last, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)
        self.stage_channels = stage_channels
        self.embedding_dim = last
        self.width_mult = width_mult

        init_weights(self, linear_std=0.01)

    def forward_features(self, x: Tensor) -> Features:
        out = self.stem(x)
        stages = [out]
        for i, group in enumerate(self.blocks):
            out = group(out)
            if i in self.STAGE_GROUPS:
                stages.append(out)
        emb = self.avgpool(self.head(out)).flatten(1)
        return Features(stages=stages, embedding=emb, logits=self.classifier(emb))


@register_model("mobile_half")
def mobile_half(num_classes: int, in_channels: int = 3) -> CifarMobileNetV2:
    """MobileNetV2 at width 0.5 (RepDistiller's ``MobileNetV2`` / ``mobile_half``)."""
    return CifarMobileNetV2(num_classes, in_channels, width_mult=0.5)


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int, in_channels: int = 3) -> CifarMobileNetV2:
    """MobileNetV2 at width 1.0 (MTKD-RL's ``mobilenet``)."""
    return CifarMobileNetV2(num_classes, in_channels, width_mult=1.0)
