"""A study's results: one row per trial (CSV and markdown) and plots via optuna.visualization.matplotlib."""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Any


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """number, state, value (the best per-epoch search.objective), each parameter, epochs reported, seconds, run
    folder, note."""
    keys = sorted({key for trial in study.get_trials(deepcopy=False) for key in trial.params})
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("surplus"):
            continue  # a surplus trial (two workers asked at once): never run
        seconds = ((trial.datetime_complete - trial.datetime_start).total_seconds()
                   if trial.datetime_complete and trial.datetime_start else None)
        notes = []
        if "retry_of" in trial.user_attrs:
            notes.append(f"retry of trial {trial.user_attrs['retry_of']}")
        if trial.state.name == "FAIL":
            reason = trial.user_attrs.get("error")
            notes.append(str(reason).splitlines()[0][:120] if reason else "worker stopped (stale)")
        row = {"trial": trial.number, "state": trial.state.name,
               "value": None if trial.value is None else round(float(trial.value), 4)}
        row.update({key: trial.params.get(key) for key in keys})
        row.update({"epochs": len(trial.intermediate_values), "seconds": None if seconds is None else round(seconds, 1),
                    "run_dir": trial.user_attrs.get("run_dir", ""), "note": "; ".join(notes)})
        rows.append(row)
    return rows


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(study: Any, rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    objective = study.user_attrs.get("objective", "val_top1")
    maximize = study.direction.name == "MAXIMIZE"
    lines = [f"# Study {study.study_name}", "",
             f"Objective: the best per-epoch `{objective}`, {'maximised' if maximize else 'minimised'}. Trials: "
             + ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())) + ".", ""]
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if complete:
        best = (max if maximize else min)(complete, key=lambda r: r["value"])
        params = ", ".join(f"{k}={_format(v)}" for k, v in best.items()
                           if k not in ("trial", "state", "value", "epochs", "seconds", "run_dir", "note"))
        lines += [f"Best: trial {best['trial']}, {objective} {best['value']:.4g} ({params}); "
                  f"run folder `{best['run_dir']}`.", ""]
    if rows:
        header = [k for k in rows[0] if k != "run_dir"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in rows:
            lines.append("| " + " | ".join(_format(row[k]) for k in header) + " |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _save_axes(axes: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    first = axes.flat[0] if hasattr(axes, "flat") else axes
    figure = first.figure
    figure.savefig(path.with_name(f".{path.stem}.{os.getpid()}.png"), dpi=120, bbox_inches="tight")
    os.replace(path.with_name(f".{path.stem}.{os.getpid()}.png"), path)
    plt.close(figure)


def _labelled(axes: Any, xlabel: str, ylabel: str) -> Any:
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    return axes


def write_plots(study: Any, out_dir: Path) -> dict[str, Any]:
    """history.png (optimisation history), intermediate.png (val top-1 per epoch), importance.png (parameter
    importances: PED-ANOVA, which needs no scikit-learn); a plot that cannot be made is reported, not raised."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    written: dict[str, Any] = {}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    plots = [("history", lambda: ovm.plot_optimization_history(study, target_name="best val top-1 (%)")),
             ("intermediate", lambda: _labelled(ovm.plot_intermediate_values(study), "epoch", "val top-1 (%)"))]
    if len(complete) >= 2:
        def importance() -> Any:
            from optuna import importance as imp

            evaluator = imp.PedAnovaImportanceEvaluator() if hasattr(imp, "PedAnovaImportanceEvaluator") else None
            return ovm.plot_param_importances(study, evaluator=evaluator, target_name="best val top-1 (%)")

        plots.append(("importance", importance))
    else:
        written["importance_skipped"] = "parameter importances need at least 2 complete trials"
    for name, make in plots:
        path = out_dir / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _save_axes(make(), path)
            written[name] = path
        except Exception as err:  # noqa: BLE001 - e.g. too few trials or a constant parameter
            written[f"{name}_skipped"] = f"{type(err).__name__}: {err}"
    return written


def write_report(study: Any, out_dir: str | Path) -> dict[str, Any]:
    """results.csv, results.md and the plots in `out_dir`; returns what was written (and what was skipped)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    _write(out_dir / "results.csv", to_csv(rows))
    _write(out_dir / "results.md", to_markdown(study, rows))
    return {"csv": out_dir / "results.csv", "markdown": out_dir / "results.md", **write_plots(study, out_dir)}
