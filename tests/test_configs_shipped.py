"""Every shipped config parses and validates (teacher checkpoints need not exist yet)."""

from pathlib import Path

import pytest

from socratic.config import load_config
from socratic.models import list_models

ALL = sorted((Path(__file__).resolve().parent.parent / "configs").rglob("*.yaml"))
RL_CONFIGS = [p for p in ALL if p.parent.name == "rl"]
SEARCH_SPACES = [p for p in ALL if p.parent.name == "search"]  # checked in tests/test_search.py
MKDT_CONFIGS = [p for p in ALL if "mkdt" in p.parent.parts]  # socratic dataset-distill: tests/test_mkdt.py
CONFIGS = [p for p in ALL if p not in RL_CONFIGS and p not in SEARCH_SPACES and p not in MKDT_CONFIGS]


def test_configs_exist() -> None:
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_config_is_valid(path: Path) -> None:
    config = load_config(path)
    names = set(list_models(include_aliases=True))
    assert config.student.name in names and all(t.name in names for t in config.teachers)


def test_cifar100_recipes_follow_the_paper() -> None:
    for path in (p for p in CONFIGS if "cifar100" in p.parts):
        config = load_config(path)
        if path.parent.name in ("mlkd", "mlkd_da"):  # MLKD's reference recipe (METHODS.md §I.2.5)
            epochs, lr = {"resnet8x4": (240, 0.025), "vgg8_bn": (240, 0.025), "ShuffleV2": (960, 0.01)}[
                config.student.name]
            assert (config.optim.epochs, config.optim.lr, config.data.batch_size, config.optim.milestones,
                    config.optim.weight_decay, config.data.augment.name) == (
                        epochs, lr, 64, [150, 180, 210], 5e-4, "two_view"), path
            continue
        assert (config.optim.epochs, config.data.batch_size, config.optim.milestones) == (240, 64, [150, 180, 210])
        assert config.optim.weight_decay == 5e-4
        if "multiteacher" in path.parts:  # MTKD-RL's reference code: lr 0.05 for every student, nesterov
            assert config.optim.lr == 0.05 and config.optim.nesterov, path
            continue
        expected_lr = 0.01 if config.student.name in ("ShuffleV1", "ShuffleV2", "mobile_half") else 0.05
        assert config.optim.lr == expected_lr, path


@pytest.mark.parametrize("path", RL_CONFIGS, ids=lambda p: p.name)
def test_rl_config_is_valid(path: Path) -> None:
    from socratic.rl.config import DistillConfig, DPDConfig, TrainTeacherConfig, load_rl_config

    kind = TrainTeacherConfig if path.stem.endswith("_teacher") else DPDConfig if "_dpd" in path.stem else DistillConfig
    load_rl_config(kind, path)


def test_configs_have_distinct_run_folders() -> None:
    """Two configs with one output_dir and name would write the same run folder (<output_dir>/<name>/seed<seed>)."""
    seen: dict[tuple[str, str], Path] = {}
    for path in CONFIGS:
        config = load_config(path)
        key = (config.output_dir, config.name)
        assert key not in seen, f"{path} and {seen[key]} both write their runs to {key[0]}/{key[1]}"
        seen[key] = path
    assert len(seen) == len(CONFIGS)
