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

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def classifier_out_features(model: nn.Module) -> int | None:
    """The number of classes a model predicts, from its own classifier (zoo models and hooked external models
    expose `num_classes`); None for a model that does not say."""
    count = getattr(model, "num_classes", None)
    return int(count) if count is not None else None


def check_class_counts(counts: Sequence[int | None], names: Sequence[str] | None = None) -> int | None:
    """The pool's class count; a ValueError naming each teacher's count when they disagree (None = unknown)."""
    names = list(names) if names is not None else [f"teachers.{i}" for i in range(len(counts))]
    known = {c for c in counts if c is not None}
    if len(known) > 1:
        listing = ", ".join(f"{n} has {c}" for n, c in zip(names, counts) if c is not None)
        raise ValueError(f"the teacher pool disagrees on the number of classes ({listing}): every teacher of a "
                         f"multi-teacher method must predict the same classes")
    return known.pop() if known else None


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
            if not hasattr(teacher, "forward_features") or getattr(teacher, "stage_channels", None) is None:
                raise ValueError(f"{name} has no forward_features()/stage_channels: multi-teacher methods read "
                                 f"them; build the method with socratic.create_distiller(name, student, "
                                 f"teachers), which wraps a plain nn.Module in socratic.models.external."
                                 f"HookedModel (or wrap it yourself: as_feature_model(model))")
            if not getattr(teacher, "embedding_dim", None):
                raise ValueError(f"{name} has no embedding (the input of an nn.Linear classifier), which "
                                 f"multi-teacher methods read: give its classifier's name, "
                                 f"as_feature_model(model, classifier='<module name>')")
        self.num_classes = check_class_counts([classifier_out_features(t) for t in self.teachers], self.names)
        self.feature_layer = feature_layer

    def check_feature_layer(self) -> None:
        """A ValueError naming `method.feature_layer` when a teacher has no such stage (for the feature term)."""
        for name, teacher in zip(self.names, self.teachers):
            check_stage(teacher, self.feature_layer, name)

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

    def fields(self, maps: bool = True) -> list[tuple[str, ...]]:
        """Per teacher, the outputs a batch view needs (`logits`, `embedding` and, with `maps`, the map at
        `feature_layer` as `stage<i>`): what `collect` reads, and what a teacher-output cache holds."""
        return [("logits", "embedding") + ((self._map_field(t),) if maps else ()) for t in self.teachers]

    def _map_field(self, teacher: nn.Module) -> str:
        return f"stage{self.feature_layer % len(teacher.stage_channels)}"

    def collect(self, outputs: Sequence[dict[str, Tensor]], maps: bool = True) -> PoolOutput:
        """The pool's view of one batch from each teacher's outputs by field (as `fields` names them)."""
        logits = [out["logits"].float() for out in outputs]
        embeddings = [out["embedding"].float() for out in outputs]
        stage_maps = [out[self._map_field(t)] for t, out in zip(self.teachers, outputs)] if maps else []
        return PoolOutput(torch.stack(logits), embeddings, stage_maps)

    @torch.no_grad()
    def __call__(self, x: Tensor, maps: bool = True) -> PoolOutput:
        outputs = []
        for teacher, fields in zip(self.teachers, self.fields(maps)):
            features = teacher.forward_features(x)
            outputs.append({"logits": features.logits, "embedding": features.embedding,
                            **({fields[2]: features.stages[self.feature_layer]} if maps else {})})
        return self.collect(outputs, maps)

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


def check_stage(model: nn.Module, feature_layer: int, role: str) -> None:
    """A ValueError naming `method.feature_layer` when `model` has no stage `feature_layer`; a model with no
    stage at all (a plain module without 4-d feature maps) is told to turn the feature term off."""
    stages = list(getattr(model, "stage_channels", None) or [])
    if not stages:
        raise ValueError(f"method.feature_loss needs a feature map of the {role}, and {type(model).__name__} has "
                         f"none (no (B, C, H, W) stage output found): set feature_loss: false (logit terms only; "
                         f"not with mtkd_rl) or wrap the model: HookedModel(model, feature_layers=[...])")
    if not -len(stages) <= feature_layer < len(stages):
        raise ValueError(f"method.feature_layer={feature_layer} is out of range for the {role} "
                         f"({len(stages)} stages: use 0..{len(stages) - 1} or -1)")


# ------------------------------------------------------------------------------------------ teacher heads
def has_head(model: nn.Module) -> bool:
    """Whether the model owns a separable head (`forward_head`): every zoo model does."""
    return bool(getattr(model, "has_head", False)) and callable(getattr(model, "forward_head", None))


def head_logits(model: nn.Module, feature_map: Tensor) -> Tensor:
    """The teacher's own head (everything after its last stage: pooling, any head conv/BN, the classifier)
    applied to a map shaped like its last stage output: CA-MKD's check of how well a regressed student map
    serves each teacher. Gradients flow to `feature_map` (the teacher's weights are frozen)."""
    if not has_head(model):
        raise ValueError(f"{type(model).__name__} has no separable head (forward_head): CA-MKD's confidence "
                         f"feature weights need a zoo teacher (set method.camkd_feature_weights: equal otherwise)")
    return model.forward_head(feature_map)
