"""Checkpoints: written atomically, read with `weights_only=True` so a file can never run code."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unsafe, corrupt or does not fit the model it is loaded into."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint made of tensors and plain data; anything that would unpickle code is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects that only a full unpickle could build "
            f"(weights_only=True rejected it: {str(err).splitlines()[0]}). Only load files you trust "
            "as tensors; re-save the state dict with torch.save(model.state_dict(), path)."
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict (a state dict or a socratic checkpoint), "
                              f"got {type(state).__name__}")
    return state


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of a socratic checkpoint, or the dict itself when it is a plain state dict."""
    return checkpoint["model"] if isinstance(checkpoint.get("model"), dict) else checkpoint


def non_finite_tensors(weights: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of `weights` that hold a NaN or an infinity, with what they hold."""
    found = []
    for name, value in weights.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            nan, inf = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
            found.append(f"{name} ({nan} NaN, {inf} inf of {value.numel()})")
    return found


def check_finite(weights: dict[str, Any], path: str | Path, *, role: str = "model") -> None:
    """Refuse weights with NaN/inf: a model built from them predicts nothing meaningful (a NaN teacher stops a
    run at its first step, a NaN checkpoint evaluates to chance accuracy with a NaN loss)."""
    bad = non_finite_tensors(weights)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(f"{role}: checkpoint {path} holds non-finite weights (NaN or inf) in "
                              f"{len(bad)} tensor(s): {'; '.join(bad[:3])}{more}. Use a checkpoint saved before "
                              "the training diverged.")


def load_weights(model: nn.Module, path: str | Path, *, role: str = "model",
                 require_finite: bool = True) -> dict[str, Any]:
    """Load weights into `model`, explaining any mismatch (architecture, class count) in one message.

    With `require_finite` (the default, which teacher loaders and `socratic evaluate` rely on) weights holding
    NaN or inf are refused with a `CheckpointError` naming the file and the tensors. Returns the checkpoint's
    metadata (`meta`), empty for a plain state dict.
    """
    checkpoint = load_checkpoint(path)
    weights = model_state(checkpoint)
    meta = checkpoint.get("meta", {}) if "model" in checkpoint else {}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong_shape = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong_shape:
        made_by = f" (made for {meta.get('model_name')} with {meta.get('num_classes')} classes)" if meta else ""
        details = []
        if wrong_shape:
            details.append("shape mismatch: " + "; ".join(wrong_shape[:3]))
        if missing:
            details.append(f"{len(missing)} missing keys, e.g. {', '.join(missing[:3])}")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected keys, e.g. {', '.join(unexpected[:3])}")
        raise CheckpointError(
            f"{role}: checkpoint {path}{made_by} does not fit the architecture {type(model).__name__}: "
            + " | ".join(details)
        )
    if require_finite:
        check_finite(weights, path, role=role)
    model.load_state_dict(weights)
    return meta
