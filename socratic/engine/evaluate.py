"""Top-1 / top-5 accuracy and loss of a model over a loader."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from socratic.engine.runtime import autocast
from socratic.losses import cross_entropy


def top_k_correct(logits: Tensor, targets: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Number of samples whose target is among the top-k predictions, for each k (k capped at C)."""
    max_k = min(max(ks), logits.shape[1])
    hits = logits.topk(max_k, dim=1).indices.eq(targets.unsqueeze(1))
    return [int(hits[:, : min(k, max_k)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate_counts(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device,
                    precision: str = "fp32", max_samples: int | None = None) -> dict[str, float]:
    """Raw sums over a loader: `correct1`, `correct5`, `loss_sum` and `total` (the model is left in eval mode).

    `max_samples` counts only the first that many samples (a distributed shard's padding is left out);
    sums from several ranks add up, and `accuracy_from_counts` turns them into percentages.
    """
    model.eval()
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    for x, y in batches:
        if max_samples is not None:
            room = max_samples - total
            if room <= 0:
                break
            x, y = x[:room], y[:room]
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(x)
        loss_sum += float(cross_entropy(logits, y)) * y.numel()
        c1, c5 = top_k_correct(logits, y)
        correct1, correct5, total = correct1 + c1, correct5 + c5, total + y.numel()
    return {"correct1": correct1, "correct5": correct5, "loss_sum": loss_sum, "total": total}


def accuracy_from_counts(counts: dict[str, float]) -> dict[str, float]:
    """Percent top-1/top-5 and mean cross-entropy from `evaluate_counts`' sums."""
    total = counts["total"]
    if total == 0:
        raise ValueError("evaluation got no samples")
    return {"top1": 100.0 * counts["correct1"] / total, "top5": 100.0 * counts["correct5"] / total,
            "loss": counts["loss_sum"] / total}


def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device,
             precision: str = "fp32") -> dict[str, float]:
    """Accuracy in percent (`top1`, `top5`) and mean cross-entropy (`loss`); the model is left in eval mode."""
    return accuracy_from_counts(evaluate_counts(model, batches, device, precision))
