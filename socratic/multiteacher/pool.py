"""Teacher pools: M frozen teachers of any zoo architecture, what one batch looks like through all of them, and
the per-teacher feature regressors r_m that map the student's feature map onto each teacher's.

A pool is a plain helper around the distiller's `teachers` ModuleList (it owns no modules, so nothing is
registered or checkpointed twice). Every teacher must offer `forward_features(x) -> Features(stages, embedding,
logits)` (all zoo models do, and `torchvision:`/`timm:` models through `socratic.models.external.HookedModel`) and
all teachers must agree on the number of classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def classifier_out_features(model: nn.Module) -> int | None:
    """The number of classes a model predicts, read from its final linear layer (None if it has none)."""
    for name in ("fc", "linear", "classifier"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear):
            return layer.out_features
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def check_class_counts(counts: Sequence[int | None], names: Sequence[str] | None = None) -> int | None:
    """The pool's class count; a ValueError naming each teacher's count when they disagree (None = unknown)."""
    names = list(names) if names is not None else [f"teachers.{i}" for i in range(len(counts))]
    known = {c for c in counts if c is not None}
    if len(known) > 1:
        listing = ", ".join(f"{n} has {c}" for n, c in zip(names, counts) if c is not None)
        raise ValueError(f"the teacher pool disagrees on the number of classes ({listing}): every teacher of a "
                         f"multi-teacher method must predict the same classes")
    return known.pop() if known else None


def checkpoint_class_counts(checkpoints: Sequence[str | Path], names: Sequence[str]) -> int | None:
    """Read each teacher checkpoint's recorded class count (`meta.num_classes`) and check that they agree.

    Plain state dicts carry no metadata: their count is taken from the last 2-D weight whose name looks like a
    classifier (fc/linear/classifier), or left unknown.
    """
    from socratic.engine.checkpoint import load_checkpoint, model_state

    counts: list[int | None] = []
    for path in checkpoints:
        state = load_checkpoint(path)
        meta = state.get("meta", {}) if isinstance(state.get("model"), dict) else {}
        count = meta.get("num_classes") if isinstance(meta, dict) else None
        if count is None:
            weights = model_state(state)
            heads = [v for k, v in weights.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2
                     and any(part in k for part in ("fc", "linear", "classifier"))]
            count = int(heads[-1].shape[0]) if heads else None
        counts.append(count)
    return check_class_counts(counts, names)


@dataclass
class PoolOutput:
    """One batch through every teacher (no graph).

    logits: (M, B, C) in float32; embeddings: M tensors (B, d_m) (the pooled vector each classifier sees);
    maps: M feature maps (B, C_m, H_m, W_m) at the pool's `feature_layer` (empty when not asked for).
    """

    logits: Tensor
    embeddings: list[Tensor]
    maps: list[Tensor]


class TeacherPool:
    """M frozen teachers read together: `pool(x) -> PoolOutput`.

    feature_layer: index into each teacher's `Features.stages` for the feature term (-1 = the last stage, the
    map before the head, as in the MTKD-RL and CA-MKD reference code).
    """

    def __init__(self, teachers: Sequence[nn.Module], feature_layer: int = -1,
                 names: Sequence[str] | None = None) -> None:
        self.teachers = list(teachers)
        if len(self.teachers) < 2:
            raise ValueError(f"a multi-teacher method needs at least 2 teachers, got {len(self.teachers)}")
        self.names = list(names) if names is not None else [
            f"teachers.{i} ({type(t).__name__})" for i, t in enumerate(self.teachers)]
        for name, teacher in zip(self.names, self.teachers):
            if not hasattr(teacher, "forward_features"):
                raise ValueError(f"{name} has no forward_features(): multi-teacher methods need zoo models "
                                 f"(or torchvision:/timm: models, which get it through hooks)")
            stages = getattr(teacher, "stage_channels", None)
            if stages is None or not -len(stages) <= feature_layer < len(stages):
                count = len(stages) if stages is not None else 0
                raise ValueError(f"multiteacher.feature_layer={feature_layer} is out of range for {name} "
                                 f"({count} stages: use 0..{count - 1} or -1)")
        self.num_classes = check_class_counts([classifier_out_features(t) for t in self.teachers], self.names)
        self.feature_layer = feature_layer

    def __len__(self) -> int:
        return len(self.teachers)

    @property
    def embedding_dims(self) -> list[int]:
        return [int(t.embedding_dim) for t in self.teachers]

    @property
    def map_channels(self) -> list[int]:
        return [int(t.stage_channels[self.feature_layer]) for t in self.teachers]

    def state_dims(self, num_classes: int) -> list[int]:
        """Size of MTKD-RL's per-teacher state (Eq. 4): embedding d_m + logits C + teacher CE + cosine + KL."""
        return [d + num_classes + 3 for d in self.embedding_dims]

    @torch.no_grad()
    def __call__(self, x: Tensor, maps: bool = True) -> PoolOutput:
        logits, embeddings, stage_maps = [], [], []
        for teacher in self.teachers:
            features = teacher.forward_features(x)
            logits.append(features.logits.float())
            embeddings.append(features.embedding.float())
            if maps:
                stage_maps.append(features.stages[self.feature_layer])
        return PoolOutput(torch.stack(logits), embeddings, stage_maps)

    def cosine_targets(self, output: PoolOutput) -> list[Tensor]:
        """What the pooled regressed student map is compared with for the state's cosine (Eq. 3): the teacher's
        embedding f^{T_m} when its width equals the map's channels (as the reference code does), else the pooled
        teacher map itself (teachers with a head convolution, e.g. ShuffleV2, MobileNetV2)."""
        targets = []
        for emb, fmap, channels in zip(output.embeddings, output.maps, self.map_channels):
            targets.append(emb if emb.shape[1] == channels else fmap.float().mean(dim=(2, 3)))
        return targets


class FeatureRegressor(nn.Module):
    """r_m: the student's map resized to the teacher's spatial size (adaptive average pooling when larger,
    bilinear when smaller), then 1x1 conv + BN + ReLU to the teacher's channels (MTKD-RL's `TransFeat`/`Embed`,
    CA-MKD's embed)."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(teacher_channels)

    def forward(self, x: Tensor, size: Sequence[int]) -> Tensor:
        height, width = int(size[0]), int(size[1])
        if x.shape[-2] > height or x.shape[-1] > width:
            x = F.adaptive_avg_pool2d(x, (height, width))
        elif x.shape[-2] < height or x.shape[-1] < width:
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        return F.relu(self.bn(self.conv(x)))


# ------------------------------------------------------------------------------------------ teacher heads
def _pool(x: Tensor) -> Tensor:
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _head_table() -> list[tuple[type, object]]:
    from socratic.models.mobilenetv2 import CifarMobileNetV2
    from socratic.models.regnet import CifarRegNet
    from socratic.models.resnet import CifarResNet
    from socratic.models.shufflenetv1 import CifarShuffleNetV1
    from socratic.models.shufflenetv2 import CifarShuffleNetV2
    from socratic.models.vgg import CifarVGG
    from socratic.models.wrn import WideResNet

    return [
        (CifarResNet, lambda m, f: m.fc(_pool(f))),
        (CifarRegNet, lambda m, f: m.linear(_pool(f))),
        (CifarShuffleNetV1, lambda m, f: m.linear(_pool(f))),
        (CifarVGG, lambda m, f: m.classifier(_pool(f))),
        (WideResNet, lambda m, f: m.fc(_pool(F.relu(m.bn(f))))),
        (CifarShuffleNetV2, lambda m, f: m.linear(_pool(F.relu(m.bn2(m.conv2(f)))))),
        (CifarMobileNetV2, lambda m, f: m.classifier(_pool(m.head(f)))),
    ]


def has_head(model: nn.Module) -> bool:
    """Whether `head_logits` knows this architecture."""
    return any(isinstance(model, cls) for cls, _ in _head_table())


def head_logits(model: nn.Module, feature_map: Tensor) -> Tensor:
    """The teacher's own head (everything after its last stage: pooling, any head conv/BN, the classifier)
    applied to a map shaped like its last stage output: CA-MKD's check of how well a regressed student map
    serves each teacher. Gradients flow to `feature_map` (the teacher's weights are frozen)."""
    for cls, head in _head_table():
        if isinstance(model, cls):
            return head(model, feature_map)
    raise ValueError(f"no known head for {type(model).__name__}: CA-MKD's confidence feature weights need a "
                     f"zoo teacher (set multiteacher.camkd_feature_weights: equal otherwise)")
