"""docs/own-loop.md runs as written: its Python blocks are executed in order, in one namespace, from the repository
root (the committed CIFAR-10 teachers, random stand-in data). A block after `<!-- requires: X -->` runs only where
package X is installed (Lightning is in the dev extra, so CI runs it; transformers is not)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "own-loop.md"
BLOCK = re.compile(r"(?:<!-- requires: (?P<requires>[\w.]+) -->\n)?```python\n(?P<code>.*?)```", re.S)


def _blocks() -> list[tuple[str | None, str]]:
    return [(m["requires"], m["code"]) for m in BLOCK.finditer(PAGE.read_text())]


def test_the_page_has_the_snippets_it_promises() -> None:
    blocks = _blocks()
    assert len(blocks) >= 8
    assert {"lightning", "transformers"} <= {r for r, _ in blocks if r}
    text = PAGE.read_text()
    for snippet in ("socratic.load_teacher(", "socratic.DistillationLoss(\"kd\"", "socratic.DisagreementAugmentation(",
                    "socratic.DistillationLoss(\"camkd\"", "DistillationModule(", "def compute_loss("):
        assert snippet in text


def test_the_added_lines_are_at_most_three_per_feature() -> None:
    """The KD, DA and multi-teacher sections mark each added line `# + n`; none needs more than 3."""
    text = PAGE.read_text()
    for title in ("## Knowledge distillation", "## Disagreement Augmentation", "## Multi-teacher weighting"):
        section = text.split(title, 1)[1].split("\n## ", 1)[0]
        first_block = section.split("```python\n", 1)[1].split("```", 1)[0]
        marks = re.findall(r"# \+ (\d)", first_block)
        assert marks and int(max(marks)) <= 3 and len(marks) <= 3, (title, marks)


def test_every_block_of_the_page_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PL_DISABLE_FORK", "1")
    namespace: dict[str, object] = {"__name__": "own_loop"}
    output = io.StringIO()
    ran = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for requires, code in _blocks():
            if requires and importlib.util.find_spec(requires) is None:
                continue
            with contextlib.redirect_stdout(output):
                exec(compile(code, f"{PAGE.name} block {ran}", "exec"), namespace)  # noqa: S102
            ran += 1
    from socratic.models.teacher import InputNormalizationWarning

    # the page's data is normalised as the teachers expect: no teacher may warn about it
    assert not [w for w in caught if issubclass(w.category, InputNormalizationWarning)]
    printed = output.getvalue()
    assert ran >= 7
    # the page's claims: the taps found in the plain model, the usage error caught, the teacher weights printed
    assert "['2', '5']" in printed
    assert "trains extra modules (regressor) beside the student" in printed
    assert "w_logit_0" in printed and "w_logit_1" in printed
    if "DistillationModule" in namespace:
        assert "val/top1" in str(namespace["trainer"].callback_metrics)  # type: ignore[attr-defined]
    assert os.getcwd() == str(ROOT)
