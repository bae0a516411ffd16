"""The docs site builds with `mkdocs build --strict`: a broken link or anchor, a page that cannot be read or an API
reference (mkdocstrings) to something that no longer exists fails here, not on the published site."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
    assert done.returncode == 0, "mkdocs build --strict failed (extra [docs]):\n" + "\n".join(
        problems or [done.stdout, done.stderr])
    site = tmp_path / "site"
    assert (site / "report" / "index.html").is_file() and (site / "methods" / "kd" / "index.html").is_file()
    api = (site / "reference" / "engine" / "index.html").read_text()
    assert "RunFolder" in api and "tensorboard_tag" in api  # the reference comes from the docstrings
