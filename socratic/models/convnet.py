"""The ConvNet of the dataset-distillation literature (MTT, KRR-ST, MKDT): `depth` blocks of
conv 3x3 -> norm -> ReLU -> 2x2 average pooling, then a linear layer on the flattened map.

Gidaris & Komodakis (CVPR 2018) introduced it for few-shot learning; Cazenavette et al. ("Dataset Distillation by
Matching Training Trajectories", CVPR 2022) and Joshi, Ni & Mirzasoleiman ("Dataset Distillation via Knowledge
Distillation", ICLR 2025) use depth 3, width 128 and instance norm (a `GroupNorm` with one group per channel and
an affine transform, as in their code) on 32x32 images: a 128 x 4 x 4 = 2048-d flattened feature and, for MKDT,
a 2048 -> 512 linear layer that regresses the teacher's representation.

The model has no buffers (instance norm keeps no running statistics), so `torch.func.functional_call` with a
flat parameter vector is the whole model: what trajectory matching needs.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .features import FeatureModel, Features
from .registry import register_model

NORMS = ("instancenorm", "batchnorm", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class ConvNet(FeatureModel):
    """`depth` x [conv 3x3 (width) -> norm -> ReLU -> avgpool 2x2] -> flatten -> fc.

    ``image_size`` is the input side the classifier is built for (32: a width x 4 x 4 map at depth 3); an input of
    another size is average-pooled to that final map size before flattening (so 28x28 images work too).
    ``Features.embedding`` is the flattened map (``embedding_dim = width * (image_size / 2**depth)**2``): the
    representation MKDT's linear probe reads.
    """

    classifier_name = "fc"

    def __init__(self, num_classes: int, in_channels: int = 3, depth: int = 3, width: int = 128,
                 norm: str = "instancenorm", image_size: int = 32) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"ConvNet needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        if norm not in NORMS:
            raise ValueError(f"ConvNet norm {norm!r} is not one of {', '.join(NORMS)}")
        if image_size >> depth < 1:
            raise ValueError(f"ConvNet: image_size {image_size} is too small for depth {depth}")
        blocks = []
        cin = in_channels
        for _ in range(depth):
            blocks.append(nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), _norm(norm, width), nn.ReLU(inplace=True),
                                        nn.AvgPool2d(2, 2)))
            cin = width
        self.features = nn.Sequential(*blocks)
        self.final_size = image_size >> depth
        self.embedding_dim = width * self.final_size**2
        self.stage_channels = [width] * depth
        self.fc = nn.Linear(self.embedding_dim, num_classes)

    def pre_logits(self, last_stage: Tensor) -> Tensor:
        if last_stage.shape[-1] != self.final_size or last_stage.shape[-2] != self.final_size:
            last_stage = F.adaptive_avg_pool2d(last_stage, self.final_size)
        return last_stage.flatten(1)

    def forward_features(self, x: Tensor) -> Features:
        stages = []
        for block in self.features:
            x = block(x)
            stages.append(x)
        embedding = self.pre_logits(x)
        return Features(stages=stages, embedding=embedding, logits=self.fc(embedding))


@register_model("convnet")
def convnet(num_classes: int, in_channels: int = 3, depth: int = 3, width: int = 128, norm: str = "instancenorm",
            image_size: int = 32) -> ConvNet:
    return ConvNet(num_classes, in_channels, depth, width, norm, image_size)
