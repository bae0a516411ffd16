"""Per-epoch mean teacher weights of multi-teacher runs, as a markdown table: for each run folder, each epoch's
logit and feature weight of every teacher (`w_logit_i`, `w_feat_i` in `metrics.jsonl`), its seconds and its peak
memory (RSS, MB).

    python benchmarks/weights_table.py runs/mt_table/{aver,ebkd,camkd,aekd,mtkd_rl}_pool3_resnet8/seed0
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from socratic.engine.logger import read_metrics


def run_rows(run_dir: Path, config: dict) -> list[str]:
    """One markdown row per epoch of one run folder, whose `config.yaml` is `config`."""
    teachers = len(config["teachers"])
    rows = []
    for epoch in read_metrics(run_dir / "metrics.jsonl"):
        logit = " / ".join(f"{epoch[f'w_logit_{i}']:.2f}" for i in range(teachers))
        feature = " / ".join(f"{epoch[f'w_feat_{i}']:.2f}" for i in range(teachers))
        rows.append(f"| {config['method']['name']} | {epoch['epoch']} | {logit} | {feature} "
                    f"| {epoch['train_time']:.0f} | {epoch['peak_memory_mb']:.0f} |")
    return rows


def main(run_dirs: list[str]) -> str:
    configs = [yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) for run_dir in run_dirs]
    names = " / ".join(teacher["name"] for teacher in configs[0]["teachers"])
    lines = [f"| method | epoch | logit weights ({names}) | feature weights | s / epoch | peak MB |",
             "|---|---|---|---|---|---|"]
    for run_dir, config in zip(run_dirs, configs):
        lines += run_rows(Path(run_dir), config)
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(main(sys.argv[1:]))
