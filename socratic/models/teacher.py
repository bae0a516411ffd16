"""A trained model as a teacher for a user's own loop: frozen, always in eval mode, and aware of the input
normalisation it was trained with (`socratic.load_teacher` builds one from a checkpoint).

A teacher fed inputs on another scale than its training data predicts far worse and says nothing (the CIFAR-10
resnet20 of the zoo on 2,000 test images: 85.8 % top-1 normalised, 42.1 % on raw [0, 1] pixels, 76.0 % on [-1, 1];
benchmarks/results/teacher_normalisation.md). `Teacher` either applies the normalisation itself (`normalize=True`:
feed it [0, 1] pixels) or checks the statistics of the first few batches it sees and warns once when they clearly
are not what it expects.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

# Attributes of the feature API (`socratic.models.features.FeatureModel`, `HookedModel`) read from the model.
_DELEGATED = frozenset({"stage_channels", "embedding_dim", "num_classes", "has_head", "forward_head",
                        "get_classifier", "pre_logits", "classifier_name", "feature_layers"})


class InputNormalizationWarning(UserWarning):
    """A teacher's input does not look like the data it was trained on (a missing or double normalisation)."""


def input_mismatch(x: Tensor, normalized_input: bool) -> str | None:
    """What is clearly wrong with a batch `x` (B, C, H, W) for a model expecting normalised input
    (`normalized_input`: per-channel mean ~0 and std ~1) or [0, 1] pixels; None when it looks right or the batch
    is too small to tell (fewer than 8 images).

    Normalised: every channel's mean within +-0.8 and std within [0.6, 1.7] (a batch of 8 normalised images
    stays well inside; raw [0, 1] pixels have std ~0.25, [-1, 1] ~0.5, [0, 255] ~60). Pixels: within
    [-0.1, 1.1].
    """
    if x.dim() != 4 or x.shape[0] < 8 or not x.is_floating_point():
        return None
    x = x.detach().float()
    if not normalized_input:
        low, high = float(x.min()), float(x.max())
        if low < -0.1 or high > 1.1:
            return f"values in [{low:.2f}, {high:.2f}], not [0, 1] pixels (is the batch normalised already?)"
        return None
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    if bool((mean.abs() > 0.8).any() | (std < 0.6).any() | (std > 1.7).any()):
        fmt = lambda t: "[" + ", ".join(f"{v:.3g}" for v in t.tolist()) + "]"  # noqa: E731
        return f"per-channel mean {fmt(mean)} and std {fmt(std)}, not ~0 and ~1"
    return None


class Teacher(nn.Module):
    """A frozen model (no gradients to its weights, eval mode whatever `train()` is called with) and the
    per-channel `mean`/`std` its inputs were normalised with.

    normalize: True: inputs are [0, 1] pixels and the teacher normalises them itself; False: inputs are
        normalised already (as socratic's loaders do).
    check_batches: how many batches of 8 or more images are checked against what the teacher expects
        (`input_mismatch`); the first mismatch is one `InputNormalizationWarning`, then checking stops.
    input_shape: (C, H, W) of its training images (the size of a feature-tap probe, `as_feature_model`).

    The model's feature API (`forward_features`, `stage_channels`, `embedding_dim`, its head) is offered
    unchanged, with the normalisation applied first, so every registered method takes a `Teacher`.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 *, normalize: bool = False, check_batches: int = 3, input_shape: Sequence[int] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        if normalize and (mean is None or std is None):
            raise ValueError("Teacher(normalize=True) needs the mean and std its inputs were normalised with")
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.normalize = bool(normalize)
        stats = mean is not None and std is not None
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
                             if stats else None, persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
                             if stats else None, persistent=False)
        self.checks_left = int(check_batches) if (stats or normalize) else 0
        self.input_shape = tuple(int(v) for v in input_shape) if input_shape is not None else None
        self.meta = dict(meta or {})
        self.train(False)

    def train(self, mode: bool = True) -> "Teacher":
        """Stays in eval mode: a frozen teacher's BatchNorm statistics must not move."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}"

    def prepare(self, x: Tensor) -> Tensor:
        """The model's input: `x` normalised (normalize=True) or as it is, checked on the first batches."""
        if self.checks_left > 0 and x.dim() == 4 and x.shape[0] >= 8:
            self.checks_left -= 1
            problem = input_mismatch(x, normalized_input=not self.normalize)
            if problem is not None:
                self.checks_left = 0
                expected = ("[0, 1] pixels (normalize=True)" if self.normalize else
                            f"inputs normalised with mean {self._list(self.mean)} and std {self._list(self.std)}")
                fix = ("pass unnormalised [0, 1] images, or load it with normalize=False" if self.normalize else
                       "normalise the batch with that mean and std, or load the teacher with normalize=True "
                       "and feed [0, 1] pixels")
                warnings.warn(f"{type(self.model).__name__} teacher expects {expected}, but this batch has "
                              f"{problem}: its predictions will be poor; {fix}", InputNormalizationWarning,
                              stacklevel=3)
        if self.normalize:
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x

    @staticmethod
    def _list(t: Tensor) -> str:
        return "[" + ", ".join(f"{v:.4g}" for v in t.flatten().tolist()) + "]"

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.prepare(x))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self._modules["model"]
            if name == "forward_features":
                inner = getattr(model, "forward_features")  # AttributeError if the model has none
                return lambda x: inner(self.prepare(x))
            if name in _DELEGATED:
                return getattr(model, name)
            raise
