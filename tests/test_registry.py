"""The component registry: discovery, aliases, options that check themselves, and a method added from outside the
package that runs end to end through a config without any edit to socratic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from socratic.config import ConfigError, config_from_dict
from socratic.distillers import Distiller, register_distiller
from socratic.engine.logger import read_metrics
from socratic.experiment import run_dir_for, run_experiment
from socratic.losses import cross_entropy
from socratic.registry import AUGMENTATIONS, DATASETS, ENV_SUITES, METHODS, MODELS, WEIGHTINGS, Options, Registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_discovery_finds_the_built_in_components() -> None:
    assert {"ce", "kd", "fitnet", "aver", "ebkd", "camkd", "aekd", "mtkd_rl"} <= set(METHODS.names())
    assert WEIGHTINGS.names() == ["aekd", "aver", "camkd", "ebkd", "mtkd_rl"]
    assert {"crop_flip", "none"} <= set(AUGMENTATIONS.names())
    assert {"fashion_mnist", "cifar10", "cifar100", "imagefolder"} <= set(DATASETS.names())
    assert {"minatar", "atari"} <= set(ENV_SUITES.names())
    assert "resnet8" in MODELS.names() and "vgg8" in MODELS.names(include_aliases=True)
    assert METHODS.get("mtkd_rl").meta == {"teachers": (2, None), "teacher_weights": True, "features": True}
    assert ENV_SUITES.get("minatar").meta["input_scale"] == 1.0


def test_a_registry_refuses_duplicates_and_lists_names_on_a_miss() -> None:
    registry = Registry("widget")

    @dataclass
    class WidgetOptions(Options):
        size: int = 1

    registry.register("a", options=WidgetOptions, aliases=("alpha",), colour="red")(lambda options: options.size)
    assert registry.get("alpha").name == "a" and registry.get("a").meta == {"colour": "red"}
    assert registry.create("a", WidgetOptions(size=3)) == 3
    assert registry.default_options("a") == WidgetOptions(name="a", size=1)
    with pytest.raises(ValueError, match="widget name 'a' is already registered"):
        registry.register("a")(lambda: None)
    with pytest.raises(ValueError, match=r"unknown widget 'b'; valid: a"):
        registry.get("b")
    with pytest.raises(TypeError, match="must be a dataclass subclass of socratic.registry.Options"):
        registry.register("c", options=dict)
    registry.unregister("a")
    assert "alpha" not in registry and registry.names() == []


@dataclass
class HalfKDOptions(Options):
    name: str = "half_kd"
    weight: float = 0.5

    def check(self, prefix: str) -> None:
        self.require_positive(prefix, "weight")


class HalfKD(Distiller):
    """A user's own method, registered from outside socratic: CE plus `weight` x MSE to the teacher's logits."""

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module, weight: float = 0.5) -> None:
        super().__init__(student, teacher)
        self.weight = weight

    def forward_train(self, x, y, ctx=None):
        logits = self.student(x)
        steps_done = torch.tensor(float(ctx.global_step))  # the context reaches the method
        return logits, {"ce": cross_entropy(logits, y),
                        "mse": self.weight * (logits - self.teacher_logits(x)).pow(2).mean() + 0 * steps_done}


@pytest.fixture()
def half_kd() -> None:
    register_distiller("half_kd", options=HalfKDOptions, teachers=(1, 1))(HalfKD)
    yield
    METHODS.unregister("half_kd")


def test_a_method_registered_outside_the_package_runs_from_a_config(half_kd: None, run_config: dict,
                                                                    tmp_path: Path) -> None:
    from socratic.engine.checkpoint import save_checkpoint
    from socratic.models import create_model

    teacher = tmp_path / "teacher.pt"
    save_checkpoint({"model": create_model("resnet8", num_classes=10, in_channels=1).state_dict(),
                     "meta": {"model_name": "resnet8", "num_classes": 10}}, teacher)
    config = {**run_config, "name": "half", "method": {"name": "half_kd", "weight": 0.25},
              "teachers": [{"name": "resnet8", "checkpoint": str(teacher)}],
              "data": {**run_config["data"], "train_subset": 100}, "optim": {**run_config["optim"], "epochs": 1},
              "runtime": {**run_config["runtime"], "tensorboard": False}}
    with pytest.raises(ConfigError, match="method.weight must be > 0"):
        config_from_dict({**config, "method": {"name": "half_kd", "weight": 0}})
    with pytest.raises(ConfigError, match="valid keys for method 'half_kd': name, weight"):
        config_from_dict({**config, "method": {"name": "half_kd", "temperature": 4}})
    run_experiment(config_from_dict(config))
    (metrics,) = read_metrics(run_dir_for(config_from_dict(config)) / "metrics.jsonl")
    assert metrics["train_mse"] > 0 and metrics["train_ce"] > 0
