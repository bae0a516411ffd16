"""The method-zoo table: each run group of `runs/method_zoo` (benchmarks/method_zoo.sh) against KD's three seeds.

    python benchmarks/method_zoo_table.py runs/method_zoo --kd-csv benchmarks/results/da_table1_resnet20_resnet8.csv \
        --kd-check runs/da_table1_check/kd_resnet20_resnet8

The KD, KD + DA and student rows come from `da_table1_resnet20_resnet8.csv` (the same budget), reused only when
`--kd-check` (KD seed 0 re-run with today's code) reproduces that seed's best top-1 exactly; the script refuses
otherwise. Δ and Welch t are against KD's three seeds; "s / epoch" is each group's mean, and "× KD" its ratio to
the KD check run's, which ran at the same time on the same (shared) machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from socratic.reports import welch_t  # noqa: E402


def summaries(group: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(group.glob("seed*/summary.json"))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=Path)
    parser.add_argument("--kd-csv", type=Path, required=True)
    parser.add_argument("--kd-check", type=Path, required=True)
    args = parser.parse_args()
    with args.kd_csv.open() as f:
        table1 = {row["name"]: row for row in csv.DictReader(f)}
    kd_row = table1["kd_resnet20_resnet8"]
    kd = [float(v) for v in kd_row["best_top1_values"].split(";")]
    check = summaries(args.kd_check)
    if not check or check[0]["seed"] != 0 or check[0]["best_top1"] != kd[0]:
        got = check[0]["best_top1"] if check else None
        print(f"KD seed 0 does not reproduce: {got} today, {kd[0]} in {args.kd_csv}", file=sys.stderr)
        return 1
    kd_epoch = check[0]["epoch_time"]
    print(f"KD seed 0 reproduced: {check[0]['best_top1']:.2f} (s / epoch today {kd_epoch:.1f})\n")
    print("| method | seeds | best top-1 (%) | per seed | Δ vs KD | Welch t | s / epoch | × KD | peak memory (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("student_resnet8", "kd_resnet20_resnet8", "da_resnet20_resnet8"):
        row = table1[name]
        values = [float(v) for v in row["best_top1_values"].split(";")]
        print(f"| {row['method']} (da_table1.md) | {len(values)} | {statistics.fmean(values):.2f} ± "
              f"{statistics.stdev(values):.2f} | {', '.join(f'{v:.2f}' for v in values)} | "
              f"{statistics.fmean(values) - statistics.fmean(kd):+.2f} | {welch_t(values, kd):+.1f} | "
              f"(da_table1) | | {float(row['peak_memory_mb_mean']):.0f} |")
    for group in sorted(p for p in args.runs.iterdir() if p.is_dir()):
        runs = summaries(group)
        if not runs:
            continue
        values = [r["best_top1"] for r in runs]
        std = f"{statistics.stdev(values):.2f}" if len(values) > 1 else "n/a"
        t = welch_t(values, kd)
        epoch = statistics.fmean(r["epoch_time"] for r in runs)
        print(f"| {group.name} | {len(values)} ({', '.join(str(r['seed']) for r in runs)}) | "
              f"{statistics.fmean(values):.2f} ± {std} | {', '.join(f'{v:.2f}' for v in values)} | "
              f"{statistics.fmean(values) - statistics.fmean(kd):+.2f} | {'n/a' if math.isnan(t) else f'{t:+.1f}'} | "
              f"{epoch:.1f} | "
              f"{epoch / kd_epoch:.2f} | {max(r['peak_memory_mb'] for r in runs):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
