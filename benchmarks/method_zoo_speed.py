"""The method zoo's cost per training step, side by side in one process (benchmarks/results/method_zoo.md).

    python benchmarks/method_zoo_speed.py --json benchmarks/results/method_zoo_speed.json
    python benchmarks/method_zoo_speed.py --methods kd dkd crd --rounds 2

Each method is built from its shipped `configs/cifar10_jpeg/<method>/resnet20_resnet8.yaml` with the overrides of
`benchmarks/method_zoo.sh` (the 10,000-image subset, fp32, one thread; `--da` adds that script's DA values) and
trained through the run skeleton's own `train_step` on its loader's first batches. Rounds alternate the methods
(each round starting one method later), so every "× KD" is a ratio of steps timed under the same load; the median
over rounds is reported. The time is
what an epoch's steps cost: the step and its DA perturbation, not data loading or evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from socratic.config import load_config  # noqa: E402
from socratic.context import TrainContext  # noqa: E402
from socratic.engine.optim import build_optimizer  # noqa: E402
from socratic.engine.runtime import grad_scaler  # noqa: E402
from socratic.engine.trainer import train_step  # noqa: E402
from socratic.experiment import build_augmentation, build_distiller, load_datasets, make_loaders  # noqa: E402
from socratic.registry import METHODS  # noqa: E402

METHODS_ALL = ["kd", "dkd", "dist", "kd_ls", "dkd_ls", "ctkd", "mlkd", "fitnet", "at", "sp", "pkt", "rkd", "vid",
               "crd", "ofd", "reviewkd", "dml"]
OVERRIDES = ["data.train_subset=10000", "runtime.num_threads=1", "runtime.precision=fp32"]
DA = ["da.enabled=true", "da.steps=1", "da.lr=0.01778", "da.prob=0.7374", "da.objective=l1_mse", "da.optimizer=adam"]


_DATASETS: dict = {}


def build_step(method: str, with_da: bool, steps: int) -> Callable[[], None]:
    """A function that runs the method's next `steps` training steps on its own loader's batches."""
    overrides = [*OVERRIDES, *(DA if with_da else []), *(["method.num_negatives=4096"] if method == "crd" else [])]
    cfg = load_config(ROOT / f"configs/cifar10_jpeg/{method}/resnet20_resnet8.yaml", overrides)
    torch.manual_seed(cfg.seed)
    device = torch.device("cpu")
    key = (cfg.data.name, cfg.data.root, cfg.data.train_subset, cfg.data.subset_seed)
    datasets = _DATASETS[key] = _DATASETS.get(key) or load_datasets(cfg)  # one copy for every method
    distiller = build_distiller(cfg, datasets.train.num_classes, datasets.train.image_shape[0]).to(device)
    if cfg.runtime.channels_last:  # as the Trainer does: the loader's batches are channels_last too
        distiller.to(memory_format=torch.channels_last)
    distiller.usage_checks = False
    distiller.bind_train_set(datasets.train.labels)
    distiller.train()
    augmentation = build_augmentation(cfg, datasets.train)
    with_indices = bool(METHODS.get(cfg.method.name).meta.get("sample_indices", False))
    loader, _ = make_loaders(cfg, datasets, device, with_indices=with_indices)
    optimizers = [build_optimizer([p for m in modules for p in m.parameters() if p.requires_grad], cfg.optim)
                  for modules in distiller.optimizer_groups().values()]
    scaler = grad_scaler(device, cfg.runtime.precision)
    loader.set_epoch(1)
    batches = iter(loader)
    count = len(loader)
    state = {"step": 0}

    def run() -> None:
        for _ in range(steps):
            x, y, *indices = next(batches)
            ctx = TrainContext(cfg.optim.epochs, state["step"], cfg.optim.epochs, count,
                               indices=indices[0] if indices else None)  # the last epoch: warm-ups are over
            train_step(distiller, x, y, ctx, optimizers, scaler, precision="fp32", augmentation=augmentation)
            state["step"] += 1

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", default=METHODS_ALL)
    parser.add_argument("--da", action="store_true", help="each method with DA (benchmarks/method_zoo.sh's DA=1), "
                        "against plain KD")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.chdir(ROOT)  # the configs' data roots are relative to the repository
    # the baseline is plain KD; with --da every other entry is the method + DA (DML has no teacher: none)
    runs = {"kd": build_step("kd", False, 1)}
    for method in args.methods:
        with_da = args.da and method != "dml"
        if method != "kd" or with_da:
            runs[f"{method}+da" if with_da else method] = build_step(method, with_da, 1)
    methods = list(runs)
    for run in runs.values():
        for _ in range(args.warmup):
            run()
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for round_ in range(args.rounds):
        order = methods[round_ % len(methods):] + methods[:round_ % len(methods)]  # no method always goes first
        for method in order:
            run = runs[method]
            start = time.perf_counter()
            for _ in range(args.steps):
                run()
            seconds[method].append((time.perf_counter() - start) / args.steps)
        print(f"round {round_}: " + ", ".join(f"{m} {seconds[m][-1] / seconds['kd'][-1]:.2f}" for m in methods),
              flush=True)
    result = {"da": args.da, "rounds": args.rounds, "steps": args.steps, "batch_size": 128, "threads": 1,
              "methods": {m: {"s_per_step_median": statistics.median(seconds[m]),
                              "over_kd_per_round": [s / k for s, k in zip(seconds[m], seconds["kd"])],
                              "over_kd_median": statistics.median(s / k for s, k in zip(seconds[m], seconds["kd"]))}
                          for m in methods}}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
