"""DA's cost over a KD step, side by side in one process: the KD step, the DA step as an earlier revision of
socratic computed it ("before", its socratic/augment/disagreement.py loaded from git), as this checkout computes it
("after"), and adaptive DA at the given `da.select` values. Rounds alternate the variants, so every ratio is
between steps timed under the same load; the perturbed batches of before and after are compared bit for bit.

    python benchmarks/da_cost.py --before e02981f --threads 2 --rounds 3 --json benchmarks/results/da_cost/after.json

With --cpu-time the steps are timed in process CPU time instead of wall time: at one thread that is the step's
work, which other processes on a shared machine change far less than its wall time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from socratic.augment import DisagreementAugmentation  # noqa: E402
from socratic.bench import expected_da_over_kd, time_steps  # noqa: E402
from socratic.context import TrainContext  # noqa: E402
from socratic.distillers import create_distiller  # noqa: E402
from socratic.engine.trainer import train_step  # noqa: E402
from socratic.models import count_call_flops, count_flops, create_model  # noqa: E402


def load_revision(revision: str) -> Any:
    """socratic/augment/disagreement.py at `revision`, imported as a module of its own."""
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:socratic/augment/disagreement.py"],
                          check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "disagreement_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("disagreement_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--before", default="e02981f", help="git revision of the 'before' DA step")
    parser.add_argument("--select", type=float, nargs="*", default=[0.5, 0.25])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--cpu-time", action="store_true", help="process CPU time instead of wall time")
    parser.add_argument("--no-flops", action="store_true", help="skip counting each step's FLOPs (one more step each)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    teacher = create_model(args.teacher, num_classes=args.num_classes).to(memory_format=fmt)
    student = create_model(args.student, num_classes=args.num_classes).to(memory_format=fmt)
    f_t, f_s = count_flops(teacher), count_flops(student)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=generator).contiguous(memory_format=fmt)
    y = torch.randint(0, args.num_classes, (args.batch_size,), generator=generator)
    distiller = create_distiller("kd", student, [teacher]).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.0, momentum=0.9)  # lr 0: every step sees the same weights
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    before = load_revision(args.before).DisagreementAugmentation(prob=1.0, after_every=0)
    after = DisagreementAugmentation(prob=1.0, after_every=0)
    identical = torch.equal(before(x, student, distiller.teachers), after(x, student, distiller.teachers))
    variants: dict[str, Callable[[], Any]] = {"kd": lambda: train_step(distiller, x, y, TrainContext(), optimizer, scaler)}
    for name, da in (("da_before", before), ("da_after", after),
                     *((f"da_select{s}", DisagreementAugmentation(prob=1.0, after_every=0, select=s)) for s in args.select)):
        variants[name] = (lambda da=da: train_step(distiller, x, y, TrainContext(), optimizer, scaler, augmentation=da))
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    def cpu_seconds(step: Callable[[], Any]) -> float:
        for _ in range(args.warmup):
            step()
        start = time.process_time()
        for _ in range(args.steps):
            step()
        return (time.process_time() - start) / args.steps

    for round_ in range(args.rounds):
        for name, step in variants.items():
            seconds[name].append(cpu_seconds(step) if args.cpu_time
                                 else time_steps(step, args.steps, args.warmup, torch.device("cpu")))
        print(f"round {round_}: " + ", ".join(f"{n} {seconds[n][-1] / seconds['kd'][-1]:.2f}" for n in variants), flush=True)
    flops = {} if args.no_flops else {name: count_call_flops(step) / args.batch_size for name, step in variants.items()}
    result: dict[str, Any] = {
        "teacher": args.teacher, "student": args.student, "batch_size": args.batch_size, "threads": args.threads,
        "channels_last": args.channels_last, "clock": "process CPU time" if args.cpu_time else "wall", "rounds": args.rounds, "steps": args.steps, "before": args.before,
        "perturbed_batch_bit_identical": identical,
        "kd_img_per_s_median": args.batch_size / statistics.median(seconds["kd"]),
    }
    for name in variants:
        if name == "kd":
            continue
        ratios = [s / k for s, k in zip(seconds[name], seconds["kd"])]
        select = float(name.removeprefix("da_select")) if name.startswith("da_select") else 1.0
        result[name] = {"over_kd_per_round": ratios, "over_kd_median": statistics.median(ratios),
                        "over_kd_expected": expected_da_over_kd(f_s, f_t, 1, select)}
        if flops:
            result[name]["over_kd_flops"] = flops[name] / flops["kd"]
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
