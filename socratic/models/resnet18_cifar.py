"""ResNet-18 with the CIFAR stem: torchvision's ResNet-18 layout (four stages of two basic blocks, 64-512
channels) with a 3x3 stride-1 first convolution and no max-pool, so 32x32 images keep their resolution in the
first stage; the pooled 512-d vector is the embedding.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; the CIFAR stem is the one of the
self-supervised CIFAR recipes (Barlow Twins / SimCLR CIFAR code, KRR-ST and MKDT's teachers).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .features import FeatureModel, Features, init_weights
from .registry import register_model
from .resnet import BasicBlock

WIDTHS = (64, 128, 256, 512)


class ResNet18Cifar(FeatureModel):
    """Stem conv 3x3 s1 -> BN -> ReLU, four stages of two `BasicBlock`s (strides 1, 2, 2, 2), average pool, fc.

    ``Features.stages``: the output of each of the four stages (``stage_channels == [64, 128, 256, 512]``).
    """

    classifier_name = "fc"

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin, layers = 64, []
        for i, width in enumerate(WIDTHS):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width)))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, num_classes)
        self.stage_channels = list(WIDTHS)
        self.embedding_dim = 512
        init_weights(self)

    def forward_features(self, x: Tensor) -> Features:
        x = F.relu(self.bn1(self.conv1(x)))
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            stages.append(x)
        embedding = self.pre_logits(x)
        return Features(stages=stages, embedding=embedding, logits=self.fc(embedding))


@register_model("resnet18_cifar")
def resnet18_cifar(num_classes: int, in_channels: int = 3) -> ResNet18Cifar:
    return ResNet18Cifar(num_classes, in_channels)
