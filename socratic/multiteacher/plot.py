"""Per-epoch teacher weights of a multi-teacher run as a PNG: `socratic plot-weights RUN_DIR`.

Reads only the run folder: `metrics.jsonl` (the `w_logit_<m>` / `w_feat_<m>` means each epoch logs) and
`config.yaml` (the teachers' names for the legend).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from socratic.engine.logger import read_metrics


def teacher_weight_series(metrics: list[dict]) -> dict[str, dict[int, list[tuple[int, float]]]]:
    """{'logit'|'feat': {teacher index: [(epoch, mean weight), ...]}} from a run's metrics lines."""
    series: dict[str, dict[int, list[tuple[int, float]]]] = {"logit": {}, "feat": {}}
    for line in metrics:
        for key, value in line.items():
            for kind in series:
                prefix = f"w_{kind}_"
                if key.startswith(prefix) and key[len(prefix):].isdigit():
                    series[kind].setdefault(int(key[len(prefix):]), []).append((int(line["epoch"]), float(value)))
    return series


def plot_teacher_weights(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write a two-panel PNG (logit weights, feature weights; one line per teacher) and return its path
    (default `<run_dir>/teacher_weights.png`). A ValueError when the run logged no teacher weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    run_dir = Path(run_dir)
    series = teacher_weight_series(read_metrics(run_dir / "metrics.jsonl"))
    if not series["logit"]:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} has no teacher weights (w_logit_<m>): is it a run of a "
                         f"multi-teacher method (aver, ebkd, camkd, aekd, mtkd_rl)?")
    names: dict[int, str] = {}
    config_path = run_dir / "config.yaml"
    method = ""
    if config_path.is_file():
        config = yaml.safe_load(config_path.read_text()) or {}
        names = {i: t.get("name", str(i)) for i, t in enumerate(config.get("teachers") or [])}
        method = (config.get("method") or {}).get("name", "")
    panels = [(kind, title) for kind, title in (("logit", "logit KD weight"), ("feat", "feature KD weight"))
              if series[kind]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (kind, title) in zip(axes[0], panels):
        for m, points in sorted(series[kind].items()):
            epochs, values = zip(*points)
            ax.plot(epochs, values, marker="o", markersize=3, label=f"{m}: {names.get(m, 'teacher')}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"mean {title}")
        ax.set_title(f"{method} {title}".strip())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / "teacher_weights.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
