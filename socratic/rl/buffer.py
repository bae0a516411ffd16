"""The distillation replay memory: a FIFO ring of states (uint8 frames, or float32 vectors for continuous control)
with the teacher's outputs (Q-values, or a continuous policy's actions / Gaussian parameters).

Rusu et al. 2016 ("Policy Distillation", Appendix A) keep the last 540,000 teacher states (10 hours of play);
the DA paper (Wong et al., Sec. 3.3.1) collects 54,000 states per epoch into a 540,000-state buffer that
"maintains [its capacity] by removing excess states when new ones are added in a first-in-first-out
manner", and trains on one shuffled pass over the whole buffer per epoch.

Memory: capacity x prod(state shape) bytes for the states (540,000 Atari states of 4x84x84 are 15.2 GB;
MinAtar's 10x10xC states are at most 1 kB each) plus 4 x num_actions bytes each for the Q-values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


class StateBuffer:
    """Fixed-capacity FIFO of (state, teacher Q-values); adding past capacity drops the oldest states."""

    def __init__(self, capacity: int, state_shape: Sequence[int], num_actions: int,
                 state_dtype: np.dtype | type = np.uint8) -> None:
        if capacity <= 0:
            raise ValueError(f"buffer capacity must be > 0, got {capacity}")
        self.capacity = int(capacity)
        self.state_shape = tuple(int(v) for v in state_shape)
        self.num_actions = int(num_actions)
        self.states = np.empty((self.capacity, *self.state_shape), dtype=state_dtype)  # pages touched on write
        self.q_values = np.empty((self.capacity, self.num_actions), dtype=np.float32)
        self._next = 0  # where the next state goes
        self._size = 0
        self.added = 0  # states ever added

    def __len__(self) -> int:
        return self._size

    def add(self, states: np.ndarray, q_values: np.ndarray) -> None:
        """Append states (N, *state_shape) (cast to the buffer's dtype) and their Q-values (N, num_actions)."""
        states = np.asarray(states)
        q_values = np.asarray(q_values, dtype=np.float32)
        if states.shape[1:] != self.state_shape or q_values.shape != (len(states), self.num_actions):
            raise ValueError(f"expected states (N, {self.state_shape}) and Q-values (N, {self.num_actions}), got "
                             f"{states.shape} and {q_values.shape}")
        self.added += len(states)
        if len(states) > self.capacity:  # only the newest `capacity` survive
            states, q_values = states[-self.capacity:], q_values[-self.capacity:]
        n = len(states)
        first = min(n, self.capacity - self._next)
        self.states[self._next:self._next + first] = states[:first]
        self.q_values[self._next:self._next + first] = q_values[:first]
        if n > first:
            self.states[:n - first] = states[first:]
            self.q_values[:n - first] = q_values[first:]
        self._next = (self._next + n) % self.capacity
        self._size = min(self.capacity, self._size + n)

    def state_dict(self) -> dict[str, int]:
        """Where the ring stands (not its contents): enough to check a rebuilt buffer (`rewind`)."""
        return {"next": self._next, "size": self._size, "added": self.added}

    def rewind(self, state: dict[str, int], adds: Sequence[int]) -> None:
        """Empty the buffer and put its write position where it was before the last additions of `adds`
        (their sizes, oldest first) that led to `state`, so that adding the same batches again rebuilds the
        same contents *and* ring layout (minibatches gather in ring order). Use `check(state)` afterwards."""
        written = sum(min(int(n), self.capacity) for n in adds)
        self._next = (int(state["next"]) - written) % self.capacity
        self._size = 0
        self.added = int(state["added"]) - sum(int(n) for n in adds)

    def check(self, state: dict[str, int]) -> None:
        """Raise if the buffer does not stand where `state` says (a rebuild that went wrong)."""
        if self.state_dict() != {k: int(v) for k, v in state.items()}:
            raise RuntimeError(f"rebuilt state buffer {self.state_dict()} does not match the checkpoint's {state}")

    def chronological(self) -> np.ndarray:
        """Indices of the stored states from the oldest to the newest."""
        start = (self._next - self._size) % self.capacity
        return (start + np.arange(self._size)) % self.capacity

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch_size` random states (with replacement) and their Q-values, as tensors."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty buffer")
        index = rng.integers(0, self._size, size=batch_size)
        index = self.chronological()[index]
        return torch.from_numpy(self.states[index]), torch.from_numpy(self.q_values[index])

    def epoch(self, batch_size: int, rng: np.random.Generator, max_batches: int | None = None
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled pass over every stored state in minibatches (the last one may be smaller);
        `max_batches` stops the pass early (CPU-scale runs)."""
        order = self.chronological()[rng.permutation(self._size)]
        for count, start in enumerate(range(0, self._size, batch_size)):
            if max_batches is not None and count >= max_batches:
                return
            index = np.sort(order[start:start + batch_size])  # sorted: faster gathers, same batch content
            yield torch.from_numpy(self.states[index]), torch.from_numpy(self.q_values[index])

    def num_batches(self, batch_size: int, max_batches: int | None = None) -> int:
        n = -(-self._size // batch_size)
        return n if max_batches is None else min(n, max_batches)


__all__ = ["StateBuffer"]
