"""MKDT at CPU scale (benchmarks/results/mkdt.md): the pipeline's stages with their time and peak memory, the
evaluation of MKDT 2 % against the random 2 % subset, the high-loss 2 % subset and no pre-training (seeds 0, 1, 2),
and the peak memory of the constant-memory (recompute) and unrolled meta-gradients against N.

    python benchmarks/mkdt.py pipeline [--config configs/mkdt/cifar10_jpeg_cpu.yaml]
    python benchmarks/mkdt.py memory --out benchmarks/results/mkdt_memory.json
    python benchmarks/mkdt.py table

Every stage is the `socratic dataset-distill` command in its own process (one thread); stages that do not depend
on each other run side by side (see `pipeline`).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/mkdt/cifar10_jpeg_cpu.yaml"
SEEDS = (0, 1, 2)


def socratic(*args: str) -> None:
    command = [sys.executable, "-m", "socratic", "dataset-distill", *args]
    print("$", " ".join(command[1:]), flush=True)
    start = time.time()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    print(f"  done in {time.time() - start:.0f} s: {' '.join(args[:1])} {' '.join(args[2:])}", flush=True)


def _eval(config: str, source: str, seed: int) -> None:
    socratic("eval", config, f"eval.source={source}", f"seed={seed}", "source_seed=0", "--overwrite")


def pipeline(config: str) -> None:
    """teacher; then three chains side by side: experts -> select -> (distill -> eval mkdt | eval high_loss),
    and the evaluations that need only the teacher (random subset) or nothing (no pre-training)."""
    socratic("teacher", config, "--overwrite")

    def mkdt_chain() -> None:
        socratic("distill", config, "--overwrite")
        for seed in SEEDS:
            _eval(config, "mkdt", seed)

    def after_experts() -> None:
        socratic("experts", config, "--overwrite")
        socratic("select", config, "--overwrite")
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(mkdt_chain),
                       pool.submit(lambda: [_eval(config, "high_loss", seed) for seed in SEEDS])]
            for future in futures:
                future.result()

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(after_experts),
                   pool.submit(lambda: [_eval(config, source, seed) for source in ("random", "none") for seed in SEEDS])]
        for future in futures:
            future.result()


MEMORY_PROBE = """
import json, resource, sys, torch
torch.set_num_threads(1)
from socratic.models import create_model
from socratic.distill_data.matching import FlatModel, meta_gradient, minibatches
mode, steps, batch, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
flat = FlatModel(create_model("convnet", 64, 3, depth=3, width=width))
start = flat.vector(); target = start + 0.01 * torch.randn_like(start)
x, y = torch.randn(batch * 2, 3, 32, 32), torch.randn(batch * 2, 64)
batches = minibatches(batch * 2, batch, steps, torch.Generator().manual_seed(0))
meta_gradient(mode, flat, start, target, x, y, torch.tensor(0.1), [torch.arange(2)])  # warm-up: one step on 2 images
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
meta_gradient(mode, flat, start, target, x, y, torch.tensor(0.1), batches)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"mode": mode, "N": steps, "batch": batch, "width": width, "params": flat.size,
                  "peak_rss_mb": after, "peak_minus_warm_mb": after - before}))
"""


def memory(out: str, steps: list[int], batch: int, width: int) -> None:
    rows = []
    for n in steps:
        for mode in ("recompute", "unrolled"):
            result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, mode, str(n), str(batch), str(width)],
                                    cwd=ROOT, check=True, capture_output=True, text=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    Path(out).write_text(json.dumps(rows, indent=2) + "\n")


def table(runs: str) -> None:
    sys.path.insert(0, str(ROOT))
    from socratic.distill_data.report import eval_rows, rows_to_markdown

    print(rows_to_markdown(eval_rows([runs])))
    for stage in sorted(Path(runs).glob("*/*/seed0/summary.json")):
        summary = json.loads(stage.read_text())
        print(f"{stage.parent.parent.name}: {summary.get('stage_time', float('nan')):.0f} s, "
              f"peak RSS {summary.get('peak_memory_mb', float('nan')):.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pipeline")
    p.add_argument("--config", default=CONFIG)
    m = sub.add_parser("memory")
    m.add_argument("--out", default="benchmarks/results/mkdt_memory.json")
    m.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    m.add_argument("--batch", type=int, default=50)
    m.add_argument("--width", type=int, default=32)
    t = sub.add_parser("table")
    t.add_argument("--runs", default="runs/mkdt/mkdt_cifar10_jpeg_cpu")
    args = parser.parse_args()
    if args.what == "pipeline":
        pipeline(args.config)
    elif args.what == "memory":
        memory(args.out, args.steps, args.batch, args.width)
    else:
        table(args.runs)


if __name__ == "__main__":
    main()
