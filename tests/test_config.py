from pathlib import Path

import pytest
import yaml

from socratic.config import ConfigError, config_from_dict, config_to_dict, load_config, save_config

KD_TEACHER = {"method": {"name": "kd"}, "teachers": [{"name": "resnet20", "checkpoint": "t.pt"}]}


def test_defaults_and_overrides_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", **KD_TEACHER, "optim": {"lr": 0.1}}))
    config = load_config(path, ["optim.lr=0.01", "seed=3", "optim.milestones=[5, 8]", "teachers.0.name=resnet32"])
    assert config.optim.lr == 0.01 and isinstance(config.optim.lr, float)
    assert config.seed == 3
    assert config.optim.milestones == [5, 8]
    assert config.teachers[0].name == "resnet32" and config.teachers[0].checkpoint == "t.pt"
    assert config.method.temperature == 4.0 and config.method.ce_weight == 0.1 and config.method.kd_weight == 0.9


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    """YAML 1.1 reads `1e-3` as a string; for a float key it is the number (in files and overrides)."""
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\n")
    config = load_config(path, ["optim.weight_decay=5E-4"])
    assert config.optim.lr == 0.001 and config.optim.weight_decay == 0.0005
    with pytest.raises(ConfigError, match="seed: expected an integer, got '1e3'"):
        load_config(None, ["seed=1e3"])
    with pytest.raises(ConfigError, match="optim.lr: expected a number, got '1e'"):
        load_config(None, ["optim.lr=1e"])


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    config = config_from_dict({"name": "x", **KD_TEACHER})
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert config_from_dict(config_to_dict(config)) == config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"optim": {"lrr": 0.1}}, "unknown config key 'optim.lrr'; valid keys here: epochs, lr"),
        ({"optim": {"lr": "fast"}}, "optim.lr: expected a number, got 'fast'"),
        ({"seed": 1.5}, "seed: expected an integer"),
        ({"runtime": {"progress": "yes"}}, "runtime.progress: expected true or false"),
        ({"method": {"name": "magic"}}, "method.name: 'magic' is not one of"),
        ({"data": {"name": "mnist"}}, "data.name: 'mnist' is not one of fashion_mnist, cifar10"),
        ({"optim": {"lr": -1}}, "optim.lr must be > 0"),
        ({"optim": {"milestones": [5, 3]}}, "optim.milestones must be increasing"),
        ({"data": {"train_subset": 10.5}}, "data.train_subset must be a fraction"),
        ({"method": {"name": "kd"}}, "needs exactly one entry in teachers"),
        ({"teachers": [{"name": "resnet8", "checkpoint": "t.pt"}]}, "method.name 'ce' trains without a teacher"),
        ({"method": {"name": "kd"}, "teachers": [{"name": "resnet8"}]}, "teachers.0.checkpoint is required"),
        ({"teachers": {"name": "resnet8"}}, "teachers: expected a list"),
        ({"data": 3}, "data: expected a mapping of name, root"),
    ],
)
def test_bad_configs_name_the_key(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(values)
    assert message in str(err.value)


def test_bad_overrides() -> None:
    with pytest.raises(ConfigError, match="must look like key.subkey=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="unknown config key 'optim.nope'"):
        load_config(None, ["optim.nope=1"])
    built = load_config(None, ["method.name=kd", "teachers.0.name=a", "teachers.0.checkpoint=b"])
    assert built.teachers[0].name == "a" and built.teachers[0].checkpoint == "b"
    with pytest.raises(ConfigError, match="list index must be 0..1"):
        load_config(None, ["method.name=kd", "teachers.0.name=a", "teachers.0.checkpoint=b", "teachers.3.name=c"])


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")
