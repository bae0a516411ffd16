"""The committed CPU-scale teachers are intact and load into their architectures with weights_only."""

import hashlib
from pathlib import Path

import pytest
import yaml

from socratic.engine.checkpoint import load_checkpoint, load_weights
from socratic.models import create_model

ZOO = Path(__file__).resolve().parent.parent / "teachers"
MODELS = sorted(ZOO.glob("*/*/model.pt"))
RL_MODELS = sorted(ZOO.glob("rl/*/*/model.pt"))


def test_zoo_has_the_documented_teachers() -> None:
    # the teachers listed in docs/teachers.md and used by the CPU-scale configs
    for name in ("fashion_mnist/resnet20", "cifar10_jpeg/resnet20", "cifar10_jpeg/wrn_16_2", "cifar10_jpeg/resnet14"):
        assert ZOO / name / "model.pt" in MODELS, f"missing committed teacher {name}"
    for name in ("rl/minatar/breakout", "rl/minatar/space_invaders"):
        assert ZOO / name / "model.pt" in RL_MODELS, f"missing committed RL teacher {name}"


@pytest.mark.parametrize("path", MODELS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_teacher_checksum_and_weights(path: Path) -> None:
    check_file(path)
    meta = load_checkpoint(path)["meta"]
    config = yaml.safe_load((path.parent / "config.yaml").read_text())
    assert meta["model_name"] == config["student"]["name"]
    model = create_model(meta["model_name"], num_classes=meta["num_classes"], in_channels=meta["in_channels"])
    load_weights(model, path, role="teacher")


def check_file(path: Path) -> None:
    recorded = (path.parent / "model.pt.sha256").read_text().split()[0]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded
    assert path.stat().st_size <= 5 * 2**20


@pytest.mark.parametrize("path", RL_MODELS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_rl_teacher_checksum_and_game(path: Path) -> None:
    import torch

    from socratic.rl.envs import env_info
    from socratic.rl.teachers import load_teacher

    check_file(path)
    config = yaml.safe_load((path.parent / "config.yaml").read_text())
    info = env_info(config["env"]["suite"], config["env"]["game"])
    teacher = load_teacher(path, info)
    q = teacher(torch.zeros(2, *info.obs_shape, dtype=torch.uint8))
    assert q.shape == (2, info.num_actions) and torch.isfinite(q).all()
