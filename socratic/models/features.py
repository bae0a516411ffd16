"""The feature API shared by every model of the zoo.

A zoo model is an ``nn.Module`` whose ``forward(x)`` returns logits and whose
``forward_features(x)`` returns a :class:`Features` record with the intermediate
stage outputs (for feature-based distillers such as FitNet), the pooled
embedding fed to the classifier, and the logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Features:
    """What a forward pass of a zoo model exposes.

    Attributes:
        stages: the output of each stage before the head, shallow to deep
            (channel counts in ``model.stage_channels``). These are the live
            tensors of the graph, not copies: gradients flow through them.
        embedding: the pooled vector ``(B, D)`` the classifier is applied to
            (``D == model.embedding_dim``).
        logits: the classifier output ``(B, num_classes)``.
        preact_stages: each stage's output before its final ReLU, the same shapes as ``stages``; only from
            ``forward_features(x, preact=True)`` of a model with ``preact_taps`` (else None).
    """

    stages: list[Tensor] = field(default_factory=list)
    embedding: Tensor | None = None
    logits: Tensor | None = None
    preact_stages: list[Tensor] | None = None


class FeatureModel(nn.Module):
    """Base class of the zoo: ``forward`` is ``forward_features(x).logits``.

    Subclasses implement :meth:`forward_features`, set ``stage_channels`` and ``embedding_dim`` in ``__init__``,
    name their classifier (``classifier_name``) and override :meth:`pre_logits` when more than global average
    pooling sits between the last stage and the classifier. The head is the model's own: a method that feeds a
    feature map to a teacher's head (CA-MKD) calls ``forward_head`` and knows no architecture.
    """

    stage_channels: list[int]
    embedding_dim: int
    classifier_name: str = "fc"
    has_head = True  # forward_head works (models wrapped by hooks have no separable head)
    preact_taps = False  # forward_features(x, preact=True) also gives each stage's map before its final ReLU

    def preact_bns(self) -> list[nn.BatchNorm2d] | None:
        """For each stage, the BatchNorm whose output (plus any shortcut) is the stage's pre-ReLU map (OFD takes
        its margins from their affine parameters); None where the model has no such BN per stage."""
        return None

    def get_classifier(self) -> nn.Module:
        """The final layer that maps the embedding to the logits."""
        return getattr(self, self.classifier_name)

    @property
    def num_classes(self) -> int:
        return int(self.get_classifier().out_features)

    def pre_logits(self, last_stage: Tensor) -> Tensor:
        """Everything between the last stage's map and the classifier: the embedding ``(B, embedding_dim)``."""
        return F.adaptive_avg_pool2d(last_stage, 1).flatten(1)

    def forward_head(self, last_stage: Tensor) -> Tensor:
        """The logits of a map shaped like the last stage's output (gradients flow to ``last_stage``)."""
        return self.get_classifier()(self.pre_logits(last_stage))

    def forward_features(self, x: Tensor, preact: bool = False) -> Features:  # pragma: no cover - abstract
        """The stages, embedding and logits of `x`; with `preact` (models with `preact_taps` only) also the
        stages' pre-ReLU maps."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x).logits


def init_weights(model: nn.Module, linear_std: float | None = None, zero_linear_bias: bool = False) -> None:
    """The initialisation of the zoo's reference definitions: He-normal convolutions (fan-out), unit-scale
    BatchNorm, zero conv biases; optionally N(0, linear_std) classifier weights and zero classifier biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if zero_linear_bias or linear_std is not None:
                nn.init.zeros_(m.bias)
