"""Model size: parameter and FLOP counts."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_size: Sequence[int] = (3, 32, 32)) -> int:
    """FLOPs of one forward pass on a single ``input_size`` sample.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` in eval mode under
    ``no_grad`` and reported as counted there (a multiply-add is 2 FLOPs;
    only the operators it knows, chiefly convolutions and matmuls, count).
    The model's training mode is restored afterwards.
    """
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros(1, *input_size, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_call_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` (a whole training step, say: forwards, backwards, input gradients), counted by
    ``torch.utils.flop_counter.FlopCounterMode`` as the operators run, so a backward that computes only input
    gradients counts only those. The call really runs (an optimiser step inside it is taken)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def describe_models(
    names: Iterable[str] | None = None,
    num_classes: int = 100,
    input_size: Sequence[int] = (3, 32, 32),
) -> list[dict]:
    """``[{"name", "params", "flops"}, ...]`` for each model name (default: the whole zoo).

    Models are built with ``in_channels = input_size[0]``.
    """
    from .registry import create_model, list_models

    rows = []
    for name in list_models() if names is None else names:
        model = create_model(name, num_classes=num_classes, in_channels=input_size[0])
        rows.append({"name": name, "params": count_parameters(model), "flops": count_flops(model, input_size)})
    return rows
