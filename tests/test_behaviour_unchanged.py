"""Seeded tiny runs give the metrics recorded before the architecture refactor (tests/golden/behaviour.json).

The values were recorded with the code of commit b57a1b7 (before the registry and the run skeleton) by running
this file with SOCRATIC_RECORD_GOLDEN=1; every method option is spelled out, so a change of a default cannot hide
a change of behaviour.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from socratic.config import config_from_dict
from socratic.engine.checkpoint import save_checkpoint
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for, run_experiment
from socratic.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOLDEN = Path(__file__).parent / "golden" / "behaviour.json"
KD = {"name": "kd", "temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}
FITNET = {"name": "fitnet", "ce_weight": 1.0, "hint_weight": 100.0, "hint_layer": 2}
MTKD_RL = {"name": "mtkd_rl", "alpha": 1.0, "beta": 5.0, "temperature": 4.0,
           "agent": {"optimizer": "adam", "lr": 0.01, "warmup_epochs": 1}}


def _teacher(tmp_path: Path, name: str, seed: int) -> str:
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, in_channels=1)
    path = tmp_path / f"teacher_{name}_{seed}.pt"
    save_checkpoint({"model": model.state_dict(), "meta": {"model_name": name, "num_classes": 10}}, path)
    return str(path)


def _runs(run_config: dict, tmp_path: Path) -> dict[str, dict]:
    base = {**run_config, "data": {**run_config["data"], "train_subset": 100, "batch_size": 25},
            "optim": {**run_config["optim"], "epochs": 2},
            "runtime": {**run_config["runtime"], "tensorboard": False, "num_threads": 1}}
    one = [{"name": "resnet8", "checkpoint": _teacher(tmp_path, "resnet8", 5)}]
    two = [*one, {"name": "wrn_16_1", "checkpoint": _teacher(tmp_path, "wrn_16_1", 6)}]
    return {
        "kd": {**base, "name": "kd", "teachers": one, "method": KD},
        "kd_da": {**base, "name": "kd_da", "teachers": one, "method": KD, "da": {"enabled": True, "prob": 1.0}},
        "fitnet": {**base, "name": "fitnet", "teachers": one, "method": FITNET},
        "mtkd_rl": {**base, "name": "mtkd_rl", "teachers": two, "method": MTKD_RL},
    }


def _observed(config: dict) -> dict[str, float]:
    run_dir = run_dir_for(config_from_dict(config))
    measured = ("time", "per_s", "memory")  # the machine's, not the run's
    values = {}
    for metrics in read_metrics(run_dir / "metrics.jsonl"):
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not any(m in key for m in measured):
                values[f"epoch{metrics['epoch']}.{key}"] = float(value)
    weights = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    values["weights_abs_sum"] = float(sum(v.double().abs().sum() for v in weights.values() if v.is_floating_point()))
    return values


@pytest.mark.parametrize("run", ["kd", "kd_da", "fitnet", "mtkd_rl"])
def test_seeded_runs_match_the_values_recorded_before_the_refactor(run: str, run_config: dict,
                                                                   tmp_path: Path) -> None:
    config = _runs(run_config, tmp_path)[run]
    run_experiment(config_from_dict(config))
    observed = _observed(config)
    if os.environ.get("SOCRATIC_RECORD_GOLDEN"):
        recorded = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({**recorded, run: observed}, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())[run]
    assert observed.keys() == expected.keys()
    for key, value in expected.items():
        assert observed[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
