"""Comparing two runs' outcomes (metrics, checkpoints, summary) bit for bit, for the kill-and-resume tests."""

from __future__ import annotations

import torch

# wall-clock keys, skipped (`t`: the time stamps of SB3's episode statistics)
VOLATILE = {"time", "train_time", "wall_time_this_session", "elapsed", "t"}


def assert_same(a: object, b: object, where: str = "") -> None:
    """Equal nested data, tensors bit for bit, wall-clock keys skipped."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            if key not in VOLATILE:
                assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b or (a != a and b != b), (where, a, b)  # NaN == NaN here
