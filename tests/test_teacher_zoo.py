"""The committed CPU-scale teachers are intact and load into their architectures with weights_only."""

import hashlib
from pathlib import Path

import pytest
import yaml

from socratic.engine.checkpoint import load_checkpoint, load_weights
from socratic.models import create_model

ZOO = Path(__file__).resolve().parent.parent / "teachers"
MODELS = sorted(ZOO.glob("*/*/model.pt"))


def test_zoo_has_the_documented_teachers() -> None:
    # the teachers listed in docs/teachers.md and used by the CPU-scale configs
    for name in ("fashion_mnist/resnet20", "cifar10_jpeg/resnet20", "cifar10_jpeg/wrn_16_2"):
        assert ZOO / name / "model.pt" in MODELS, f"missing committed teacher {name}"


@pytest.mark.parametrize("path", MODELS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_teacher_checksum_and_weights(path: Path) -> None:
    recorded = (path.parent / "model.pt.sha256").read_text().split()[0]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded
    assert path.stat().st_size <= 5 * 2**20
    meta = load_checkpoint(path)["meta"]
    config = yaml.safe_load((path.parent / "config.yaml").read_text())
    assert meta["model_name"] == config["student"]["name"]
    model = create_model(meta["model_name"], num_classes=meta["num_classes"], in_channels=meta["in_channels"])
    load_weights(model, path, role="teacher")
