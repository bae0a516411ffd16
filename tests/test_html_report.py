"""`socratic report RUNS --html OUT`: the page's content, and the page rendered in headless Chromium (no console
errors, every plot drawn, a screenshot in the test's temp folder)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from _browser import render
from socratic.cli import main
from socratic.config import config_from_dict, config_to_dict

EPOCHS = 4
# what a page of the runs below must show: the number of plots, each one an inline <svg> in a <figure class="plot">
# classification: the overview, one per group (kd, kd_da, camkd), the DA gain, camkd's teacher weights;
# RL: the overview and one for its group
PLOTS = 1 + 3 + 1 + 1 + 1 + 1


def _run(root: Path, name: str, seed: int, best: float, config: dict, metrics: list[dict], summary: dict | None = None,
         rl: bool = False) -> None:
    run = root / name / f"seed{seed}"
    run.mkdir(parents=True)
    values = {"name": name, "seed": seed, **config}
    (run / "config.yaml").write_text(yaml.safe_dump(values if rl else config_to_dict(config_from_dict(values))))
    (run / "summary.json").write_text(json.dumps(summary or {"best_top1": best, "last_top1": best - 0.5,
                                                             "train_time": 12.0}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))


def _curves(seed: int, top: float, **extra: float) -> list[dict]:
    return [{"epoch": e, "train_loss": 2.0 / e + 0.1 * seed, "val_top1": top * e / EPOCHS + seed,
             **{k: v * e for k, v in extra.items()}} for e in range(1, EPOCHS + 1)]


def _runs(root: Path) -> None:
    teacher = {"teachers": [{"name": "resnet20", "checkpoint": "t.pt"}]}
    for seed in range(3):
        _run(root, "kd", seed, 70.0 + 2 * seed, {"method": {"name": "kd"}, **teacher}, _curves(seed, 70.0))
        _run(root, "kd_da", seed, 73.0 + 3 * seed, {"method": {"name": "kd"}, "da": {"enabled": True}, **teacher},
             _curves(seed, 73.0, da_perturbed=0.1 + seed / 100, da_disagreement_before=0.01, da_abs_dx=0.001,
                     da_disagreement_after=0.02 + seed / 100, da_disagreement_gain=0.5 + seed / 10))
    two = {"teachers": [{"name": "resnet20", "checkpoint": "a.pt"}, {"name": "resnet14", "checkpoint": "b.pt"}]}
    _run(root, "camkd", 0, 60.0, {"method": {"name": "camkd"}, **two}, _curves(0, 60.0, w_logit_0=0.15, w_logit_1=0.1))
    for seed in range(2):
        summary = {"kind": "rl_distill", "suite": "minatar", "game": "Breakout", "method": "pd", "loss": "kl",
                   "student_params": 5691, "score_mean": 10.0 + seed, "score_std": 2.0, "teacher_score_mean": 20.0,
                   "relative_score": 50.0 + seed, "episodes": 10, "train_time": 30.0}
        metrics = [{"epoch": e, "train_loss": 1.0 / e, "eval_score_mean": 2.0 * e + seed} for e in range(1, 4)]
        _run(root, "pd", seed, 0.0, {"kind": "pd"}, metrics, summary, rl=True)


def test_html_report_content_and_rendering_in_chromium(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _runs(tmp_path / "runs")
    out = tmp_path / "html"
    assert main(["report", str(tmp_path / "runs"), "--html", str(out), "--baseline", "kd"]) == 0
    assert "| kd_da |" in capsys.readouterr().out  # the markdown table is still printed
    page = (out / "index.html").read_text()
    assert page.count('<figure class="plot"><svg') == PLOTS
    assert "<link" not in page and "src=" not in page  # self-contained: nothing to fetch
    assert "60.00 (n = 1)" in page and "± 0.00<" not in page  # one seed is shown as such
    assert "73.00, 76.00, 79.00" in page  # kd_da's per-seed best top-1
    kd_da = re.search(r"<tr><td>kd_da</td>.*?</tr>", page).group(0)
    assert "<td>+4.00</td>" in kd_da  # the means: kd_da 76, kd 72; then Welch t, df, p
    assert re.search(r"<td>\+4\.00</td><td>\+1\.92</td><td>3\.5</td><td>0\.1\d</td>", kd_da), kd_da
    assert "Disagreement Augmentation" in page
    assert "<td>2.4000 ± 0.4000</td>" in page  # the gain at the last epoch (the fixture multiplies by the epoch)
    assert "Teacher weights" in page and "1: resnet14" in page
    assert "Reinforcement learning" in page and "minatar/Breakout" in page and "10.5 ± 0.7" in page

    count = ("Array.from(document.querySelectorAll('figure.plot svg'))"
             ".filter(s => s.getBoundingClientRect().width > 100 && s.querySelectorAll('path').length > 3).length")
    result = render((out / "index.html").as_uri(), tmp_path / "report.png", count)
    assert result.errors == []
    assert result.value == PLOTS  # every plot is there, laid out and drawn
    assert (tmp_path / "report.png").stat().st_size > 20_000  # the screenshot (in the test's temp folder)
    # the check itself: a page with a script error, a console error and a missing resource is caught
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><img src="missing.png"><script>console.error("bad"); nope();</script></body></html>')
    errors = render(broken.as_uri(), tmp_path / "broken.png").errors
    assert len(errors) == 3 and any("nope" in e for e in errors) and any("missing.png" in e for e in errors)


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _runs(tmp_path / "runs")
    out = tmp_path / "html"
    assert main(["report", str(tmp_path / "runs"), "--html", str(out), "--baseline", "nope"]) == 2
    assert "no runs named 'nope'" in capsys.readouterr().err and not out.exists()
    assert main(["report", str(tmp_path / "missing"), "--html", str(out)]) == 2 and not out.exists()
    (tmp_path / "file").write_text("")
    assert main(["report", str(tmp_path / "runs"), "--html", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
