"""The optimiser (SGD, Adam, RMSProp) and per-epoch learning-rate schedules (multistep, cosine, constant, with
linear warm-up)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from socratic.config.schema import OptimConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """`cfg.optimizer` over `params`: SGD (with momentum, optionally Nesterov), Adam or RMSProp.

    `cfg` is an `OptimConfig` or any section with `optimizer`, `lr`, `momentum`, `weight_decay` (RL's optim
    section has no `nesterov`: False)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=getattr(cfg, "nesterov", False) and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def lr_factor(epoch: int, cfg: OptimConfig) -> float:
    """Multiplier of `cfg.lr` for 1-indexed `epoch`.

    multistep follows mdistiller: the rate is multiplied by gamma once for every milestone that the
    epoch has passed (`epoch > m`), so with milestones 150/180/210 epochs 151..180 run at lr*0.1.
    """
    if cfg.warmup_epochs and epoch <= cfg.warmup_epochs:
        return epoch / (cfg.warmup_epochs + 1)
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(epoch > m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1)
        progress = (epoch - cfg.warmup_epochs - 1) / span
        floor = cfg.min_lr / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def set_epoch_lr(optimizer: torch.optim.Optimizer, epoch: int, cfg: OptimConfig) -> float:
    """Set every group's rate for 1-indexed `epoch` and return it (stateless: resume needs nothing)."""
    lr = cfg.lr * lr_factor(epoch, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
