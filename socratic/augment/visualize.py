"""Pictures of Disagreement Augmentation: original, perturbed and amplified-difference images.

Wong et al., "A Socratic Approach to Knowledge Distillation" (ICCV 2025 submission), Figure 3: images before
and after DA with the ground-truth label, the student's and the teacher's top-3 predictions, and the MSE
between their logits. Here the MSE shown is the DA objective itself (MSE of the per-sample L1-normalised
logits, as the paper's loss), on the clean and on the perturbed image. Both models are in eval mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from socratic.augment.disagreement import PAPER_LR, DisagreementAugmentation, disagreement_per_sample
from socratic.augment.robustness import checkpoint_label, validation_set
from socratic.config import ConfigError
from socratic.engine.checkpoint import CheckpointError
from socratic.engine.runtime import select_device


def _top3(logits: torch.Tensor, classes: list[str]) -> str:
    probs = logits.float().softmax(-1)
    values, indices = probs.topk(min(3, probs.numel()))
    return ", ".join(f"{classes[int(i)]} {float(v):.2f}" for v, i in zip(values, indices))


def da_examples(teacher: str | Path, student: str | Path, *, dataset: str | None = None, root: str | None = None,
                split: str = "test", count: int = 8, steps: int = 1, lr: float = PAPER_LR, seed: int = 0,
                device: str = "auto") -> dict[str, Any]:
    """`count` images (a seeded draw from the split) before and after `steps` DA steps, with both models'
    logits at both points. Images are returned in [0, 1] pixel space, (N, C, H, W) on the CPU."""
    from socratic.evaluation import load_checkpoint_model

    if count < 1:
        raise ConfigError(f"--count must be >= 1, got {count}")
    if steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {steps}")
    try:
        da = DisagreementAugmentation(steps=steps, lr=lr, prob=1.0, after_every=0)
    except ValueError as err:
        raise ConfigError(str(err).replace("da.", "--")) from err
    dev = select_device(device)
    teacher_model, teacher_meta = load_checkpoint_model(teacher)
    student_model, student_meta = load_checkpoint_model(student)
    if student_meta["num_classes"] != teacher_meta["num_classes"]:
        raise CheckpointError(f"{student}: student has {student_meta['num_classes']} classes, "
                              f"the teacher {teacher_meta['num_classes']}")
    data = validation_set(teacher_meta, dataset, root, split, limit=None)
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(data), generator=generator)[: min(count, len(data))]
    c = data.image_shape[0]
    mean = torch.tensor(data.mean, dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32).view(1, c, 1, 1)
    x = ((data.images[index].float() / 255.0 - mean) / std).to(dev)
    labels = data.labels[index]
    teacher_model.to(dev).eval()
    student_model.to(dev).eval()
    logits: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def observe(k: int, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
        if k in (0, steps):
            logits[k] = (student_logits.cpu(), teacher_logits.cpu())

    x_new = da.perturb(x, student_model, [teacher_model], final_forward=True, observe=observe)
    return {
        "original": (x.cpu() * std + mean).clamp(0, 1),
        "perturbed": (x_new.cpu() * std + mean).clamp(0, 1),
        "difference": (x_new.cpu() - x.cpu()) * std,  # in [0, 1] pixel units, unclamped
        "labels": labels,
        "classes": list(data.classes),
        "before": logits[0],
        "after": logits[steps],
        "student": checkpoint_label(student, student_meta),
        "teacher": checkpoint_label(teacher, teacher_meta),
        "steps": steps,
        "lr": lr,
    }


def _show(ax: Any, image: torch.Tensor) -> None:
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def visualize_da(teacher: str | Path, student: str | Path, out: str | Path = "da.png", *, amplify: float = 50.0,
                 **kwargs: Any) -> Path:
    """Write a PNG grid: one row per image; columns original, perturbed, 0.5 + amplify * difference."""
    if not amplify > 0:
        raise ConfigError(f"--amplify must be > 0, got {amplify}")
    ex = da_examples(teacher, student, **kwargs)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ex["original"].shape[0]
    fig, axes = plt.subplots(rows, 3, figsize=(10, 2.9 * rows), squeeze=False)
    classes = ex["classes"]
    for i in range(rows):
        for column, key in enumerate(("before", "after")):
            s_logits, t_logits = ex[key][0][i], ex[key][1][i]
            mse = float(disagreement_per_sample(s_logits[None], t_logits[None])[0])
            ax = axes[i, column]
            _show(ax, ex["original" if key == "before" else "perturbed"][i])
            head = f"true: {classes[int(ex['labels'][i])]}\n" if key == "before" else ""
            ax.set_xlabel(f"{head}S: {_top3(s_logits, classes)}\nT: {_top3(t_logits, classes)}\nMSE {mse:.3g}",
                          fontsize=7)
        diff = ex["difference"][i]
        _show(axes[i, 2], (0.5 + amplify * diff).clamp(0, 1))
        axes[i, 2].set_xlabel(f"max |Δ| {float(diff.abs().max()):.4f} in [0, 1] pixels (shown ×{amplify:g})",
                              fontsize=7)
    axes[0, 0].set_title("original", fontsize=9)
    axes[0, 1].set_title(f"after {ex['steps']} DA step(s), lr {ex['lr']:g}", fontsize=9)
    axes[0, 2].set_title(f"difference ×{amplify:g}", fontsize=9)
    fig.suptitle(f"Disagreement Augmentation: S = {ex['student']}, T = {ex['teacher']}\n"
                 f"MSE = disagreement of per-sample L1-normalised logits", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
