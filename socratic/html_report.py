"""`socratic report RUNS --html OUT`: one self-contained HTML page of the runs found under RUNS.

The page (`OUT/index.html`) has no external resource: the plots are inline SVG drawn by matplotlib, the style
and the small table-sorting script are inline. It holds

* the classification table (as `socratic report`): mean ± std over seeds (`n = 1` for a single seed), the
  per-seed values and, with a baseline, the difference, Welch's t, its degrees of freedom and the p-value;
* learning curves: validation top-1 of every group (mean with a ± std band over its seeds), and per group each
  seed's validation top-1 and training loss with the group's band;
* the Disagreement Augmentation statistics (`da_*` metrics: last epoch, mean ± std over seeds) and their curves;
* the teacher weights of multi-teacher runs (`w_logit_<m>`, `w_feat_<m>`), mean over seeds per teacher;
* the RL table (as `socratic rl report`) and the RL score curves (`eval_score_mean` per epoch).

It reads only run folders (config.yaml, summary.json, metrics.jsonl), like the tables.
"""

from __future__ import annotations

import html
import io
import math
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from socratic.config import ConfigError
from socratic.engine.logger import read_metrics
from socratic.multiteacher.plot import teacher_weight_series
from socratic.reports import (ReportError, RunGroup, compare_to_baseline, find_runs, group_runs, is_rl_run,
                              mean_std, mean_std_cell, p_value_cell, table_rows)
from socratic.rl.reports import rl_rows

DA_KEYS = ("da_perturbed", "da_disagreement_before", "da_disagreement_after", "da_disagreement_gain", "da_abs_dx")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; cursor: pointer; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure svg { max-width: 100%; height: auto; } figcaption { font-size: 0.85em; color: #555; }
.note { color: #555; font-size: 0.9em; }
"""

# Sort a table by a header click (numbers by value, text alphabetically); nothing else runs.
_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, column) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var rows = Array.from(body.rows);
    var key = function (row) { var t = row.cells[column].textContent; var n = parseFloat(t); return isNaN(n) ? t : n; };
    var up = th.dataset.order !== "up";
    rows.sort(function (a, b) { var x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (up ? 1 : -1); });
    th.dataset.order = up ? "up" : "down";
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


# ------------------------------------------------------------------------------------------- the data
def _curve(run_metrics: list[list[dict[str, Any]]], key: str) -> tuple[list[int], list[float], list[float]]:
    """(epochs, mean, std) of `key` over the runs of a group, at every epoch at least one run logged it; the
    std is NaN where only one run did."""
    by_epoch: dict[int, list[float]] = {}
    for metrics in run_metrics:
        for line in metrics:
            value = line.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                by_epoch.setdefault(int(line["epoch"]), []).append(float(value))
    epochs = sorted(by_epoch)
    pairs = [mean_std(by_epoch[e]) for e in epochs]
    return epochs, [m for m, _ in pairs], [s for _, s in pairs]


def _group_metrics(group: RunGroup) -> list[list[dict[str, Any]]]:
    return [read_metrics(Path(run_dir) / "metrics.jsonl") for run_dir in group.run_dirs]


def _last_values(run_metrics: list[list[dict[str, Any]]], key: str) -> list[float]:
    """Each run's last logged value of `key`."""
    values = []
    for metrics in run_metrics:
        logged = [line[key] for line in metrics if isinstance(line.get(key), (int, float))]
        if logged:
            values.append(float(logged[-1]))
    return values


def _teacher_weights(run_metrics: list[list[dict[str, Any]]]) -> dict[str, dict[int, tuple[list[int], list[float]]]]:
    """{'logit'|'feat': {teacher: (epochs, mean weight over the runs)}}."""
    merged: dict[str, dict[int, dict[int, list[float]]]] = {"logit": {}, "feat": {}}
    for metrics in run_metrics:
        for kind, teachers in teacher_weight_series(metrics).items():
            for m, points in teachers.items():
                for epoch, value in points:
                    merged[kind].setdefault(m, {}).setdefault(epoch, []).append(value)
    return {kind: {m: (sorted(points), [statistics.fmean(points[e]) for e in sorted(points)])
                   for m, points in teachers.items()} for kind, teachers in merged.items()}


# ------------------------------------------------------------------------------------------ the plots
def _svg(fig: Any) -> str:
    """A matplotlib figure as inline SVG markup (text kept as text), the figure closed."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")  # laid out by the caller: bbox_inches="tight" would draw it twice
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "socratic", "font.size": 9})
    return plt


def _band(ax: Any, epochs: list[int], mean: list[float], std: list[float], label: str, **style: Any) -> None:
    """A mean line with a ± std band where the std is defined (two or more seeds)."""
    line, = ax.plot(epochs, mean, label=label, **style)
    spread = [(e, m, s) for e, m, s in zip(epochs, mean, std) if s == s]
    if spread:
        e, m, s = zip(*spread)
        ax.fill_between(e, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=line.get_color(),
                        alpha=0.2, linewidth=0)


def _axes_style(ax: Any, ylabel: str, title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _overview_plot(groups: list[tuple[str, list[list[dict[str, Any]]]]], key: str, ylabel: str,
                   title: str) -> str | None:
    """Every group's mean curve of `key` with its ± std band over seeds (None when no group logged it)."""
    curves = [(name, _curve(metrics, key)) for name, metrics in groups]
    curves = [(name, c) for name, c in curves if c[0]]
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, (epochs, mean, std) in curves:
        _band(ax, epochs, mean, std, name, marker="o", markersize=2)
    _axes_style(ax, ylabel, title)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _svg(fig)


def _group_plot(name: str, run_metrics: list[list[dict[str, Any]]], seeds: list[int],
                panels: tuple[tuple[str, str], ...]) -> str | None:
    """One panel per (key, label): each seed's curve (thin) and the group's mean ± std band."""
    present = [(key, label) for key, label in panels if _curve(run_metrics, key)[0]]
    if not present:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(present), figsize=(4.6 * len(present), 3.4), squeeze=False)
    for ax, (key, label) in zip(axes[0], present):
        for seed, metrics in zip(seeds, run_metrics):
            epochs, values, _ = _curve([metrics], key)
            if epochs:
                ax.plot(epochs, values, linewidth=0.8, alpha=0.6, label=f"seed {seed}")
        epochs, mean, std = _curve(run_metrics, key)
        _band(ax, epochs, mean, std, "mean ± std", color="black", linewidth=1.6)
        _axes_style(ax, label, f"{name}: {label}")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _svg(fig)


def _weights_plot(name: str, weights: dict[str, dict[int, tuple[list[int], list[float]]]],
                  teachers: list[str]) -> str | None:
    panels = [(kind, title) for kind, title in (("logit", "logit KD weight"), ("feat", "feature KD weight"))
              if weights[kind]]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.4), squeeze=False)
    for ax, (kind, title) in zip(axes[0], panels):
        for m, (epochs, values) in sorted(weights[kind].items()):
            teacher = teachers[m] if m < len(teachers) else "teacher"
            ax.plot(epochs, values, marker="o", markersize=2, label=f"{m}: {teacher}")
        _axes_style(ax, f"mean {title}", f"{name}: {title}")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _svg(fig)


# ------------------------------------------------------------------------------------------- the page
def _cell(value: Any) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _number(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return format(value, spec)


def _comparison_cells(row: dict[str, Any], values_key: str) -> list[str]:
    if "delta" not in row:
        return []
    return [", ".join(f"{v:.2f}" for v in row[values_key]), f"{row['delta']:+.2f}", _number(row["welch_t"], "+.2f"),
            _number(row["welch_df"], ".1f"), p_value_cell(row["p_value"])]


_COMPARISON_HEADER = ["Δ vs {}", "Welch t", "df", "p (two-sided)"]


def _figure(svg: str | None, caption: str) -> str:
    if svg is None:
        return ""
    return f'<figure class="plot">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'


def _classification_section(groups: list[RunGroup], baseline: str | None) -> str:
    rows = table_rows(groups)
    if baseline:
        compare_to_baseline(rows, baseline, "best_top1_values")
    compared = bool(rows) and "delta" in rows[0]
    header = ["name", "method", "teachers", "student", "dataset", "seeds", "best top-1 (%)", "last top-1 (%)",
              "per-seed best top-1", "train time (s)", "s / epoch"]
    if compared:
        header += [h.format(baseline) for h in _COMPARISON_HEADER]
    table = [[r["name"], r["method"], r["teachers"], r["student"], r["dataset"], r["seeds"],
              mean_std_cell(r["best_top1_mean"], r["best_top1_std"]),
              mean_std_cell(r["last_top1_mean"], r["last_top1_std"]),
              ", ".join(f"{v:.2f}" for v in r["best_top1_values"]), _number(r["train_time_mean"], ".0f"),
              _number(r["epoch_time_mean"], ".1f")] + (_comparison_cells(r, "best_top1_values")[1:] if compared else [])
             for r in rows]
    parts = ["<h2>Classification</h2>",
             '<p class="note">Mean ± sample std over seeds; a single seed is shown as (n = 1). '
             + ("Welch's unequal-variance t-test of each group's per-seed best top-1 against the baseline; "
                "the degrees of freedom are Welch-Satterthwaite's." if compared else
                "Pass --baseline NAME for the difference, Welch's t, degrees of freedom and p-values.") + "</p>",
             _table(header, table)]
    metrics = [(g, _group_metrics(g)) for g in groups]
    named = [(g.name, m) for g, m in metrics]
    parts.append("<h3>Learning curves</h3>")
    parts.append(_figure(_overview_plot(named, "val_top1", "validation top-1 (%)", "validation top-1 by group"),
                         "Validation top-1 of every group: mean over seeds, band ± std."))
    for group, run_metrics in metrics:
        parts.append(_figure(_group_plot(group.name, run_metrics, group.seeds,
                                         (("val_top1", "validation top-1 (%)"), ("train_loss", "training loss"))),
                             f"{group.name}: each seed, and the mean ± std over {len(group.seeds)} seed(s)."))
    parts.append(_da_section(metrics))
    parts.append(_weights_section(metrics))
    return "\n".join(parts)


def _da_section(metrics: list[tuple[RunGroup, list[list[dict[str, Any]]]]]) -> str:
    da_groups = [(g, m) for g, m in metrics if any(_last_values(m, key) for key in DA_KEYS)]
    if not da_groups:
        return ""
    present = [key for key in DA_KEYS if any(_last_values(m, key) for _, m in da_groups)]
    rows = [[g.name, len(g.seeds)] + [mean_std_cell(*mean_std(_last_values(m, key)), 4)
                                       if _last_values(m, key) else "–" for key in present] for g, m in da_groups]
    parts = ["<h3>Disagreement Augmentation</h3>",
             '<p class="note">Last epoch, mean ± std over seeds: the share of perturbed batches, the student-teacher '
             "disagreement before and after the step(s), their ratio, and the mean |Δx| in normalised pixels.</p>",
             _table(["name", "seeds"] + [key.removeprefix("da_") for key in present], rows)]
    parts.append(_figure(_overview_plot([(g.name, m) for g, m in da_groups], "da_disagreement_gain",
                                        "disagreement after / before", "DA disagreement gain"),
                         "Disagreement gain of the DA step per epoch: mean over seeds, band ± std."))
    return "\n".join(parts)


def _weights_section(metrics: list[tuple[RunGroup, list[list[dict[str, Any]]]]]) -> str:
    figures = []
    for group, run_metrics in metrics:
        teachers = [t.get("name", str(i)) for i, t in enumerate(group.config.get("teachers") or [])]
        figures.append(_figure(_weights_plot(group.name, _teacher_weights(run_metrics), teachers),
                               f"{group.name}: per-epoch mean teacher weights, averaged over its seeds."))
    figures = [f for f in figures if f]
    return "\n".join(["<h3>Teacher weights (multi-teacher runs)</h3>", *figures]) if figures else ""


def _rl_section(groups: list[RunGroup], rows: list[dict[str, Any]], baseline: str | None) -> str:
    compared = bool(rows) and "delta" in rows[0]
    header = ["name", "game", "method", "params", "seeds", "score (mean ± std over seeds)", "per-seed score",
              "teacher", "relative (%)"]
    if compared:
        header += [h.format(baseline) for h in _COMPARISON_HEADER]
    table = [[r["name"], f"{r['suite']}/{r['game']}", r["method"], f"{r['params']:,}", r["seeds"],
              mean_std_cell(r.get("score_mean_mean"), r.get("score_mean_std"), 1),
              ", ".join(f"{v:.1f}" for v in r["score_mean_values"]),
              mean_std_cell(r.get("teacher_score_mean_mean"), r.get("teacher_score_mean_std"), 1),
              mean_std_cell(r.get("relative_score_mean"), r.get("relative_score_std"), 1)]
             + (_comparison_cells(r, "score_mean_values")[1:] if compared else []) for r in rows]
    metrics = [(g.name, _group_metrics(g)) for g in groups]
    parts = ["<h2>Reinforcement learning</h2>", _table(header, table),
             _figure(_overview_plot(metrics, "eval_score_mean", "evaluation score", "RL evaluation score by group"),
                     "Greedy evaluation score per epoch: mean over seeds, band ± std.")]
    for group, (_, run_metrics) in zip(groups, metrics):
        parts.append(_figure(_group_plot(group.name, run_metrics, group.seeds,
                                         (("eval_score_mean", "evaluation score"), ("train_loss", "training loss"))),
                             f"{group.name}: each seed, and the mean ± std over {len(group.seeds)} seed(s)."))
    return "\n".join(parts)


def render_html(paths: list[str | Path], baseline: str | None = None) -> str:
    """The report page of every run under `paths` (classification and RL), compared to the `baseline` group."""
    runs = find_runs(paths)
    if not runs:
        raise FileNotFoundError(f"no finished runs (folders with summary.json) under {', '.join(map(str, paths))}")
    classification = group_runs([r for r in runs if not is_rl_run(r)])
    rl_groups = group_runs([r for r in runs if is_rl_run(r)])
    names = [g.name for g in classification + rl_groups]
    if baseline and baseline not in names:
        raise ReportError(f"--baseline: no runs named '{baseline}' (there are: {', '.join(names)})")
    in_classification = baseline in [g.name for g in classification]
    sections = []
    if classification:
        sections.append(_classification_section(classification, baseline if in_classification else None))
    if rl_groups:
        rl_baseline = baseline if baseline and not in_classification else None
        rows = rl_rows([str(r) for r in runs if is_rl_run(r)], baseline=rl_baseline)
        sections.append(_rl_section(rl_groups, rows, rl_baseline))  # rl_rows groups the same runs in the same order
    listed = "".join(f"<li>{html.escape(str(p))}</li>" for p in paths)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>socratic report</title>'
            f"<style>{_STYLE}</style></head><body><h1>socratic report</h1>"
            f'<p class="note">{len(runs)} run folder(s) under:</p><ul>{listed}</ul>'
            + "\n".join(sections) + f"<script>{_SCRIPT}</script></body></html>\n")


def write_html_report(paths: list[str | Path], out: str | Path, baseline: str | None = None) -> Path:
    """Write `<out>/index.html` (atomically; `out` is made if needed) and return its path. Bad input (no runs,
    an unknown baseline, `out` a file) fails before anything is written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--html {out}: is a file; give a folder for index.html")
    page = render_html(paths, baseline)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "index.html"
    handle, tmp = tempfile.mkstemp(dir=out, prefix=".index.html.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(page)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


__all__ = ["render_html", "write_html_report"]
