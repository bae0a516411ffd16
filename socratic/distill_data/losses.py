"""The losses of MKDT's stages, as small pure functions.

* `barlow_twins_loss` -- Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
  ICML 2021, Eq. 1: the cross-correlation of the two views' batch-standardised embeddings pushed to the identity.
* `nt_xent_loss` -- Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
  (SimCLR), ICML 2020: the normalised temperature-scaled cross entropy over the 2B views.
* `representation_mse` / `per_example_mse` -- MKDT's knowledge-distillation loss (MSE to the teacher's
  representation), for training and for the high-loss selection.
* `match_loss` -- MTT's normalised parameter distance (Cazenavette et al., CVPR 2022, Eq. 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _standardise(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Each column to zero mean and unit (biased) variance over the batch, as BatchNorm1d(affine=False) does."""
    return (z - z.mean(dim=0)) / (z.var(dim=0, unbiased=False) + eps).sqrt()


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, eps: float = 1e-5) -> torch.Tensor:
    """Σ_i (1 - C_ii)² + λ Σ_{i≠j} C_ij², C = Z1ᵀ Z2 / B of the batch-standardised (B, D) embeddings."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"barlow_twins_loss needs two (B, D) embeddings of one shape, got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
    c = _standardise(z1, eps).T @ _standardise(z2, eps) / z1.shape[0]
    on_diagonal = (torch.diagonal(c) - 1).pow(2).sum()
    off_diagonal = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diagonal + lambd * off_diagonal


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Mean over the 2B views of -log softmax of the positive pair's cosine similarity / temperature, the other
    2B - 2 views as negatives (the view itself excluded)."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent_loss needs two (B, D) embeddings of one shape, got {tuple(z1.shape)} and "
                         f"{tuple(z2.shape)}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(logits, positives)


def representation_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE averaged over the batch and the representation's dimensions (torch's MSELoss, as the authors')."""
    return F.mse_loss(prediction, target)


def per_example_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) MSE of each example, averaged over the representation's dimensions."""
    return (prediction - target).pow(2).flatten(1).mean(dim=1)


def match_loss(theta_end: torch.Tensor, theta_start: torch.Tensor, theta_target: torch.Tensor) -> torch.Tensor:
    """‖θ_N − θ*‖² / ‖θ_t − θ*‖²: 1 when the student did not move, 0 when it landed on the expert's θ*."""
    return (theta_end - theta_target).pow(2).sum() / (theta_start - theta_target).pow(2).sum()
