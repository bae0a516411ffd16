"""Tables of the eval stage's runs: one row per (config name, pre-training set), linear-probe top-1 per label
fraction as mean ± std over seeds (`socratic.reports.mean_std`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from socratic.reports import ReportError, find_runs, mean_std


def eval_rows(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Rows {name, set, seeds, probe_top1_<p>pct: [values], pretrain_lr: [values]} of the finished eval runs."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for run in find_runs(paths):
        summary = json.loads((run / "summary.json").read_text())
        if summary.get("kind") != "mkdt_eval":
            continue
        config = yaml.safe_load((run / "config.yaml").read_text())
        key = (config["name"], run.parent.name)
        row = groups.setdefault(key, {"name": key[0], "set": key[1], "seeds": [], "pretrain_lr": [],
                                      "stage_time": []})
        row["seeds"].append(config["seed"])
        row["pretrain_lr"].append(summary.get("pretrain_lr"))
        row["stage_time"].append(summary.get("stage_time"))
        for k, v in summary.items():
            if k.startswith("probe_top1_"):
                row.setdefault(k, []).append(v)
    if not groups:
        raise ReportError(f"no finished eval runs (summary kind mkdt_eval) under {', '.join(map(str, paths))}")
    return [groups[k] for k in sorted(groups)]


def rows_to_markdown(rows: list[dict[str, Any]]) -> str:
    fractions = sorted({k for r in rows for k in r if k.startswith("probe_top1_")},
                       key=lambda k: float(k[len("probe_top1_"):-3]))
    header = "| name | pre-training set | seeds | " + " | ".join(
        f"probe top-1 @ {k[len('probe_top1_'):-3]} % labels" for k in fractions) + " | eval time (s) |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        cells = []
        for k in fractions:
            mean, std = mean_std(r.get(k, []))
            cells.append(f"{mean:.2f} ± {std:.2f}")
        time_mean, _ = mean_std([t for t in r["stage_time"] if t is not None])
        lines.append(f"| {r['name']} | {r['set']} | {len(r['seeds'])} | " + " | ".join(cells) + f" | {time_mean:.0f} |")
    return "\n".join(lines) + "\n"
