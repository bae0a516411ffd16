import json
from pathlib import Path

import pytest
import yaml
from scipy import stats

from socratic.config import config_from_dict, config_to_dict
from socratic.reports import ReportError, report, to_markdown, welch_t, welch_test


def _fake_run(root: Path, name: str, seed: int, best: float, method: str = "ce", kind: str | None = None) -> None:
    run = root / name / f"seed{seed}"
    run.mkdir(parents=True)
    config = config_to_dict(config_from_dict({"name": name, "seed": seed, "method": {"name": method},
                                              **({"teachers": [{"name": "resnet20", "checkpoint": "t.pt"}]}
                                                 if method != "ce" else {})}))
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {"best_top1": best, "last_top1": best - 1, "train_time": 10.0 * (seed + 1)}
    if kind:
        summary["kind"] = kind
    (run / "summary.json").write_text(json.dumps(summary))


def test_groups_by_config_and_averages_over_seeds(tmp_path: Path) -> None:
    for seed, best in enumerate((70.0, 72.0, 74.0)):
        _fake_run(tmp_path, "kd", seed, best, method="kd")
    _fake_run(tmp_path, "scratch", 0, 60.0)
    _fake_run(tmp_path, "pd", 0, 5.0, kind="rl_distill")  # RL runs have their own report
    rows = {r["name"]: r for r in report([tmp_path])}
    assert set(rows) == {"kd", "scratch"}
    kd = rows["kd"]
    assert kd["seeds"] == 3 and kd["best_top1_mean"] == pytest.approx(72.0) and kd["best_top1_std"] == pytest.approx(2.0)
    assert kd["train_time_mean"] == pytest.approx(20.0)
    assert rows["scratch"]["best_top1_std"] != rows["scratch"]["best_top1_std"]  # NaN: one seed has no spread
    table = to_markdown(list(rows.values()))
    assert "| kd | kd | resnet20 | resnet8 | fashion_mnist | 3 | 72.00 ± 2.00 | 71.00 ± 2.00 | 20 |" in table
    assert "| 1 | 60.00 (n = 1) | 59.00 (n = 1) |" in table and "± 0.00" not in table


def test_no_runs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no finished runs"):
        report([tmp_path])
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        report([tmp_path / "missing"])


def test_epoch_time_and_peak_memory_from_summary_or_metrics(tmp_path: Path) -> None:
    _fake_run(tmp_path, "kd", 0, 70.0, method="kd")
    _fake_run(tmp_path, "kd", 1, 72.0, method="kd")
    new = tmp_path / "kd" / "seed0"  # a summary that has them
    summary = json.loads((new / "summary.json").read_text())
    (new / "summary.json").write_text(json.dumps({**summary, "epoch_time": 4.0, "peak_memory_mb": 500.0}))
    old = tmp_path / "kd" / "seed1"  # an older summary: taken from metrics.jsonl
    (old / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in (
        {"epoch": 1, "train_time": 5.0, "peak_memory_mb": 600.0}, {"epoch": 2, "train_time": 7.0, "peak_memory_mb": 700.0})))
    _fake_run(tmp_path, "scratch", 0, 60.0)  # neither: shown as a dash
    rows = {r["name"]: r for r in report([tmp_path])}
    assert rows["kd"]["epoch_time_mean"] == pytest.approx(5.0) and rows["kd"]["peak_memory_mb_mean"] == pytest.approx(600.0)
    table = to_markdown(list(rows.values()))
    assert "| 15 | 5.0 | 600 |" in table and "| 10 | – | – |" in table


def test_baseline_comparison_gives_the_gap_and_welch_t(tmp_path: Path) -> None:
    for seed, (kd, da) in enumerate(((70.0, 71.0), (72.0, 74.0), (74.0, 77.0))):
        _fake_run(tmp_path, "kd", seed, kd, method="kd")
        _fake_run(tmp_path, "da", seed, da, method="fitnet")
    rows = {r["name"]: r for r in report([tmp_path], baseline="kd")}
    # da: mean 74, variance 9; kd: mean 72, variance 4 -> t = 2 / sqrt(9/3 + 4/3)
    assert rows["da"]["delta"] == pytest.approx(2.0) and rows["da"]["welch_t"] == pytest.approx(2 / (13 / 3) ** 0.5)
    assert rows["kd"]["delta"] == 0.0 and rows["kd"]["welch_t"] == 0.0 and rows["kd"]["p_value"] == 1.0
    # degrees of freedom and p-value as scipy's own Welch test gives them
    reference = stats.ttest_ind([71.0, 74.0, 77.0], [70.0, 72.0, 74.0], equal_var=False)
    assert rows["da"]["welch_df"] == pytest.approx(float(reference.df))
    assert rows["da"]["p_value"] == pytest.approx(float(reference.pvalue))
    assert 3 < rows["da"]["welch_df"] < 4 and 0.3 < rows["da"]["p_value"] < 0.5  # not significant with 3 seeds
    table = to_markdown(list(rows.values()), "kd")
    assert "per seed | Δ vs kd | Welch t | df | p |" in table
    assert f"| 71.00, 74.00, 77.00 | +2.00 | +1.0 | 3.5 | {float(reference.pvalue):.2g} |" in table
    with pytest.raises(ReportError, match="no runs named 'pd'.*there are: "):
        report([tmp_path], baseline="pd")


def test_welch_t_edge_cases() -> None:
    assert welch_t([1.0], [1.0, 2.0]) != welch_t([1.0], [1.0, 2.0])  # NaN: one value has no spread estimate
    assert welch_t([2.0, 2.0], [1.0, 1.0]) == float("inf") and welch_t([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert welch_test([2.0, 2.0], [1.0, 1.0])[2] == 0.0 and welch_test([1.0, 1.0], [1.0, 1.0])[2] == 1.0
    assert all(v != v for v in welch_test([1.0], [1.0, 2.0]))  # n = 1: no t, df or p


def test_welch_test_matches_scipy_on_unequal_sizes() -> None:
    a, b = [0.1, 0.5, 0.9, 1.4, 1.0], [2.5, 3.5, 3.0]
    t, df, p = welch_test(a, b)
    reference = stats.ttest_ind(a, b, equal_var=False)
    assert (t, df, p) == pytest.approx((float(reference.statistic), float(reference.df), float(reference.pvalue)))
    assert p < 0.05  # a clear gap is significant
