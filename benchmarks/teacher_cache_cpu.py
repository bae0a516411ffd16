"""Teacher-output cache, measured in CPU seconds: the same runs as `teacher_cache.py pool3|pair`, in one process,
with each epoch's `train_time` taken from `time.process_time()` instead of the wall clock.

On a machine shared by many jobs (load 30-40 on 2 cores while these numbers were taken) a run's wall time says
more about its neighbours than about its work; the CPU time one single-threaded process spends in its training
loop does not depend on how often it was scheduled. The only change to socratic is here: the trainer's clock.

    python benchmarks/teacher_cache_cpu.py pool3|pair [--out runs/bench_teacher_cache_cpu] [--images N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import socratic.engine.trainer as trainer_module  # noqa: E402
from benchmarks.teacher_cache import CONFIGS, small_test_set, untrained_teacher  # noqa: E402
from socratic.config import load_config  # noqa: E402
from socratic.experiment import run_dir_for, run_experiment  # noqa: E402

trainer_module.time = types.SimpleNamespace(perf_counter=time.process_time)  # epoch train_time in CPU seconds
SHARED = ROOT / "runs" / "bench_teacher_cache"  # the small test set and the untrained teacher of teacher_cache.py
COMMON = ["runtime.num_threads=1", "runtime.precision=fp32", "runtime.progress=false", "runtime.tensorboard=false",
          "optim.epochs=1", "seed=0"]


def run(config: Path, overrides: list[str], out: Path, log: list[dict], label: str) -> None:
    cfg = load_config(config, [*COMMON, f"output_dir={out / 'runs'}", *overrides])
    shutil.rmtree(run_dir_for(cfg), ignore_errors=True)
    run_experiment(cfg)
    metrics = [json.loads(line) for line in (run_dir_for(cfg) / "metrics.jsonl").read_text().splitlines()]
    log.append({"label": label, "config": str(config.relative_to(ROOT)), "overrides": overrides,
                "cpu_train_s": sum(m["train_time"] for m in metrics), "metrics": metrics})
    print(f"{label}: {log[-1]['cpu_train_s']:.2f} CPU s, replayed {metrics[-1].get('teacher_cache_replayed')}",
          flush=True)


def pool3(out: Path, images: int) -> list[dict]:
    log: list[dict] = []
    common = [f"data.root={small_test_set(SHARED)}", f"data.train_subset={images}"]
    cache = ["teacher_cache.enabled=true", f"teacher_cache.dir={out / 'cache_pool3'}"]
    pool = CONFIGS / "multiteacher/aver_pool3_resnet8.yaml"
    run(CONFIGS / "students/resnet8.yaml", [*common, "name=scratch"], out, log, "scratch resnet8")
    run(pool, [*common, "name=pool3_live"], out, log, "pool3 without cache")
    run(pool, [*common, "name=pool3_record", *cache], out, log, "pool3 recording")
    run(pool, [*common, "name=pool3_replay", *cache], out, log, "pool3 replaying")
    return log


def pair(out: Path, images: int, only: list[str] | None = None) -> list[dict]:
    log: list[dict] = []
    common = [f"data.root={small_test_set(SHARED)}", f"data.train_subset={images}", "student.name=resnet8x4",
              "teachers.0.name=resnet32x4", f"teachers.0.checkpoint={untrained_teacher(SHARED)}"]
    cache = ["teacher_cache.enabled=true", f"teacher_cache.dir={out / 'cache_pair'}"]
    for method in ("fitnet", "kd", "dkd", "dist"):  # FitNet first: its cached run records the map and the logits
        config = CONFIGS / method / "resnet20_resnet8.yaml"
        if not only or f"{method}_live" in only:
            run(config, [*common, f"name={method}_live"], out, log, f"{method} without cache")
        if not only or f"{method}_cached" in only:
            run(config, [*common, f"name={method}_cached", *cache], out, log, f"{method} with cache")
    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("pool3", "pair"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_teacher_cache_cpu"))
    parser.add_argument("--images", type=int, default=None, help="training images (pool3: 1000, pair: 256)")
    parser.add_argument("--runs", nargs="+", help="pair only: just these runs (e.g. kd_live kd_cached), as processes "
                        "side by side, on the cache the earlier ones left (fitnet_cached first)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out).resolve() / args.part
    out.mkdir(parents=True, exist_ok=True)
    if not args.runs:
        shutil.rmtree(out / f"cache_{args.part}", ignore_errors=True)
    images = args.images or {"pool3": 1000, "pair": 256}[args.part]
    log = pool3(out, images) if args.part == "pool3" else pair(out, images, args.runs)
    name = args.part + ("_" + "_".join(args.runs) if args.runs else "")
    (out / f"{name}.json").write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    main()
