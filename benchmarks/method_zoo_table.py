"""The method-zoo table (benchmarks/results/method_zoo.md) from the runs of benchmarks/method_zoo.sh.

    python benchmarks/method_zoo_table.py --collect runs/method_zoo --commit $(git rev-parse --short HEAD)
    python benchmarks/method_zoo_table.py                   # the table from the committed runs alone
    python benchmarks/method_zoo_table.py --da-effect       # each method + DA against the same method without DA

`--speed` takes `benchmarks/method_zoo_speed.py`'s JSON files (each method's training step side by side with KD's in one
process) for the "s / step", "× KD" and "s / epoch" (79 steps of 128 images) columns. The runs' own epoch times are
in the CSV only: they were measured beside other jobs, and are lower where a run replayed its teacher's outputs from
the teacher-output cache (`cache_replayed`).
`--collect` adds every finished run (`<group>/seed<s>/summary.json`) to `benchmarks/results/method_zoo_runs.csv`
(one row per group and seed; a row already there is replaced when the run's numbers differ, and keeps its session
and commit when they do not), so the table grows over sessions without the run folders. The KD, KD + DA and student rows come from `da_table1_resnet20_resnet8.csv` (the same budget); a KD group
in the CSV (`kd_resnet20_resnet8`, benchmarks/method_zoo.sh kd; `kd_cache_replay_...`, the same replayed from the
teacher-output cache) must reproduce those seeds' best top-1 exactly, or
the script refuses. Δ and Welch's t (df, two-sided p) are against da_table1's KD seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from socratic.reports import welch_test  # noqa: E402

RUNS_CSV = ROOT / "benchmarks/results/method_zoo_runs.csv"
TABLE1_CSV = ROOT / "benchmarks/results/da_table1_resnet20_resnet8.csv"
STEPS_PER_EPOCH = 79  # 10,000 images in batches of 128
FIELDS = ["group", "seed", "best_top1", "last_top1", "epochs", "epoch_time", "peak_memory_mb", "cache_replayed",
          "session", "commit"]


def read_runs(path: Path) -> dict[tuple[str, int], dict]:
    if not path.exists():
        return {}
    with path.open() as f:
        return {(row["group"], int(row["seed"])): row for row in csv.DictReader(f)}


def collect(folders: list[Path], runs: dict[tuple[str, int], dict], session: str, commit: str) -> int:
    added = 0
    for folder in folders:
        for summary in sorted(folder.glob("*/seed*/summary.json")):
            s = json.loads(summary.read_text())
            group = summary.parent.parent.name
            lines = (summary.parent / "metrics.jsonl").read_text().splitlines()
            replayed = [m["teacher_cache_replayed"] for m in map(json.loads, lines) if "teacher_cache_replayed" in m]
            row = {"group": group, "seed": str(s["seed"]), "best_top1": str(s["best_top1"]),
                   "last_top1": str(s["last_top1"]), "epochs": str(s["epochs"]), "epoch_time": f"{s['epoch_time']:.2f}",
                   "peak_memory_mb": f"{s['peak_memory_mb']:.0f}",
                   "cache_replayed": f"{statistics.fmean(replayed):.2f}" if replayed else ""}
            known = runs.get((group, int(s["seed"])))
            if known and all(known[k] == v for k, v in row.items()):
                continue  # collected before: keep the session and commit it ran in
            runs[(group, int(s["seed"]))] = {**row, "session": session, "commit": commit}
            added += 1
    return added


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def welch_columns(values: list[float], kd: list[float]) -> str:
    t, df, p = welch_test(values, kd)
    return "n/a" if math.isnan(t) else f"{t:+.2f} (df {df:.1f}, p {p:.3f})"


def print_da_effect(groups: dict[str, list[dict]], table1: dict[str, dict]) -> None:
    """Each method + DA against the same method without DA (KD's pair from da_table1): does DA compose with it?"""
    seeds = {g: [float(r["best_top1"]) for r in rows] for g, rows in groups.items()}
    seeds["kd_resnet20_resnet8"] = [float(v) for v in table1["kd_resnet20_resnet8"]["best_top1_values"].split(";")]
    seeds["kd_resnet20_resnet8_da"] = [float(v) for v in table1["da_resnet20_resnet8"]["best_top1_values"].split(";")]
    print("| method | seeds (+DA) | without DA | with DA | Δ (DA) | Welch t |")
    print("|---|---|---|---|---|---|")
    for group in sorted(g for g in seeds if g.endswith("_da")):
        with_da, without = seeds[group], seeds.get(group.removesuffix("_da"), [])
        if not without:
            continue
        print(f"| {group.replace('_resnet20_resnet8_da', '')} | {len(with_da)} | {mean_std(without)} | "
              f"{mean_std(with_da)} | {statistics.fmean(with_da) - statistics.fmean(without):+.2f} | "
              f"{welch_columns(with_da, without)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collect", type=Path, nargs="*", default=[], help="run folders to add to the CSV")
    parser.add_argument("--session", default="", help="a label for the collected runs (e.g. the date)")
    parser.add_argument("--commit", default="", help="the code revision the collected runs ran")
    parser.add_argument("--speed", type=Path, nargs="*", default=[], help="method_zoo_speed.py JSON files")
    parser.add_argument("--da-effect", action="store_true",
                        help="print the table of each +DA group against its method without DA instead")
    args = parser.parse_args()
    runs = read_runs(RUNS_CSV)
    if args.collect:
        print(f"collected {collect(args.collect, runs, args.session, args.commit)} runs into {RUNS_CSV}",
              file=sys.stderr)
        with RUNS_CSV.open("w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(runs[k] for k in sorted(runs))
    with TABLE1_CSV.open() as f:
        table1 = {row["name"]: row for row in csv.DictReader(f)}
    kd = [float(v) for v in table1["kd_resnet20_resnet8"]["best_top1_values"].split(";")]
    groups: dict[str, list[dict]] = {}
    for (group, _), row in sorted(runs.items()):
        groups.setdefault(group, []).append(row)
    for row in groups.get("kd_resnet20_resnet8", []) + groups.get("kd_cache_replay_resnet20_resnet8", []):
        if float(row["best_top1"]) != kd[int(row["seed"])]:
            print(f"KD seed {row['seed']} does not reproduce: {row['best_top1']} (session {row['session']}), "
                  f"{kd[int(row['seed'])]} in {TABLE1_CSV.name}", file=sys.stderr)
            return 1
    if args.da_effect:
        print_da_effect(groups, table1)
        return 0
    speed: dict[str, dict] = {}
    for path in args.speed:  # the first file's KD is the baseline; later files add their other entries
        for name, entry in json.loads(path.read_text())["methods"].items():
            speed.setdefault(name, entry)
    print("| method | seeds | best top-1 (%) | per seed | Δ vs KD | Welch t vs KD | s / step | × KD (step) | "
          "s / epoch | peak memory (MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("student_resnet8", "kd_resnet20_resnet8", "da_resnet20_resnet8"):
        row = table1[name]
        values = [float(v) for v in row["best_top1_values"].split(";")]
        print(f"| {row['method']} (da_table1.md) | {len(values)} | {mean_std(values)} | "
              f"{', '.join(f'{v:.2f}' for v in values)} | {statistics.fmean(values) - statistics.fmean(kd):+.2f} | "
              f"{welch_columns(values, kd)} | | | {float(row['epoch_time_mean']):.1f} (runs) | "
              f"{float(row['peak_memory_mb_mean']):.0f} |")
    for group, rows in groups.items():
        values = [float(r["best_top1"]) for r in rows]
        method = group.replace("_resnet20_resnet8", "").replace("_da", "+da")
        step = speed.get("kd" if method.startswith("kd_cache") else method)
        step_columns = (f"{step['s_per_step_median']:.3f} | {step['over_kd_median']:.2f} | "
                        f"{STEPS_PER_EPOCH * step['s_per_step_median']:.1f}" if step else " | | ")
        print(f"| {method} | {len(values)} "
              f"({', '.join(r['seed'] for r in rows)}) | {mean_std(values)} | "
              f"{', '.join(f'{v:.2f}' for v in values)} | {statistics.fmean(values) - statistics.fmean(kd):+.2f} | "
              f"{welch_columns(values, kd)} | {step_columns} | "
              f"{max(float(r['peak_memory_mb']) for r in rows):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
