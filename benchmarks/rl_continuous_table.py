"""The "PD vs PD + DA" table of benchmarks/results/rl_continuous.md from the run folders of rl_continuous_pd.sh.

Per student size: mean ± std over seeds of the final score (best.pt, selected on 30 held-out episodes per epoch),
of the last checkpoint's score, of the relative score 100 x student / teacher (only where the teacher's score is
positive) and of the normalised score 100 x (student - random) / (teacher - random) with uniformly random play
measured on the same episodes; Welch's t of PD + DA against PD on the per-seed scores.

    python benchmarks/rl_continuous_table.py runs/bench_rl_continuous pendulum
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats


def main() -> None:
    out, task = Path(sys.argv[1]), sys.argv[2]
    teacher = json.loads((out / f"{task}_eval_eps0.json").read_text())["mean"]
    random = json.loads((out / f"{task}_eval_eps1.json").read_text())["mean"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(out.glob(f"{task}_*_h*/seed*/summary.json")):
        summary = json.loads(path.read_text())
        method, hidden = summary["name"][len(task) + 1:].rsplit("_h", 1)
        groups.setdefault((hidden, method), []).append(summary)
    print(f"teacher {teacher:.1f}, uniformly random play {random:.1f}\n")
    print("| student | params (% of teacher) | method | seeds | score (best.pt) | last checkpoint | relative (%) | "
          "normalised (%) | Welch t vs PD (p) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for hidden in sorted({h for h, _ in groups}, key=int):
        pd_scores = None
        for method in ("pd", "pd_da"):
            runs = groups.get((hidden, method), [])
            if not runs:
                continue
            scores = np.array([r["score_mean"] for r in runs])
            last = np.array([r["last_score_mean"] for r in runs])
            norm = 100 * (scores - random) / (teacher - random)
            rel = f"{np.mean(100 * scores / teacher):.1f} ± {np.std(100 * scores / teacher, ddof=1):.1f}" \
                if teacher > 0 else "- (teacher < 0)"
            welch = "-"
            if method == "pd":
                pd_scores = scores
            elif pd_scores is not None and len(pd_scores) > 1 and len(scores) > 1:
                t, p = stats.ttest_ind(scores, pd_scores, equal_var=False)
                welch = f"{t:+.2f} ({p:.2f})"
            share = 100 * runs[0]["student_params"] / runs[0]["teacher_params"]
            print(f"| mlp {hidden}-{hidden} | {runs[0]['student_params']:,} ({share:.1f} %) | "
                  f"{'PD + DA' if method == 'pd_da' else 'PD'} | {len(runs)} | "
                  f"{scores.mean():.1f} ± {scores.std(ddof=1):.1f} | {last.mean():.1f} ± {last.std(ddof=1):.1f} | "
                  f"{rel} | {norm.mean():.1f} ± {norm.std(ddof=1):.1f} | {welch} |")


if __name__ == "__main__":
    main()
