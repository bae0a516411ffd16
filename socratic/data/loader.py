"""`TensorLoader`: deterministic, shardable mini-batches from an in-memory `ImageDataset`.

No worker processes: a batch is one index gather, one vectorised augmentation and one
normalisation, which is cheaper than the IPC a multiprocess DataLoader would add. Randomness
(the permutation and the augmentation draws) comes from private generators seeded from
(seed, epoch), so the batches of an epoch are a pure function of those two numbers: a run resumed
at an epoch boundary sees exactly the batches it would have seen, and every distributed rank
derives the same permutation without communication.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch

from .augment import BatchTransform
from .datasets import ImageDataset


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (stable across processes and Python versions)."""
    digest = hashlib.sha256(":".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class TensorLoader:
    """Iterate (x, y) batches: x float32 normalised (N, C, H, W) on `device`, y int64.

    shuffle: a new permutation every epoch. augment: applied to the uint8 batch on the CPU
    (or wherever the dataset lives) before normalisation. drop_last: skip the final short batch.
    channels_last: return x in torch.channels_last memory format. rank/world_size: this process
    takes the rank-th of world_size equal contiguous slices of the epoch's permutation, padded by
    wrapping around so every rank has the same number of batches (as DistributedSampler does).
    pin_memory: pin the uint8 batch before a non-blocking copy (CUDA devices only).
    with_indices: yield (x, y, index) instead, index the batch's positions in `dataset` (int64, on `device`):
    for methods that keep per-sample state (CRD's memory bank). Off by default; the batches are the same.
    prep_threads: torch intra-op threads while a batch is assembled (restored before the batch is
    yielded; None leaves torch's setting). Batch ops are too small to gain from threads, and on a
    busy machine every multi-threaded op waits for a second core (measured 100x slower), so the
    default is 1.

    Epochs: `set_epoch(e)` selects epoch e; each `iter()` then uses the current epoch and
    advances it by one, so calling set_epoch is only required when resuming (or for clarity).
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: BatchTransform | None = None,
        seed: int = 0,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
        prep_threads: int | None = 1,
        with_indices: bool = False,
    ) -> None:
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.augment = augment
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.device = torch.device(device)
        self.channels_last = bool(channels_last)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.pin_memory = bool(pin_memory) and self.device.type == "cuda"
        self.prep_threads = prep_threads
        self.with_indices = bool(with_indices)
        self.epoch = 0
        c = dataset.image_shape[0]
        std = torch.tensor(dataset.std, dtype=torch.float32).view(1, c, 1, 1)
        mean = torch.tensor(dataset.mean, dtype=torch.float32).view(1, c, 1, 1)
        # (x / 255 - mean) / std == x * scale - shift, two in-place ops on the device.
        self._scale = (1.0 / (255.0 * std)).to(self.device)
        self._shift = (mean / std).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch `epoch`'s batches."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before drop_last)."""
        return math.ceil(len(self.dataset) / self.world_size)

    def __len__(self) -> int:
        n = self.num_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def indices(self, epoch: int | None = None) -> torch.Tensor:
        """This rank's sample order for `epoch` (default: the current one), int64 on the CPU."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 0))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        per_rank = self.num_samples
        total = per_rank * self.world_size
        if total > n:  # pad by wrapping so every rank gets per_rank samples
            order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        epoch = self.epoch
        self.epoch += 1
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        order = self.indices(epoch)
        images, labels = self.dataset.images, self.dataset.labels
        if images.device.type != "cpu":
            order = order.to(images.device)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch, 1, self.rank))
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            before = torch.get_num_threads()
            if self.prep_threads and self.prep_threads != before:
                torch.set_num_threads(self.prep_threads)
            try:
                batch = self._make_batch(images.index_select(0, idx), labels.index_select(0, idx), gen)
            finally:
                if torch.get_num_threads() != before:
                    torch.set_num_threads(before)
            if self.with_indices:
                batch = (*batch, idx.to(self.device))
            yield batch

    def _make_batch(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batch -> (augmented, normalised float32 on device, labels on device)."""
        if self.augment is not None:
            x = self.augment(x, gen)
        if self.pin_memory:
            x, y = x.pin_memory(), y.pin_memory()
        non_blocking = self.pin_memory or self.device.type != "cpu"
        x = x.to(self.device, non_blocking=non_blocking).to(torch.float32)
        x.mul_(self._scale).sub_(self._shift)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=non_blocking)
