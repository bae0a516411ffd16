"""Source layout: no line of the package's Python files is longer than 120 characters."""

from __future__ import annotations

from pathlib import Path

MAX_LINE = 120
PACKAGE = Path(__file__).resolve().parents[1] / "socratic"


def test_no_line_over_120_characters():
    files = sorted(path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts)
    assert files, f"no Python files found under {PACKAGE}"
    too_long = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
            if len(line) > MAX_LINE:
                too_long.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {len(line)} characters")
    assert not too_long, f"lines over {MAX_LINE} characters:\n" + "\n".join(too_long)
