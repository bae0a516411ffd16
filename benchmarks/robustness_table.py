"""Mean ± std over seeds of a `socratic robustness` CSV, as a markdown table: for each DA step count, each student
group's top-1 and the teacher's top-1 on that group's perturbed sets. Groups are the run names of the students
(`kd_resnet20_resnet8/seed0` and `.../seed1` form one group).

    python benchmarks/robustness_table.py benchmarks/results/da_robustness_resnet20_resnet8/robustness.csv
"""

from __future__ import annotations

import csv
import re
import sys
from collections import defaultdict

from socratic.reports import mean_std


def run_group(label: str) -> str:
    """`resnet8 (kd_resnet20_resnet8/seed0)` -> `kd_resnet20_resnet8`."""
    match = re.search(r"\(([^)/]+)(/seed\d+)?\)", label)
    return match.group(1) if match else label


def main(path: str) -> str:
    top1: dict[tuple[int, str], list[float]] = defaultdict(list)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        who = "student" if row["role"] == "student" else "teacher"
        top1[(int(row["steps"]), f"{run_group(row['perturbed_against'])} {who}")].append(float(row["top1"]))
    columns = sorted({key[1] for key in top1}, key=lambda c: (c.endswith("teacher"), c))
    lines = ["| DA steps | " + " | ".join(c.replace(" teacher", ": teacher") for c in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for step in sorted({key[0] for key in top1}):
        cells = ["{:.1f} ± {:.1f}".format(*mean_std(top1[(step, column)])) for column in columns]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(sys.argv[1]))
