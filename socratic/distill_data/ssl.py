"""The self-supervised teacher: an encoder from the model zoo (its pooled embedding is the representation MKDT
distils) and a projector, trained by Barlow Twins (Zbontar et al., ICML 2021) or SimCLR (Chen et al., ICML 2020)
on two augmented views (`ssl_views`)."""

from __future__ import annotations

import torch
from torch import nn

from socratic.distill_data.losses import barlow_twins_loss, nt_xent_loss
from socratic.models import create_model


def projector(in_dim: int, widths: list[int]) -> nn.Sequential:
    """Linear-BN-ReLU for every width but the last, then a plain Linear (the Barlow Twins projector)."""
    layers: list[nn.Module] = []
    dims = [in_dim, *widths]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(widths) - 1
        layers.append(nn.Linear(a, b, bias=last))
        if not last:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SSLTeacher(nn.Module):
    """encoder (a zoo model; its classifier is not used) -> embedding -> projector -> SSL loss of two views."""

    def __init__(self, model: str, kwargs: dict, in_channels: int, widths: list[int], objective: str,
                 lambd: float, temperature: float) -> None:
        super().__init__()
        self.encoder = create_model(model, num_classes=1, in_channels=in_channels, **kwargs)
        self.encoder.get_classifier().requires_grad_(False)  # the representation is the embedding before it
        self.projector = projector(self.encoder.embedding_dim, widths)
        self.objective, self.lambd, self.temperature = objective, lambd, temperature

    @property
    def embedding_dim(self) -> int:
        return int(self.encoder.embedding_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The representation: the encoder's pooled embedding."""
        return self.encoder.forward_features(x).embedding

    def loss(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """Each view through encoder and projector separately (batch statistics per view), then the loss."""
        z1, z2 = self.projector(self.embed(view1)), self.projector(self.embed(view2))
        if self.objective == "simclr":
            return nt_xent_loss(z1, z2, self.temperature)
        return barlow_twins_loss(z1, z2, self.lambd)
