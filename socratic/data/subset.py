"""Class-stratified subsets, for quick runs and small-data experiments.

A random subset of a small size can miss or over-represent classes; a stratified one keeps the
class proportions of the full set (to within one sample per class), which keeps accuracy numbers
comparable across subset sizes.
"""

from __future__ import annotations

import math

import torch

from .datasets import ImageDataset


def _allocate(class_sizes: list[int], count: int) -> list[int]:
    """Per-class sample numbers summing to `count`, proportional to `class_sizes`, >= 1 each
    for every non-empty class (largest-remainder rounding; ties go to the lower class index)."""
    total = sum(class_sizes)
    quota = [count * c / total for c in class_sizes]
    alloc = [min(c, max(1, math.floor(q))) if c else 0 for c, q in zip(class_sizes, quota)]
    diff = count - sum(alloc)
    while diff > 0:  # hand out the remainder to the classes furthest below their quota
        k = max((k for k, c in enumerate(class_sizes) if alloc[k] < c), key=lambda k: (quota[k] - alloc[k], -k))
        alloc[k] += 1
        diff -= 1
    while diff < 0:  # the ">= 1 per class" floor overshot: take back from the most over-quota
        k = max((k for k in range(len(alloc)) if alloc[k] > 1), key=lambda k: (alloc[k] - quota[k], -k))
        alloc[k] -= 1
        diff += 1
    return alloc


def stratified_indices(
    labels: torch.Tensor,
    num_classes: int,
    fraction: float | None = None,
    count: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Sorted int64 indices of a stratified sample of `labels` (see `stratified_subset`)."""
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction= or count=")
    n = int(labels.numel())
    sizes = torch.bincount(labels, minlength=num_classes).tolist()
    present = sum(1 for s in sizes if s)
    if fraction is not None:
        if isinstance(fraction, bool) or not (0.0 < float(fraction) <= 1.0):
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        count = max(present, round(float(fraction) * n))
    assert count is not None
    if isinstance(count, bool) or int(count) != count or not (present <= count <= n):
        raise ValueError(
            f"count must be an integer between the number of classes ({present}) and the dataset "
            f"size ({n}), got {count!r}"
        )
    alloc = _allocate(sizes, int(count))
    g = torch.Generator().manual_seed(seed)
    order = torch.argsort(labels, stable=True)  # indices grouped by class, ascending within
    chosen, start = [], 0
    for size, k in zip(sizes, alloc):
        # A full permutation per class, whatever k is: the same seed then gives nested subsets.
        perm = torch.randperm(size, generator=g)
        chosen.append(order[start + perm[:k]])
        start += size
    return torch.sort(torch.cat(chosen)).values


def stratified_subset(
    dataset: ImageDataset,
    fraction: float | None = None,
    count: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """A subset with the same class proportions, chosen deterministically from `seed`.

    Give `fraction` in (0, 1] or `count` between the number of (non-empty) classes and
    len(dataset). Every non-empty class keeps at least one sample (so a tiny fraction is rounded
    up to one per class); per-class numbers are proportional with largest-remainder rounding, so
    the total is exact. Each class takes a prefix of one seeded permutation, so for one seed
    subsets of different sizes are (nearly always) nested. Samples keep their original order.
    """
    idx = stratified_indices(dataset.labels, dataset.num_classes, fraction, count, seed)
    return ImageDataset(
        images=dataset.images[idx],
        labels=dataset.labels[idx],
        classes=list(dataset.classes),
        mean=dataset.mean,
        std=dataset.std,
        name=dataset.name,
        split=dataset.split,
    )
