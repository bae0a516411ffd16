"""Feature taps shared by the feature-based methods: which stages of `forward_features()` to pair, how to bring
two maps to one size, and the check that a model offers the pooled embedding. Models expose these through
their own API (`Features.stages`, `stage_channels`, `embedding_dim`), so no method knows an architecture."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def _describe(model: nn.Module) -> str:
    return f"{type(model).__name__} (stage_channels {list(model.stage_channels)})"


def select_stages(stages: Sequence[int] | None, student: nn.Module, teacher: nn.Module, method: str,
                  key: str = "stages") -> list[int]:
    """The indices into `Features.stages` that a feature method pairs between student and teacher.

    `stages` None means every stage but the stem (index 0), the reference code's `feats[1:]`; it needs both
    models to have as many stages. An index pairs the same stage of both models (negative counts from the
    deepest). Anything that does not fit is a ValueError naming `method.<key>` and the stages of both models,
    which the run turns into a config error before training starts. Shared by AT, SP and VID.
    """
    for role, model in (("student", student), ("teacher", teacher)):
        if not getattr(model, "stage_channels", None) or not hasattr(model, "forward_features"):
            raise ValueError(f"method.name '{method}' needs a {role} with feature stages (forward_features and "
                             f"stage_channels: a socratic zoo model, or an external one with feature_layers)")
    both = f"student {_describe(student)}, teacher {_describe(teacher)}"
    n_s, n_t = len(student.stage_channels), len(teacher.stage_channels)
    if stages is None:
        if n_s != n_t:
            raise ValueError(f"method.{key}: null pairs every stage but the stem, but the models have {n_s} and {n_t} "
                             f"stages ({both}); list the stages to pair, e.g. {key}: [1, 2, 3]")
        if n_s < 2:
            raise ValueError(f"method.{key}: null pairs every stage but the stem, and there is none ({both})")
        return list(range(1, n_s))
    stages = list(stages)
    if not stages:
        raise ValueError(f"method.{key} is empty: name at least one stage ({both})")
    for index in stages:
        if not (-n_s <= index < n_s and -n_t <= index < n_t):
            raise ValueError(f"method.{key}: stage {index} is out of range for the "
                             f"{'student' if not -n_s <= index < n_s else 'teacher'} ({both}; use "
                             f"{-min(n_s, n_t)}..{min(n_s, n_t) - 1})")
    for role, n in (("student", n_s), ("teacher", n_t)):
        absolute = [i % n for i in stages]
        if len(set(absolute)) < len(absolute):
            raise ValueError(f"method.{key}: {stages} names a stage of the {role} twice ({both})")
    return stages


def match_spatial(f_s: Tensor, f_t: Tensor, method: str, stage: int, key: str = "stages") -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two (B, C, H, W) maps to the size of the smaller, as the reference code does;
    maps that are neither (one larger in H, the other in W) or are not 4-d are a ValueError naming the stage."""
    if f_s.dim() != 4 or f_t.dim() != 4:
        raise ValueError(f"method.{key}: {method} needs (B, C, H, W) maps, but stage {stage} is "
                         f"{tuple(f_s.shape)} in the student and {tuple(f_t.shape)} in the teacher")
    size_s, size_t = tuple(f_s.shape[-2:]), tuple(f_t.shape[-2:])
    if size_s == size_t:
        return f_s, f_t
    if all(a >= b for a, b in zip(size_s, size_t)):
        return F.adaptive_avg_pool2d(f_s, size_t), f_t
    if all(a <= b for a, b in zip(size_s, size_t)):
        return f_s, F.adaptive_avg_pool2d(f_t, size_s)
    raise ValueError(f"method.{key}: {method} cannot match stage {stage}: the student's map is {size_s} and the "
                     f"teacher's {size_t} (neither is at least as large in both dimensions)")


def require_embeddings(method: str, *models: tuple[str, nn.Module]) -> None:
    """A ValueError naming the method when a model offers no `forward_features().embedding` (its pooled vector)."""
    for role, model in models:
        if not hasattr(model, "forward_features") or not getattr(model, "embedding_dim", None):
            inner = getattr(model, "model", None)  # a HookedModel or Teacher: name the model inside
            name = type(model).__name__ + (f" of {type(inner).__name__}" if isinstance(inner, nn.Module) else "")
            raise ValueError(f"method.name '{method}' needs a {role} with an embedding (forward_features and "
                             f"embedding_dim: a socratic zoo model, or any model whose classifier is an nn.Linear, "
                             f"whose input is the embedding); {name} has none")
