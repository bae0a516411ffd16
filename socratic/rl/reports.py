"""RL run folders -> tables: `socratic rl report`, the RL counterpart of `socratic report`.

Reads only run folders (config.yaml + summary.json written by `socratic rl train-teacher | distill | dpd`,
recognised by `summary["kind"]` starting with `rl_`), groups runs whose configs differ only in the seed, and
gives the mean ± std over seeds of each run's mean score, the teacher's score and the relative score
(student / teacher, in %, as the DA paper's Table 2). Classification runs in the same folders are skipped.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from socratic.reports import (baseline_columns, baseline_header, compare_to_baseline, csv_cells, find_runs, group_runs,
                              is_rl_run, mean_std, mean_std_cell)


def find_rl_runs(paths: list[str | Path]) -> list[Path]:
    return [run for run in find_runs(paths) if is_rl_run(run)]


def _fmt(mean: float | None, std: float | None, digits: int = 1) -> str:
    return mean_std_cell(mean, std, digits)


def rl_rows(paths: list[str | Path], baseline: str | None = None) -> list[dict[str, Any]]:
    """One row per group of RL runs (same config but the seed), compared to the `baseline` group when given."""
    runs = find_rl_runs(paths)
    if not runs:
        raise FileNotFoundError(f"no finished RL runs (summary.json of kind rl_*) under {', '.join(map(str, paths))}")
    rows = []
    for group in group_runs(runs):
        first = group.summaries[0]
        kind = first["kind"]
        row: dict[str, Any] = {"name": group.name, "kind": kind, "suite": first.get("suite"), "game": first.get("game"),
                               "seeds": len(group.seeds)}
        if kind == "rl_distill":
            row["method"] = f"{first['method']} ({first['loss']})"
            row["params"] = first["student_params"]
        elif kind == "rl_dpd":
            row["method"] = f"{first['method']} ({first.get('algo', 'dqn')})"  # dpd / alone, and the peers' algorithm
            row["params"] = first["params"]
        else:
            row["method"] = first.get("algo", "dqn")
            row["params"] = first["params"]
        for key in ("score_mean", "teacher_score_mean", "relative_score", "last_score_mean", "last_relative_score",
                    "learner0_score_mean",
                    "learner1_score_mean", "score_best_learner", "train_time"):
            values = [s[key] for s in group.summaries if s.get(key) is not None]
            if values:
                row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)
        episode_stds = [s["score_std"] for s in group.summaries if s.get("score_std") is not None]
        row["episode_std_mean"] = mean_std(episode_stds)[0] if episode_stds else None
        row["episodes"] = first.get("episodes")
        row["score_mean_values"] = [s["score_mean"] for s in group.summaries if s.get("score_mean") is not None]
        rows.append(row)
    if baseline:
        compare_to_baseline(rows, baseline, "score_mean_values")
    return rows


def rl_markdown(rows: list[dict[str, Any]], baseline: str | None = None) -> str:
    header = ("| name | game | method | params | seeds | episodes | score (mean ± std over seeds) | episode std | "
              "teacher | relative (%) | last checkpoint: score | last: relative (%) | train time (s) |"
              + baseline_header(rows, baseline))
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for r in rows:
        if r["kind"] == "rl_dpd":
            score = (f"{_fmt(r.get('score_mean_mean'), r.get('score_mean_std'))} "
                     f"(learners {r.get('learner0_score_mean_mean', float('nan')):.1f} / "
                     f"{r.get('learner1_score_mean_mean', float('nan')):.1f})")
        else:
            score = _fmt(r.get("score_mean_mean"), r.get("score_mean_std"))
        episode_std = f"{r['episode_std_mean']:.1f}" if r.get("episode_std_mean") is not None else "-"
        lines.append(
            f"| {r['name']} | {r['suite']}/{r['game']} | {r['method']} | {r['params']:,} | {r['seeds']} | "
            f"{r.get('episodes') or '-'} | {score} | {episode_std} | "
            f"{_fmt(r.get('teacher_score_mean_mean'), r.get('teacher_score_mean_std'))} | "
            f"{_fmt(r.get('relative_score_mean'), r.get('relative_score_std'))} | "
            f"{_fmt(r.get('last_score_mean_mean'), r.get('last_score_mean_std'))} | "
            f"{_fmt(r.get('last_relative_score_mean'), r.get('last_relative_score_std'))} | "
            f"{r.get('train_time_mean', float('nan')):.0f} |" + baseline_columns(r, "score_mean_values")
        )
    return "\n".join(lines) + "\n"


def rl_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        fields: list[str] = []
        for row in rows:
            fields += [k for k in row if k not in fields]
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows([csv_cells(row) for row in rows])
    return buffer.getvalue()


__all__ = ["find_rl_runs", "rl_csv", "rl_markdown", "rl_rows"]
