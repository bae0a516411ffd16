"""Linear-probe evaluation of a frozen encoder (MKDT §B.5; KRR-ST's protocol): features of a labelled subset of
the downstream training set, a linear layer fitted by L-BFGS to cross entropy + wd·‖W‖², top-1 on the test set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from socratic.data import ImageDataset, TensorLoader, stratified_indices


@torch.no_grad()
def extract(encode: Callable[[torch.Tensor], torch.Tensor], dataset: ImageDataset, batch_size: int,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, D) float32 outputs of `encode` on the dataset's normalised images, in dataset order, on the CPU."""
    loader = TensorLoader(dataset, batch_size, shuffle=False, device=device)
    return torch.cat([encode(x).flatten(1).float().cpu() for x, _ in loader])


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 20,
                     weight_decay: float = 1e-3) -> nn.Linear:
    """A linear layer minimising CE + weight_decay·‖W‖² on (features, labels): `steps` outer L-BFGS steps of up
    to 20 iterations each (strong-Wolfe line search), full batch, from zero weights."""
    probe = nn.Linear(features.shape[1], num_classes)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=20, history_size=10,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(features), labels) + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        for _ in range(steps):
            optimizer.step(closure)
    return probe


@torch.no_grad()
def top1(probe: nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((probe(features).argmax(1) == labels).float().mean())


def probe_accuracies(encode: Callable[[torch.Tensor], torch.Tensor], train: ImageDataset, test: ImageDataset,
                     fractions: list[float], *, seed: int, batch_size: int, steps: int, weight_decay: float,
                     device: torch.device | str = "cpu",
                     progress: Callable[[], None] | None = None) -> dict[str, float]:
    """{"probe_top1_<p>pct": test top-1} for each labelled fraction of `train` (stratified, drawn with `seed`;
    one seed gives nested subsets)."""
    test_features = extract(encode, test, batch_size, device)
    results: dict[str, float] = {}
    for fraction in fractions:
        idx = stratified_indices(train.labels, train.num_classes, fraction=fraction, seed=seed)
        subset = ImageDataset(train.images[idx], train.labels[idx], train.classes, train.mean, train.std, train.name)
        features = extract(encode, subset, batch_size, device)
        probe = fit_linear_probe(features, subset.labels, train.num_classes, steps, weight_decay)
        results[f"probe_top1_{fraction * 100:g}pct"] = top1(probe, test_features, test.labels)
        if progress is not None:
            progress()
    return results


__all__ = ["extract", "fit_linear_probe", "probe_accuracies", "top1"]
