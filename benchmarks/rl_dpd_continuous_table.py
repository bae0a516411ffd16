"""Dual policy distillation with DDPG / PPO peers against the same learners alone: the table (mean ± std over
seeds, Welch's t) and the learning curves (PNG) of `benchmarks/rl_dpd_continuous.sh`'s run folders.

    python benchmarks/rl_dpd_continuous_table.py runs/rl_dpd_continuous --png-dir benchmarks/results/rl_continuous
    python benchmarks/rl_dpd_continuous_table.py runs/rl_dpd_continuous --round 3   # runs stopped early

Without `--round`, a run's score is the mean of its two learners' final scores (`summary.json`: each learner's
best-round policy over `eval.final_episodes` deterministic episodes). With `--round R` it is the per-round
evaluation after round R (`metrics.jsonl`'s `eval_score_mean`: the mean of the two learners'
`eval.episodes_per_round` deterministic episodes), for runs that have not finished. The curves are the per-round
evaluations, mean ± std over seeds, up to the last round every seed of both groups has.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from socratic.engine.logger import read_metrics
from socratic.reports import mean_std, welch_t


def _runs(root: Path) -> dict[tuple[str, str, str], list[Path]]:
    """(game, learner, dpd | alone) -> the seeds' run folders (continuous-control DPD configs only)."""
    groups: dict[tuple[str, str, str], list[Path]] = defaultdict(list)
    for config_path in sorted(root.glob("*/seed*/config.yaml")):
        config = yaml.safe_load(config_path.read_text())
        learner = (config.get("dpd") or {}).get("learner")
        if learner in ("ddpg", "ppo"):
            method = "dpd" if config["dpd"]["enabled"] else "alone"
            groups[(config["env"]["game"], learner, method)].append(config_path.parent)
    return groups


def _fmt(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.1f} ± {std:.1f}"


def _scores(runs: list[Path], round_: int | None) -> tuple[list[float], list[float], int] | None:
    """(run scores, best-learner scores, steps per learner) or None when a run lacks what is asked."""
    scores, best, steps = [], [], 0
    for run in runs:
        if round_ is None:
            if not (run / "summary.json").is_file():
                return None
            summary = json.loads((run / "summary.json").read_text())
            scores.append(summary["score_mean"])
            best.append(summary["score_best_learner"])
            steps = summary["n_timesteps"]
        else:
            metrics = [m for m in read_metrics(run / "metrics.jsonl") if m["epoch"] == round_]
            if not metrics:
                return None
            scores.append(metrics[0]["eval_score_mean"])
            best.append(max(metrics[0]["learner0_score_mean"], metrics[0]["learner1_score_mean"]))
            steps = metrics[0]["learner0_timesteps"]
    return scores, best, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--round", type=int, default=None, help="compare the per-round evaluation after this round")
    parser.add_argument("--png-dir", type=Path, default=None)
    args = parser.parse_args()
    groups = _runs(args.root)
    what = "final score" if args.round is None else f"evaluation after round {args.round}"
    print(f"| task | learner | steps / learner | DPD ({what}) | alone | Δ | Welch t | DPD per seed | alone per seed | "
          "DPD better learner | alone better learner |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for game, algo in sorted({(game, algo) for game, algo, _ in groups}):
        dpd, alone = groups.get((game, algo, "dpd"), []), groups.get((game, algo, "alone"), [])
        a, b = _scores(dpd, args.round), _scores(alone, args.round)
        if a is None or b is None or not dpd or not alone:
            print(f"| {game} | {algo.upper()} | - | not available: {len(dpd)} DPD / {len(alone)} alone runs, "
                  "some unfinished | | | | | | | |")
            continue
        (sa, ba, steps), (sb, bb, _) = a, b
        print(f"| {game} | {algo.upper()} | {steps:,} | {_fmt(sa)} | {_fmt(sb)} | "
              f"{np.mean(sa) - np.mean(sb):+.1f} | {welch_t(sa, sb):+.2f} | {', '.join(f'{v:.1f}' for v in sa)} | "
              f"{', '.join(f'{v:.1f}' for v in sb)} | {_fmt(ba)} | {_fmt(bb)} |")
        if args.png_dir is not None:
            _plot(game, algo, {"DPD": dpd, "alone": alone}, args.png_dir)


def _plot(game: str, algo: str, runs: dict[str, list[Path]], png_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {label: [read_metrics(run / "metrics.jsonl") for run in folders] for label, folders in runs.items()}
    rounds = min(len(c) for group in curves.values() for c in group)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, group in curves.items():
        x = np.array([m["learner0_timesteps"] for m in group[0][:rounds]])
        y = np.array([[m["eval_score_mean"] for m in c[:rounds]] for c in group])
        mean, std = y.mean(axis=0), (y.std(axis=0, ddof=1) if len(y) > 1 else np.zeros(rounds))
        ax.plot(x, mean, marker="o", label=f"{label} ({len(group)} seeds)")
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    config = yaml.safe_load((next(iter(runs.values()))[0] / "config.yaml").read_text())
    ax.set_xlabel("environment steps per learner")
    ax.set_ylabel(f"return ({config['eval']['episodes_per_round']} episodes per learner, mean of 2)")
    ax.set_title(f"{game}-v5: DPD vs alone, {algo.upper()} peers")
    ax.legend()
    fig.tight_layout()
    png_dir.mkdir(parents=True, exist_ok=True)
    path = png_dir / f"dpd_{game.lower()}_{algo}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\n![{game} {algo}]({png_dir.name}/{path.name})")


if __name__ == "__main__":
    main()
