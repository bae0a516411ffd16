"""Teacher-output cache: epoch time with and without it, and the accuracy cost of top-k logits.

Three parts, each a sequence of `socratic train|distill` runs measured side by side in one process (speed is only
compared within a part, as ratios, because the machine is shared):

  pool3   the three-teacher pool of benchmarks/results/multiteacher.md (AVER, KD + FitNet, resnet20 + wrn_16_2 +
          resnet14 -> resnet8): scratch epoch, pool epoch without the cache, recording it, replaying it, and the
          scratch epoch again (drift of the machine's load); 2,000 training images, 1 epoch.
  pair    FitNet, KD, DKD and DIST for resnet32x4 -> resnet8x4 at one seed, without the cache (4 concurrent
          processes) and with it (FitNet records its hint map and the logits, then KD, DKD and DIST replay them, 3
          concurrent processes, beside the others), and the metrics of each pair of runs, which must be identical.
          500 training images (stratified), 1 epoch, 100 test images per class. The teacher is an *untrained* resnet32x4
          (there is no committed CIFAR-10 one): enough for timing and for the identity check.
  topk    KD resnet20 -> resnet8 with the committed teacher, exact cache against top-3 and top-1 logits, seeds
          0 1 2 (--seeds; one process per seed can run side by side: accuracy, not speed), 3,000 training images,
          3 epochs, the full test set once at the end.

    python benchmarks/teacher_cache.py pool3|pair|topk [--out runs/bench_teacher_cache] [--seeds 0 1 2]

Results go to <out>/<part>.json (topk: <out>/topk_seed<seeds>.json); the table is benchmarks/results/performance.md ("Teacher-output cache").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg"
CONFIGS = ROOT / "configs" / "cifar10_jpeg"
COMMON = ["runtime.num_threads=1", "runtime.precision=fp32", "runtime.progress=false", "runtime.tensorboard=false"]


def run(args: list[str], out: Path, log: list[dict], label: str) -> dict:
    """One socratic command; returns its label, command, wall time and per-epoch metrics."""
    command = [sys.executable, "-m", "socratic", *args, f"output_dir={out / 'runs'}", *COMMON, "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr[-3000:]}")
    folder = next(line.split("run folder ", 1)[1].split(",")[0].strip()
                  for line in done.stderr.splitlines() if line.startswith("run folder "))
    metrics = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    row = {"label": label, "command": " ".join(["socratic", *args]), "wall_s": wall, "folder": folder,
           "train_time": [m["train_time"] for m in metrics], "metrics": metrics}
    log.append(row)
    print(f"{label}: {wall:.1f} s wall, train {sum(row['train_time']):.1f} s, "
          f"top1 {metrics[-1].get('val_top1')}, replayed {metrics[-1].get('teacher_cache_replayed')}", flush=True)
    return row


def pool3(out: Path) -> list[dict]:
    log: list[dict] = []
    common = [f"data.root={small_test_set(out)}", "optim.epochs=1", "data.train_subset=2000", "seed=0"]
    cache = f"teacher_cache.dir={out / 'cache_pool3'}"
    scratch = ["train", str(CONFIGS / "students/resnet8.yaml"), *common]
    run([*scratch, "name=scratch_before"], out, log, "scratch resnet8")
    pool = ["distill", str(CONFIGS / "multiteacher/aver_pool3_resnet8.yaml"), *common]
    run([*pool, "name=pool3_live"], out, log, "pool3 without cache")
    run([*pool, "name=pool3_record", "teacher_cache.enabled=true", cache], out, log, "pool3 recording")
    run([*pool, "name=pool3_replay", "teacher_cache.enabled=true", cache], out, log, "pool3 replaying")
    run([*scratch, "name=scratch_after"], out, log, "scratch resnet8 (again, for drift)")
    return log


def small_test_set(out: Path) -> Path:
    """CIFAR-10-JPEG's train folder and the first 100 test images of each class, as symlinks (evaluation of the
    resnet8x4 students on the full 10,000 would cost more than their training here)."""
    root = out / "cifar10_small_test"
    if not root.exists():
        (root / "test").mkdir(parents=True)
        os.symlink(DATA / "train", root / "train")
        for cls in sorted(p for p in (DATA / "test").iterdir() if p.is_dir()):
            (root / "test" / cls.name).mkdir()
            for image in sorted(cls.iterdir())[:100]:
                os.symlink(image, root / "test" / cls.name / image.name)
    return root


def untrained_teacher(out: Path) -> Path:
    path = out / "resnet32x4_untrained.pt"
    if not path.exists():
        import torch

        from socratic.models import create_model

        torch.manual_seed(0)
        model = create_model("resnet32x4", num_classes=10, in_channels=3)
        torch.save({"model": model.state_dict(), "meta": {"model_name": "resnet32x4", "num_classes": 10}}, path)
    return path


def parallel(jobs: list[tuple[list[str], str]], out: Path, log: list[dict]) -> None:
    """Run socratic commands as concurrent processes (on an oversubscribed machine every process gets a similar
    share of a core, so their epoch times stay comparable with each other)."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(run, args, out, log, label) for args, label in jobs]:
            future.result()


def pair(out: Path, only: tuple[str, ...] = ()) -> list[dict]:
    log: list[dict] = []
    data, teacher = small_test_set(out), untrained_teacher(out)
    common = [f"data.root={data}", "data.train_subset=500", "optim.epochs=1", "seed=0", "student.name=resnet8x4",
              "teachers.0.name=resnet32x4", f"teachers.0.checkpoint={teacher}"]
    cache = ["teacher_cache.enabled=true", f"teacher_cache.dir={out / 'cache_pair'}"]

    def job(method: str, cached: bool) -> tuple[list[str], str]:
        config = str(CONFIGS / method / "resnet20_resnet8.yaml")
        name = f"{method}_cached" if cached else f"{method}_live"
        return (["distill", config, *common, f"name={name}", *(cache if cached else [])],
                f"{method} {'with' if cached else 'without'} cache")

    def cached_table() -> None:  # FitNet records its hint map and the logits, then the logit methods replay them
        args, label = job("fitnet", True)
        run(args, out, log, label)
        parallel([job(m, True) for m in ("kd", "dkd", "dist")], out, log)

    parts = {"cached": [cached_table],
             "live": [lambda: parallel([job(m, False) for m in ("fitnet", "kd", "dkd", "dist")], out, log)]}
    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(f) for key in (only or ("cached", "live")) for f in parts[key]]:
            future.result()
    return log


def topk(out: Path, seeds: list[int], ks: list[int]) -> list[dict]:
    log: list[dict] = []
    config = str(CONFIGS / "kd/resnet20_resnet8.yaml")
    common = ["data.train_subset=3000", "optim.epochs=3", "runtime.eval_every=3", "teacher_cache.enabled=true",
              f"teacher_cache.dir={out / 'cache_topk'}"]
    for seed in seeds:
        for k in ks:
            name = "kd_exact" if not k else f"kd_top{k}"
            run(["distill", config, *common, f"seed={seed}", f"name={name}", f"teacher_cache.topk={k or 'null'}"],
                out, log, f"{name} seed {seed}")
    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("pool3", "pair", "topk"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_teacher_cache"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="topk only")
    parser.add_argument("--k", type=int, nargs="+", default=[0, 3, 1], help="topk only: the k to run (0 = exact)")
    parser.add_argument("--only", choices=("cached", "live"), help="pair only: one half (the other may run beside)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.part == "topk":  # seeds have keys of their own: their processes share the folder, not the entries
        log = topk(out, args.seeds, args.k)
        name = "topk_seed" + "_".join(map(str, args.seeds)) + "_k" + "_".join(map(str, args.k))
    elif args.part == "pair":
        if args.only != "live":
            shutil.rmtree(out / "cache_pair", ignore_errors=True)  # the cached half starts from an empty cache
        log = pair(out, (args.only,) if args.only else ())
        name = "pair" + (f"_{args.only}" if args.only else "")
    else:
        shutil.rmtree(out / "cache_pool3", ignore_errors=True)
        log = pool3(out)
        name = "pool3"
    (out / f"{name}.json").write_text(json.dumps(log, indent=1))


if __name__ == "__main__":
    main()
