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
        ({"optim": {"lrr": 0.1}}, "unknown config key 'optim.lrr'; valid keys here: epochs, optimizer, lr"),
        ({"optim": {"lr": "fast"}}, "optim.lr: expected a number, got 'fast'"),
        ({"seed": 1.5}, "seed: expected an integer"),
        ({"runtime": {"progress": "yes"}}, "runtime.progress: expected true or false"),
        ({"method": {"name": "magic"}}, "method.name: unknown method 'magic'; valid: aekd, "),
        ({**KD_TEACHER, "method": {"name": "kd", "hint_layer": 2}},
         "unknown config key 'method.hint_layer'; valid keys for method 'kd': name, temperature, ce_weight, kd_weight"),
        ({**KD_TEACHER, "method": {"name": "kd", "temperature": 0}}, "method.temperature must be > 0, got 0.0"),
        ({"method": {"name": "aver", "agent": {"lr": -1}}, "teachers": [{"name": "resnet8", "checkpoint": "t.pt"}] * 2},
         "method.agent.lr must be > 0, got -1"),
        ({"method": {"name": "aver", "agent": {"layout": "flat"}}}, "method.agent.layout: 'flat' is not one of"),
        ({"method": 3}, "method: expected a mapping with a 'name'"),
        ({"data": {"augment": {"name": "crop_flip", "padding": -1}}}, "data.augment.padding must be >= 0"),
        ({"data": {"augment": {"name": "mixup"}}}, "data.augment.name: unknown augmentation 'mixup'; valid: crop_flip"),
        ({**KD_TEACHER, "data": {"augment": "two_view"}},
         "data.augment.name 'two_view' gives 2 view(s) of each image but method.name 'kd' takes 1: use one of crop_flip"),
        ({**KD_TEACHER, "method": {"name": "mlkd"}}, "method.name 'mlkd' takes 2: use one of ssl_views, two_view"),
        ({"data": {"name": "mnist"}}, "data.name: 'mnist' is not one of cifar10, cifar100, fashion_mnist, imagefolder"),
        ({"optim": {"lr": -1}}, "optim.lr must be > 0"),
        ({"optim": {"milestones": [5, 3]}}, "optim.milestones must be increasing"),
        ({"data": {"train_subset": 10.5}}, "data.train_subset must be a fraction"),
        ({"method": {"name": "kd"}}, "method.name 'kd' takes exactly 1 teacher(s) (entries in teachers), got 0"),
        ({"method": {"name": "aver"}, "teachers": [{"name": "resnet8", "checkpoint": "t.pt"}]},
         "method.name 'aver' takes >= 2 teacher(s)"),
        ({"teachers": [{"name": "resnet8", "checkpoint": "t.pt"}]},
         "method.name 'ce' takes no teacher(s) (entries in teachers), got 1: remove the teachers list"),
        ({**KD_TEACHER, "da": {"enabled": True, "target": "weighted"}}, "da.target=weighted needs a multi-teacher method"),
        ({"method": {"name": "kd"}, "teachers": [{"name": "resnet8"}]}, "teachers.0.checkpoint is required"),
        ({"teachers": {"name": "resnet8"}}, "teachers: expected a list"),
        ({"data": 3}, "data: expected a mapping of name, root"),
        ({"runtime": {"device": "gpu"}}, "runtime.device: 'gpu' is not a device (use auto, cpu, cuda, cuda:N or mps)"),
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


def test_method_sections_take_their_own_defaults() -> None:
    fitnet = config_from_dict({"method": {"name": "fitnet"}, "teachers": KD_TEACHER["teachers"]})
    assert fitnet.method.ce_weight == 1.0 and fitnet.method.hint_layer == 2  # FitNet's recipe, not KD's 0.1
    assert not hasattr(fitnet.method, "temperature")
    aver = config_from_dict({"method": {"name": "aver", "agent": {"lr": 0.5}},
                             "teachers": KD_TEACHER["teachers"] * 2})
    assert aver.method.alpha == 1.0 and aver.method.agent.lr == 0.5 and aver.method.agent.hidden == 128
    assert config_from_dict({"method": "ce"}).method.name == "ce"  # a bare name selects the defaults


def test_augment_section_defaults_to_the_dataset_and_turns_flips_off() -> None:
    assert config_from_dict({}).data.augment.padding == 2  # fashion_mnist's default: 2 px shift
    assert config_from_dict({"data": {"name": "cifar10"}}).data.augment.padding == 4
    no_flip = config_from_dict({"data": {"augment": {"name": "crop_flip", "flip": False}}}).data.augment
    assert no_flip.flip is False and no_flip.padding == 4
    assert config_from_dict({"data": {"augment": "none"}}).data.augment.name == "none"


def test_a_saved_config_of_socratic_0_1_is_migrated(tmp_path: Path) -> None:
    """A resolved config.yaml of the old layout: a flat method section, a multiteacher section, augment: bool."""
    flat = {"name": "kd", "temperature": 2.0, "ce_weight": 0.1, "kd_weight": 0.9, "hint_weight": 100.0,
            "hint_layer": 2}
    old_multiteacher = {"alpha": 2.0, "beta": 5.0, "temperature": 4.0, "agent": {"lr": 0.01}}
    with pytest.warns(UserWarning, match="layout of socratic 0.1"):
        kd = config_from_dict({**KD_TEACHER, "method": flat, "multiteacher": old_multiteacher,
                               "data": {"augment": False}})
    assert kd.method.temperature == 2.0 and not hasattr(kd.method, "hint_layer")
    assert kd.data.augment.name == "none"
    with pytest.warns(UserWarning):
        mt = config_from_dict({"method": {**flat, "name": "mtkd_rl", "temperature": 4.0},
                               "multiteacher": old_multiteacher, "teachers": KD_TEACHER["teachers"] * 2,
                               "data": {"augment": True}})
    assert mt.method.name == "mtkd_rl" and mt.method.alpha == 2.0 and mt.method.agent.lr == 0.01
    assert mt.data.augment.padding == 2


def test_an_empty_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        load_config(path)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_refused_with_the_config() -> None:
    with pytest.raises(ConfigError, match="runtime.device: 'cuda' asks for CUDA but this machine has no CUDA device"):
        config_from_dict({"runtime": {"device": "cuda"}})
