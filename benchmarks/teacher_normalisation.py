"""Top-1 of a zoo teacher fed inputs on three scales: normalised with the checkpoint's mean/std (as trained), raw
[0, 1] pixels, and [-1, 1]. What `socratic.load_teacher`'s normalisation (and its InputNormalizationWarning) is for.

    python benchmarks/teacher_normalisation.py --per-class 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import socratic

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=str(ROOT / "teachers/cifar10_jpeg/resnet20/model.pt"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/cifar10-jpeg/test"))
    parser.add_argument("--per-class", type=int, default=200, help="the first N test images of each class (sorted)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.data)
    images, labels = [], []
    for label, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for file in sorted(folder.glob("*.jpg"))[: args.per_class]:
            images.append(np.asarray(Image.open(file).convert("RGB")))
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor(labels)
    teacher = socratic.load_teacher(args.teacher, check_batches=0)

    def top1(inputs: torch.Tensor) -> float:
        with torch.no_grad():
            hits = sum(int((teacher(b).argmax(1) == t).sum()) for b, t in zip(inputs.split(250), y.split(250)))
        return 100.0 * hits / len(y)

    print(f"| {Path(args.teacher).parent.name} | {len(y)} | {top1((x - teacher.mean) / teacher.std):.1f} | "
          f"{top1(x):.1f} | {top1(x * 2 - 1):.1f} |")


if __name__ == "__main__":
    main()
