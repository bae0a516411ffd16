"""Robustness to disagreement-augmented samples: accuracy against the number of DA steps on validation images.

Wong et al., "A Socratic Approach to Knowledge Distillation" (ICCV 2025 submission), Sec. 4.3 / Figure 4:
the validation images are perturbed with Disagreement Augmentation between a student and the teacher (a fresh
Adam on the images, loss = -MSE of the per-sample L1-normalised logits), and the accuracy of both models on
the perturbed set is read after 0, 1, ..., N steps. Each student gets its own perturbed set (the
disagreement is with *that* student), so the teacher has one curve per student.

Both models are in eval mode here (BatchNorm on running statistics), as for any evaluation. The accuracy at
step k is read from the very forward pass that computes the gradient of step k+1, so N steps cost N
forward+input-backward passes of each model plus one last forward.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from socratic.augment.disagreement import PAPER_LR, DisagreementAugmentation, disagreement_per_sample
from socratic.config import ConfigError
from socratic.data import ImageDataset, TensorLoader, stratified_subset
from socratic.engine.checkpoint import CheckpointError
from socratic.engine.runtime import select_device

CSV_FIELDS = ("steps", "model", "role", "perturbed_against", "checkpoint", "top1", "disagreement", "samples")


def checkpoint_label(path: str | Path, meta: dict[str, Any]) -> str:
    """A short name for a checkpoint: `<model> (<run>/<seed>)` for run-folder checkpoints, else the file stem."""
    path = Path(path)
    if path.parent.name == "checkpoints" and len(path.parents) >= 3:
        where = f"{path.parents[2].name}/{path.parents[1].name}"
    else:
        where = path.stem
    return f"{meta['model_name']} ({where})"


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return out


def validation_set(meta: dict[str, Any], dataset: str | None, root: str | None, split: str,
                   limit: int | None, seed: int = 0) -> ImageDataset:
    """The split the models are measured on; `limit` images drawn stratified by class (all when None/0)."""
    from socratic.evaluation import checkpoint_dataset

    data = checkpoint_dataset("the teacher", meta, dataset, root, split)
    if limit and limit < len(data):
        data = stratified_subset(data, count=max(limit, data.num_classes), seed=seed)
    return data


def robustness_curves(teacher: str | Path, students: list[str | Path], *, steps: int = 10, lr: float = PAPER_LR,
                      dataset: str | None = None, root: str | None = None, split: str = "test",
                      limit: int | None = 1000, batch_size: int = 256, device: str = "auto",
                      objective: str = "l1_mse", optimizer: str = "adam", seed: int = 0) -> list[dict[str, Any]]:
    """Rows (one per model, student set and step count 0..steps) of top-1 accuracy on DA-perturbed images."""
    from socratic.evaluation import load_checkpoint_model

    if steps < 0:
        raise ConfigError(f"--steps must be >= 0, got {steps}")
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit must be >= 0 (0 = the whole split), got {limit}")
    if not students:
        raise ConfigError("--students: give at least one student checkpoint")
    try:
        da = DisagreementAugmentation(steps=steps, lr=lr, prob=1.0, objective=objective, optimizer=optimizer,
                                      after_every=0)
    except ValueError as err:
        raise ConfigError(str(err).replace("da.", "--")) from err
    dev = select_device(device)
    teacher_model, teacher_meta = load_checkpoint_model(teacher)
    teacher_model.to(dev)
    data = validation_set(teacher_meta, dataset, root, split, limit, seed)
    loader = TensorLoader(data, batch_size, shuffle=False, augment=None, device=dev)
    loaded = [load_checkpoint_model(path) for path in students]
    for path, (_, meta) in zip(students, loaded):
        if meta["num_classes"] != teacher_meta["num_classes"]:
            raise CheckpointError(f"{path}: student has {meta['num_classes']} classes, "
                                  f"the teacher {teacher_meta['num_classes']}")
    labels = _unique([checkpoint_label(p, m) for p, (_, m) in zip(students, loaded)])
    teacher_label = checkpoint_label(teacher, teacher_meta)
    rows: list[dict[str, Any]] = []
    for path, label, (student, _) in zip(students, labels, loaded):
        student.to(dev).eval()
        correct_student = torch.zeros(steps + 1, dtype=torch.long)
        correct_teacher = torch.zeros(steps + 1, dtype=torch.long)
        disagreement_sum = torch.zeros(steps + 1, dtype=torch.float64)
        seen = 0
        for x, y in loader:
            def observe(k: int, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                        y: torch.Tensor = y) -> None:
                correct_student[k] += int((student_logits.argmax(1) == y).sum())
                correct_teacher[k] += int((teacher_logits.argmax(1) == y).sum())
                disagreement_sum[k] += float(disagreement_per_sample(student_logits, teacher_logits, objective).sum())

            da.perturb(x, student, [teacher_model], final_forward=True, observe=observe)
            seen += y.numel()
        for k in range(steps + 1):
            common = {"steps": k, "perturbed_against": label, "disagreement": float(disagreement_sum[k]) / seen,
                      "samples": seen}
            rows.append({**common, "model": label, "role": "student", "checkpoint": str(path),
                         "top1": 100.0 * int(correct_student[k]) / seen})
            rows.append({**common, "model": teacher_label, "role": "teacher", "checkpoint": str(teacher),
                         "top1": 100.0 * int(correct_teacher[k]) / seen})
        student.cpu()
    return rows


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(CSV_FIELDS))
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_curves(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """All models on one axis: each student solid, the teacher on that student's perturbed set dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sets = list(dict.fromkeys(r["perturbed_against"] for r in rows))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(sets):
        color = colors[i % len(colors)]
        for role, style in (("student", "-o"), ("teacher", "--s")):
            mine = [r for r in rows if r["perturbed_against"] == name and r["role"] == role]
            points = sorted((r["steps"], r["top1"]) for r in mine)
            model = mine[0]["model"]
            label = model if role == "student" else f"teacher {model} (set of {name})"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, color=color, label=label, markersize=4)
    ax.set_xlabel("DA steps on the validation images")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_robustness(teacher: str | Path, students: list[str | Path], out: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Measure the curves and write `<out>/robustness.csv` and `<out>/robustness.png`."""
    rows = robustness_curves(teacher, students, **kwargs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = rows[0]["samples"] if rows else 0
    title = (f"Accuracy on DA-perturbed {kwargs.get('split', 'test')} images ({samples}), "
             f"lr {kwargs.get('lr', PAPER_LR)}, {kwargs.get('optimizer', 'adam')}")
    csv_path = write_csv(rows, out / "robustness.csv")
    png_path = plot_curves(rows, out / "robustness.png", title)
    return {"csv": str(csv_path), "png": str(png_path), "rows": rows}
