"""Copy a finished teacher run into the committed zoo: teachers/<dataset>/<model>/.

    python tools/publish_teacher.py runs/zoo/cifar10_jpeg/teacher_resnet20/seed0 teachers/cifar10_jpeg/resnet20

Writes model.pt (best student weights + metadata, loadable with weights_only=True), its sha256, and the
run's config.yaml, metrics.jsonl and summary.json, so `socratic report teachers/` lists the zoo.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

MAX_BYTES = 5 * 2**20


def main(run_dir: str, dest: str) -> int:
    run, out = Path(run_dir), Path(dest)
    best = run / "checkpoints" / "best.pt"
    if not best.is_file() or not (run / "summary.json").is_file():
        print(f"error: {run} is not a finished run (needs checkpoints/best.pt and summary.json)", file=sys.stderr)
        return 2
    if best.stat().st_size > MAX_BYTES:
        print(f"error: {best} is {best.stat().st_size / 2**20:.1f} MB, over the zoo's 5 MB limit", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(best, out / "model.pt")
    for name in ("config.yaml", "metrics.jsonl", "summary.json"):
        shutil.copyfile(run / name, out / name)
    digest = hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    (out / "model.pt.sha256").write_text(f"{digest}  model.pt\n")
    print(f"{out / 'model.pt'}: sha256 {digest}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
