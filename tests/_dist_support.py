"""Helpers shared by tests/test_distributed.py and the worker script it starts under torchrun."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

FLAT_MODEL = "flatcnn_test"


class FlatCNN(nn.Module):
    """A tiny CNN without BatchNorm: its gradient is a plain mean over the batch, so a 2-process DDP step equals
    a 1-process step on the union of the two batches (BatchNorm would normalise each half on its own)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),  # keeps where things are: the tiny dataset's classes need it
        )
        self.fc = nn.Linear(16 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def register_flat_model() -> None:
    from socratic.models import list_models
    from socratic.models.registry import register_model

    if FLAT_MODEL in list_models():
        return

    @register_model(FLAT_MODEL)
    def _build(num_classes: int, in_channels: int = 3, **kwargs: object) -> nn.Module:
        return FlatCNN(num_classes, in_channels)


@contextlib.contextmanager
def flat_model_registered() -> Iterator[None]:
    """The model registered for the block only (other tests compare the registry with the zoo)."""
    from socratic.registry import MODELS

    register_flat_model()
    try:
        yield
    finally:
        MODELS.unregister(FLAT_MODEL)  # test-only registration


class MergedShards:
    """The batches of several rank loaders concatenated: step t of one process = the union of every rank's step t."""

    def __init__(self, shards: list) -> None:
        self.shards = shards
        self.dataset = shards[0].dataset

    def set_epoch(self, epoch: int) -> None:
        for shard in self.shards:
            shard.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.shards[0])

    def __iter__(self):
        for parts in zip(*self.shards):
            yield torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
