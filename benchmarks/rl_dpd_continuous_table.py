"""Dual policy distillation with DDPG / PPO peers against the same learners alone: the table (mean ± std over
seeds of each run's final score, Welch's t) and the learning curves (PNG) of `benchmarks/rl_dpd_continuous.sh`'s
run folders.

    python benchmarks/rl_dpd_continuous_table.py runs/rl_dpd_continuous --png-dir benchmarks/results/rl_continuous

A run's score is the mean of its two learners' final scores (each learner's best-round policy over
`eval.final_episodes` deterministic episodes); the curves are the per-round evaluation (`eval_score_mean`, the
mean of the two learners' `eval.episodes_per_round` episodes), mean ± std over seeds.
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
    """(game, learner, method) -> the seeds' run folders with a summary.json."""
    groups: dict[tuple[str, str, str], list[Path]] = defaultdict(list)
    for summary_path in sorted(root.glob("*/seed*/summary.json")):
        summary = json.loads(summary_path.read_text())
        if summary.get("kind") == "rl_dpd" and summary.get("algo") in ("ddpg", "ppo"):
            groups[(summary["game"], summary["algo"], summary["method"])].append(summary_path.parent)
    return groups


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--png-dir", type=Path, default=None)
    args = parser.parse_args()
    groups = _runs(args.root)
    print("| task | learner | n_timesteps / learner | DPD | alone | Δ | Welch t | DPD per seed | alone per seed | "
          "DPD best learner | alone best learner |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    pairs = sorted({(game, algo) for game, algo, _ in groups})
    for game, algo in pairs:
        dpd, alone = groups.get((game, algo, "dpd"), []), groups.get((game, algo, "alone"), [])
        if not dpd or not alone:
            continue
        a = [_summary(r)["score_mean"] for r in dpd]
        b = [_summary(r)["score_mean"] for r in alone]
        best_a = [_summary(r)["score_best_learner"] for r in dpd]
        best_b = [_summary(r)["score_best_learner"] for r in alone]
        steps = _summary(dpd[0])["n_timesteps"]
        (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
        print(f"| {game} | {algo.upper()} | {steps:,} | {ma:.1f} ± {sa:.1f} | {mb:.1f} ± {sb:.1f} | {ma - mb:+.1f} | "
              f"{welch_t(a, b):+.2f} | {', '.join(f'{v:.1f}' for v in a)} | {', '.join(f'{v:.1f}' for v in b)} | "
              f"{mean_std(best_a)[0]:.1f} ± {mean_std(best_a)[1]:.1f} | {mean_std(best_b)[0]:.1f} ± {mean_std(best_b)[1]:.1f} |")
        if args.png_dir is not None:
            _plot(game, algo, {"DPD": dpd, "alone": alone}, args.png_dir)


def _plot(game: str, algo: str, runs: dict[str, list[Path]], png_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, folders in runs.items():
        curves = [read_metrics(run / "metrics.jsonl") for run in folders]
        rounds = min(len(c) for c in curves)
        x = np.array([m["learner0_timesteps"] for m in curves[0][:rounds]])
        y = np.array([[m["eval_score_mean"] for m in c[:rounds]] for c in curves])
        mean, std = y.mean(axis=0), y.std(axis=0, ddof=1) if len(y) > 1 else np.zeros(rounds)
        ax.plot(x, mean, label=f"{label} ({len(folders)} seeds)")
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
    print(f"\n![{game} {algo}]({path.name})  <!-- {path} -->")


if __name__ == "__main__":
    main()
