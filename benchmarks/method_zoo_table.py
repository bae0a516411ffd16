"""The method-zoo table (benchmarks/results/method_zoo.md) from the runs of benchmarks/method_zoo.sh.

    python benchmarks/method_zoo_table.py --collect runs/method_zoo --commit $(git rev-parse --short HEAD)
    python benchmarks/method_zoo_table.py                   # the table from the committed runs alone

`--collect` adds every finished run (`<group>/seed<s>/summary.json`) to `benchmarks/results/method_zoo_runs.csv`
(one row per group and seed; a row already there is replaced), so the table grows over sessions without the run
folders. The KD, KD + DA and student rows come from `da_table1_resnet20_resnet8.csv` (the same budget); a KD group
in the CSV (`kd_resnet20_resnet8`, benchmarks/method_zoo.sh kd) must reproduce those seeds' best top-1 exactly, or
the script refuses. Δ and Welch's t (df, two-sided p) are against da_table1's KD seeds; "s / epoch" is each group's
mean and "× KD" its ratio to the KD group's mean measured in the same session (`session` column), else blank.
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
FIELDS = ["group", "seed", "best_top1", "last_top1", "epochs", "epoch_time", "peak_memory_mb", "session", "commit"]


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
            runs[(group, int(s["seed"]))] = {
                "group": group, "seed": str(s["seed"]), "best_top1": str(s["best_top1"]), "last_top1": str(s["last_top1"]),
                "epochs": str(s["epochs"]), "epoch_time": f"{s['epoch_time']:.2f}",
                "peak_memory_mb": f"{s['peak_memory_mb']:.0f}", "session": session, "commit": commit}
            added += 1
    return added


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def test_columns(values: list[float], kd: list[float]) -> str:
    t, df, p = welch_test(values, kd)
    return "n/a" if math.isnan(t) else f"{t:+.2f} (df {df:.1f}, p {p:.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collect", type=Path, nargs="*", default=[], help="run folders to add to the CSV")
    parser.add_argument("--session", default="", help="a label for the collected runs (e.g. the date)")
    parser.add_argument("--commit", default="", help="the code revision the collected runs ran")
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
    for row in groups.get("kd_resnet20_resnet8", []):
        if float(row["best_top1"]) != kd[int(row["seed"])]:
            print(f"KD seed {row['seed']} does not reproduce: {row['best_top1']} (session {row['session']}), "
                  f"{kd[int(row['seed'])]} in {TABLE1_CSV.name}", file=sys.stderr)
            return 1
    kd_epoch = {row["session"]: float(row["epoch_time"]) for row in groups.get("kd_resnet20_resnet8", [])}
    print("| method | seeds | best top-1 (%) | per seed | Δ vs KD | Welch t vs KD | s / epoch | × KD | "
          "peak memory (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("student_resnet8", "kd_resnet20_resnet8", "da_resnet20_resnet8"):
        row = table1[name]
        values = [float(v) for v in row["best_top1_values"].split(";")]
        print(f"| {row['method']} (da_table1.md) | {len(values)} | {mean_std(values)} | "
              f"{', '.join(f'{v:.2f}' for v in values)} | {statistics.fmean(values) - statistics.fmean(kd):+.2f} | "
              f"{test_columns(values, kd)} | (da_table1.md) | | {float(row['peak_memory_mb_mean']):.0f} |")
    for group, rows in groups.items():
        values = [float(r["best_top1"]) for r in rows]
        epoch = statistics.fmean(float(r["epoch_time"]) for r in rows)
        ratios = [float(r["epoch_time"]) / kd_epoch[r["session"]] for r in rows if r["session"] in kd_epoch]
        ratio = f"{statistics.fmean(ratios):.2f}" if len(ratios) == len(rows) else ""
        print(f"| {group.removesuffix('_resnet20_resnet8')} | {len(values)} "
              f"({', '.join(r['seed'] for r in rows)}) | {mean_std(values)} | "
              f"{', '.join(f'{v:.2f}' for v in values)} | {statistics.fmean(values) - statistics.fmean(kd):+.2f} | "
              f"{test_columns(values, kd)} | {epoch:.1f} | {ratio} | "
              f"{max(float(r['peak_memory_mb']) for r in rows):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
