"""Run folders -> tables: runs grouped by config (all but the seed), mean ± std over seeds."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from socratic.config import resolve_saved
from socratic.engine.logger import read_metrics

METRICS = ("best_top1", "last_top1", "train_time", "epoch_time", "peak_memory_mb")


class ReportError(ValueError):
    """A report asked for something the runs do not have (an unknown baseline)."""


@dataclass
class RunGroup:
    """Runs that share a config except for the seed."""

    name: str
    config: dict[str, Any]
    seeds: list[int] = field(default_factory=list)
    summaries: list[dict[str, Any]] = field(default_factory=list)
    run_dirs: list[Path] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        return [s[metric] for s in self.summaries if metric in s]


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Every run folder (one with `summary.json` and `config.yaml`) at or below the given paths."""
    runs: set[Path] = set()
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"no such run folder: {path}")
        candidates = [path / "summary.json"] if (path / "summary.json").exists() else path.rglob("summary.json")
        runs.update(p.parent for p in candidates if (p.parent / "config.yaml").exists())
    return sorted(runs)


def is_rl_run(run_dir: Path) -> bool:
    """RL runs (summary `kind` rl_*) have their own table, `socratic rl report`."""
    try:
        kind = json.loads((run_dir / "summary.json").read_text()).get("kind", "")
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(kind, str) and kind.startswith("rl_")


def is_dataset_distill_run(run_dir: Path) -> bool:
    """MKDT's stages (summary `kind` mkdt_*) have their own table, `socratic dataset-distill report`."""
    try:
        kind = json.loads((run_dir / "summary.json").read_text()).get("kind", "")
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(kind, str) and kind.startswith("mkdt_")


def _group_key(config: dict[str, Any]) -> str:
    stripped = {k: v for k, v in resolve_saved(config).items() if k not in ("seed", "output_dir", "runtime", "search")}
    if not (stripped.get("da") or {}).get("enabled"):
        stripped.pop("da", None)  # the da options do not matter while DA is off
    return hashlib.sha256(json.dumps(stripped, sort_keys=True).encode()).hexdigest()[:10]


def group_runs(run_dirs: list[Path]) -> list[RunGroup]:
    groups: dict[str, RunGroup] = {}
    for run_dir in run_dirs:
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        summary = with_epoch_costs(json.loads((run_dir / "summary.json").read_text()), run_dir)
        group = groups.setdefault(_group_key(config), RunGroup(config["name"], config))
        group.seeds.append(config["seed"])
        group.summaries.append(summary)
        group.run_dirs.append(run_dir)
    return sorted(groups.values(), key=lambda g: g.name)


def with_epoch_costs(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """`summary` with `epoch_time` (mean training seconds per epoch) and `peak_memory_mb` (largest over the epochs),
    taken from metrics.jsonl when the summary predates them."""
    if "epoch_time" in summary and "peak_memory_mb" in summary:
        return summary
    history = read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    times = [m["train_time"] for m in history if "train_time" in m]
    memory = [m["peak_memory_mb"] for m in history if "peak_memory_mb" in m]
    return {**summary, **({"epoch_time": sum(times) / len(times)} if times else {}),
            **({"peak_memory_mb": max(memory)} if memory else {})}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation; the std is NaN for a single value (one seed has no spread estimate)."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def mean_std_cell(mean: float | None, std: float | None, digits: int = 2) -> str:
    """`mean ± std` of `mean_std`; a single value (NaN std) as `mean (n = 1)`, never a made-up `± 0.00`; `–` for
    no value."""
    if mean is None or mean != mean:
        return "–"
    if std is None or std != std:
        return f"{mean:.{digits}f} (n = 1)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _describe(config: dict[str, Any]) -> tuple[str, str, str]:
    teachers = "+".join(t["name"] for t in config.get("teachers", [])) or "-"
    method = config["method"]["name"]
    if (config.get("da") or {}).get("enabled"):
        method += "+da"  # Disagreement Augmentation on top of the method
    return method, config["student"]["name"], teachers


def table_rows(groups: list[RunGroup]) -> list[dict[str, Any]]:
    rows = []
    for group in groups:
        method, student, teachers = _describe(group.config)
        row: dict[str, Any] = {
            "name": group.name, "method": method, "student": student, "teachers": teachers,
            "dataset": group.config["data"]["name"], "seeds": len(group.seeds),
        }
        for metric in METRICS:
            mean, std = mean_std(group.values(metric))
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        row["best_top1_values"] = group.values("best_top1")
        rows.append(row)
    return rows


def welch_t(a: list[float], b: list[float]) -> float:
    """Welch's t statistic of mean(a) - mean(b): the gap in units of its standard error; NaN without >= 2 values
    on each side."""
    return welch_test(a, b)[0]


def welch_test(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test of mean(a) - mean(b): (t, degrees of freedom, two-sided p-value).

    The degrees of freedom are Welch-Satterthwaite's and the p-value comes from Student's t distribution function
    (`scipy.special.stdtr`; Welch, Biometrika 1947). NaN for all three without >= 2 values on each side; with no
    spread on either side t is 0 (p = 1) for equal means and ±inf (p = 0) otherwise, and the df are NaN.
    """
    from scipy.special import stdtr  # Student's t CDF; scipy.stats would cost seconds to import

    nan = float("nan")
    if len(a) < 2 or len(b) < 2:
        return nan, nan, nan
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    gap = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return (0.0, nan, 1.0) if gap == 0 else (math.copysign(math.inf, gap), nan, 0.0)
    t = gap / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return t, df, float(2 * stdtr(df, -abs(t)))


def compare_to_baseline(rows: list[dict[str, Any]], baseline: str, values_key: str) -> None:
    """Add `delta` (difference of means), `welch_t`, `welch_df` and `p_value` (Welch's test) against the row
    named `baseline`, for the per-seed values under `values_key`; an unknown baseline is an error naming the rows
    there are."""
    names = [r["name"] for r in rows]
    if baseline not in names:
        raise ReportError(f"--baseline: no runs named '{baseline}' (there are: {', '.join(names)})")
    reference = rows[names.index(baseline)][values_key]
    for row in rows:
        row["delta"] = statistics.fmean(row[values_key]) - statistics.fmean(reference)
        row["welch_t"], row["welch_df"], row["p_value"] = welch_test(row[values_key], reference)


def p_value_cell(p: float) -> str:
    """A p-value with two significant digits (`< 0.001` below that), `–` when it is undefined (n = 1)."""
    if p != p:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def baseline_columns(row: dict[str, Any], values_key: str) -> str:
    """The markdown cells of `compare_to_baseline`: per-seed values, difference, Welch t, its degrees of freedom
    and the two-sided p-value (or nothing)."""
    if "delta" not in row:
        return ""
    values = ", ".join(f"{v:.2f}" for v in row[values_key])
    return (f" {values} | {row['delta']:+.2f} | {_number(row['welch_t'], '+.1f')} | {_number(row['welch_df'], '.1f')}"
            f" | {p_value_cell(row['p_value'])} |")


def baseline_header(rows: list[dict[str, Any]], baseline: str | None) -> str:
    return (f" per seed | Δ vs {baseline} | Welch t | df | p |" if baseline and rows and "delta" in rows[0] else "")


def to_markdown(rows: list[dict[str, Any]], baseline: str | None = None) -> str:
    header = ("| name | method | teachers | student | dataset | seeds | best top-1 (%) | last top-1 (%) "
              "| train time (s) | s / epoch | peak memory (MB) |" + baseline_header(rows, baseline))
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['method']} | {r['teachers']} | {r['student']} | {r['dataset']} | {r['seeds']} | "
            f"{mean_std_cell(r['best_top1_mean'], r['best_top1_std'])} | "
            f"{mean_std_cell(r['last_top1_mean'], r['last_top1_std'])} | "
            f"{r['train_time_mean']:.0f} | {_number(r['epoch_time_mean'], '.1f')} | "
            f"{_number(r['peak_memory_mb_mean'], '.0f')} |"
            + baseline_columns(r, "best_top1_values")
        )
    return "\n".join(lines) + "\n"


def _number(value: float, spec: str) -> str:
    return "–" if value != value else format(value, spec)  # NaN: no run of the group logged it


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([csv_cells(row) for row in rows])
    return buffer.getvalue()


def csv_cells(row: dict[str, Any]) -> dict[str, Any]:
    """Lists (per-seed values) as one `;`-separated cell."""
    return {k: ";".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()}


def report(paths: list[str | Path], baseline: str | None = None) -> list[dict[str, Any]]:
    """Rows of the report table for all runs found under `paths`, compared to the `baseline` group when given."""
    runs = [run for run in find_runs(paths) if not is_rl_run(run) and not is_dataset_distill_run(run)]
    if not runs:
        raise FileNotFoundError(f"no finished runs (folders with summary.json) under {', '.join(map(str, paths))}")
    rows = table_rows(group_runs(runs))
    if baseline:
        compare_to_baseline(rows, baseline, "best_top1_values")
    return rows
