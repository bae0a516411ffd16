"""The feature API shared by every model of the zoo.

A zoo model is an ``nn.Module`` whose ``forward(x)`` returns logits and whose
``forward_features(x)`` returns a :class:`Features` record with the intermediate
stage outputs (for feature-based distillers such as FitNet), the pooled
embedding fed to the classifier, and the logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """

    stages: list[Tensor] = field(default_factory=list)
    embedding: Tensor | None = None
    logits: Tensor | None = None


class FeatureModel(nn.Module):
    """Base class of the zoo: ``forward`` is ``forward_features(x).logits``.

    Subclasses implement :meth:`forward_features` and set ``stage_channels``
    and ``embedding_dim`` in ``__init__``.
    """

    stage_channels: list[int]
    embedding_dim: int

    def forward_features(self, x: Tensor) -> Features:  # pragma: no cover - abstract
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
