"""CIFAR VGGs with batch normalisation."""

from __future__ import annotations

from torch import Tensor, nn

from .features import FeatureModel, Features, init_weights
from .registry import register_model

# Five blocks of 3x3 convolutions; 2x2 max-pooling between blocks.
CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _block(cin: int, widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        cin = w
    return nn.Sequential(*layers)


class CifarVGG(FeatureModel):
    """VGG with batch normalisation for 32x32 images (Simonyan & Zisserman,
    "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    ICLR 2015).

    Follows the CIFAR definitions used by the KD literature (CRD/RepDistiller,
    mdistiller): five blocks of 3x3 conv-BN-ReLU (convolutions with bias),
    2x2 max-pooling after the first three blocks (and after the fourth only
    for inputs of 64 pixels or more, as the reference does for 64x64
    images), global average pooling and a single ``Linear(512, num_classes)``.

    ``Features.stages``: the (ReLU-ed) output of each of the five blocks.
    """

    classifier_name = "classifier"

    def __init__(self, cfg: list[list[int]], num_classes: int, in_channels: int = 3):
        super().__init__()
        blocks = []
        cin = in_channels
        for widths in cfg:
            blocks.append(_block(cin, widths))
            cin = widths[-1]
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        self.stage_channels = [widths[-1] for widths in cfg]
        self.embedding_dim = cin

        init_weights(self, linear_std=0.01)

    preact_taps = True

    def preact_bns(self) -> list[nn.BatchNorm2d]:
        """The last BN of each block (before the block's last ReLU)."""
        return [block[-2] for block in self.blocks]

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:
        pool_fourth = x.shape[-2] >= 64
        stages, preacts = [], ([] if preact else None)  # pre-ReLU maps kept only when asked for
        out = x
        for i, block in enumerate(self.blocks):
            if i in (1, 2, 3) or (i == 4 and pool_fourth):
                out = self.pool(out)
            pre = block[:-1](out)  # everything but the block's last ReLU
            out = block[-1](pre)
            stages.append(out)
            if preacts is not None:
                preacts.append(pre)
        emb = self.avgpool(out).flatten(1)
        return Features(stages=stages, embedding=emb, logits=self.classifier(emb), preact_stages=preacts)


def _make(depth: int):
    key = f"vgg{depth}"

    @register_model(f"{key}_bn", aliases=(key,))
    def factory(num_classes: int, in_channels: int = 3) -> CifarVGG:
        return CifarVGG(CONFIGS[key], num_classes, in_channels)

    factory.__name__ = factory.__qualname__ = f"{key}_bn"
    factory.__doc__ = f"VGG-{depth} with BN, CIFAR definition (alias ``{key}``)."
    return factory


vgg8_bn = _make(8)
vgg11_bn = _make(11)
vgg13_bn = _make(13)
vgg16_bn = _make(16)
vgg19_bn = _make(19)
