"""Fast path vs plain path for the same KD step, in one process on the same machine.

fast:  decoded uint8 tensors in memory, batch augmentation on tensors, bf16 autocast, channels_last.
plain: a PIL-transform Dataset over the JPEG files + torch DataLoader (2 workers, as mdistiller's
       CIFAR recipe), fp32, contiguous memory.

Speed: img/s of the end-to-end loop (data + resnet32x4 -> resnet8x4 KD step), paths alternated
ABAB... so drift on a noisy machine hits both; the ratio is the result.
Accuracy (--accuracy-seeds N): KD from a committed CPU-scale teacher for a short run with each path,
N seeds each, evaluated in fp32 on the test split, to show that bf16 does not cost accuracy.

    python benchmarks/fast_path.py --rounds 3 --steps 30 --accuracy-seeds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from socratic.data import ImageDataset, TensorLoader, default_augment, load_dataset, stratified_indices
from socratic.data.readers import find_classes, list_image_files
from socratic.distillers import create_distiller
from socratic.engine.checkpoint import load_weights
from socratic.engine.evaluate import evaluate
from socratic.engine.runtime import autocast
from socratic.models import create_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


class PILImageFolder(Dataset):
    """The usual per-sample pipeline: decode a JPEG, pad-4 random crop, flip, to normalised fp32 tensor."""

    def __init__(self, folder: Path, mean: tuple, std: tuple, train: bool, indices: list[int] | None = None) -> None:
        files = list_image_files(folder, find_classes(folder))
        self.files = [files[i] for i in indices] if indices is not None else files
        self.mean = np.asarray(mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(std, dtype=np.float32)[:, None, None]
        self.train = train

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[index]
        image = Image.open(path).convert("RGB")
        if self.train:
            width, height = image.size
            image = ImageOps.expand(image, border=4, fill=0)
            left, top = random.randint(0, 8), random.randint(0, 8)
            image = image.crop((left, top, left + width, top + height))
            if random.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((array - self.mean) / self.std), label


def plain_loader(folder: Path, mean: tuple, std: tuple, batch_size: int, train: bool, seed: int,
                 indices: list[int] | None = None) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(PILImageFolder(folder / "train", mean, std, train, indices), batch_size=batch_size, shuffle=train,
                      num_workers=2, drop_last=train, generator=generator, persistent_workers=False)


def kd_setup(teacher: str, student: str, num_classes: int, channels_last: bool, seed: int,
             teacher_checkpoint: str | None = None):
    torch.manual_seed(seed)
    teacher_model = create_model(teacher, num_classes=num_classes)
    if teacher_checkpoint:
        load_weights(teacher_model, teacher_checkpoint, role="teacher")
    distiller = create_distiller("kd", create_model(student, num_classes=num_classes), [teacher_model])
    if channels_last:
        distiller = distiller.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(distiller.student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    return distiller.train(), optimizer


def kd_step(distiller, optimizer, x, y, precision: str) -> None:
    with autocast(torch.device("cpu"), precision):
        _, losses = distiller.forward_train(x, y)
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()


def time_loop(batches, distiller, optimizer, precision: str, steps: int, warmup: int) -> float:
    """img/s of `steps` loop iterations (data + KD step) after `warmup` untimed ones."""
    iterator = iter(batches)
    for _ in range(warmup):
        x, y = next(iterator)
        kd_step(distiller, optimizer, x, y, precision)
    seen, start = 0, time.perf_counter()
    for _ in range(steps):
        x, y = next(iterator)
        kd_step(distiller, optimizer, x, y, precision)
        seen += y.numel()
    return seen / (time.perf_counter() - start)


def speed(args: argparse.Namespace, folder: Path) -> dict:
    train = load_dataset("imagefolder", root=folder, split="train")
    results: dict[str, list[float]] = {"fast": [], "plain": []}
    for round_index in range(args.rounds):
        for path in ("fast", "plain"):
            fast = path == "fast"
            distiller, optimizer = kd_setup("resnet32x4", "resnet8x4", train.num_classes, fast, round_index)
            if fast:
                batches = TensorLoader(train, args.batch_size, shuffle=True, augment=default_augment("imagefolder"),
                                       seed=round_index, drop_last=True, channels_last=True)
            else:
                batches = plain_loader(folder, train.mean, train.std, args.batch_size, True, round_index)
            rate = time_loop(batches, distiller, optimizer, "bf16" if fast else "fp32", args.steps, args.warmup)
            results[path].append(rate)
            print(f"round {round_index}: {path} {rate:,.1f} img/s", flush=True)
    fast, plain = statistics.median(results["fast"]), statistics.median(results["plain"])
    return {"fast_img_per_s": results["fast"], "plain_img_per_s": results["plain"],
            "fast_median": fast, "plain_median": plain, "ratio": fast / plain}


# accuracy paths: "fast" (tensor pipeline, bf16), "fast_fp32" (tensor pipeline, fp32: isolates the precision),
# "plain" (PIL DataLoader, fp32)
PRECISION = {"fast": "bf16", "fast_fp32": "fp32", "plain": "fp32"}


def accuracy(args: argparse.Namespace, folder: Path) -> dict:
    train = load_dataset("imagefolder", root=folder, split="train")
    test = load_dataset("imagefolder", root=folder, split="test")
    indices = stratified_indices(train.labels, train.num_classes, count=args.accuracy_images, seed=0)
    subset = ImageDataset(train.images[indices], train.labels[indices], train.classes, train.mean, train.std, train.name)
    test_batches = TensorLoader(test, 500)
    out: dict[str, list[float]] = {path: [] for path in args.accuracy_paths}
    for seed in range(args.accuracy_seeds):
        for path in args.accuracy_paths:
            fast = path != "plain"  # tensor pipeline + channels_last; precision from PRECISION
            distiller, optimizer = kd_setup(args.teacher, args.student, train.num_classes, fast, seed, args.teacher_checkpoint)
            for epoch in range(args.accuracy_epochs):
                for group in optimizer.param_groups:
                    group["lr"] = 0.05 * 0.5 * (1 + np.cos(np.pi * epoch / args.accuracy_epochs))
                if fast:
                    batches = TensorLoader(subset, 128, shuffle=True, augment=default_augment("imagefolder"),
                                           seed=seed, channels_last=True)
                    batches.set_epoch(epoch)
                else:
                    batches = plain_loader(folder, train.mean, train.std, 128, True, seed * 1000 + epoch,
                                           [int(i) for i in indices])
                distiller.train()
                for x, y in batches:
                    kd_step(distiller, optimizer, x, y, PRECISION[path])
            top1 = evaluate(distiller.student.to(memory_format=torch.contiguous_format), test_batches,
                            torch.device("cpu"))["top1"]
            out[path].append(top1)
            print(f"seed {seed}: {path} student top-1 {top1:.2f}", flush=True)
    return {f"{path}_top1": values for path, values in out.items()} | {
        f"{path}_top1_mean_std": [statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0]
        for path, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="speed rounds (0 skips the speed part)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--accuracy-seeds", type=int, default=0)
    parser.add_argument("--accuracy-paths", nargs="+", choices=sorted(PRECISION), default=["fast", "plain"])
    parser.add_argument("--accuracy-epochs", type=int, default=2)
    parser.add_argument("--accuracy-images", type=int, default=10000)
    parser.add_argument("--teacher", default="resnet20")
    parser.add_argument("--teacher-checkpoint", default=str(ROOT / "teachers" / "cifar10_jpeg" / "resnet20" / "model.pt"))
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--out", default=str(RESULTS / "fast_path.json"))
    args = parser.parse_args()
    folder, out = Path(args.data), Path(args.out)
    # the speed and accuracy parts may run separately: each updates its own keys of the result file
    result = json.loads(out.read_text()) if out.is_file() else {}
    command = "python " + " ".join(sys.argv)
    machine = {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}
    if args.rounds:
        result["speed"] = {"command": command, "machine": machine, **speed(args, folder)}
        print(json.dumps(result["speed"], indent=2))
    if args.accuracy_seeds:
        key = "accuracy" if args.accuracy_paths == ["fast", "plain"] else "accuracy_" + "_".join(args.accuracy_paths)
        result[key] = {"command": command, "machine": machine, "teacher": args.teacher, "student": args.student,
                              "epochs": args.accuracy_epochs, "train_images": args.accuracy_images,
                              "eval": "fp32, full test split", **accuracy(args, folder)}
        print(json.dumps(result[key], indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
