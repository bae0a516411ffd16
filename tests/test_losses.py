import math

import pytest
import torch

from socratic.engine.evaluate import top_k_correct
from socratic.losses import cross_entropy, fitnet_loss, kd_loss, kd_loss_per_sample


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_hand_computation() -> None:
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 0.0, 1.0], [0.5, 0.5, 2.0]]
    for temperature in (1.0, 4.0):
        expected = sum(_kl(_softmax(ti, temperature), _softmax(si, temperature)) for si, ti in zip(s, t)) / 2
        expected *= temperature**2
        got = kd_loss(torch.tensor(s), torch.tensor(t), temperature)
        assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_zero_for_identical_logits_and_per_sample_shape() -> None:
    z = torch.randn(4, 10)
    assert kd_loss(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss_per_sample(z, torch.randn(4, 10)).shape == (4,)


def test_fitnet_and_ce() -> None:
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 2.0)
    assert fitnet_loss(a, b).item() == pytest.approx(4.0)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert cross_entropy(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75))


def test_top_k_correct() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    targets = torch.tensor([1, 2, 0])
    assert top_k_correct(logits, targets, ks=(1, 2, 5)) == [1, 2, 3]
