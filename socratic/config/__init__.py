"""Typed experiment configs: YAML in, validated dataclasses out, dotted overrides from the command line."""

from socratic.config.loader import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
    validate,
)
from socratic.config.schema import (
    DAConfig,
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
)

__all__ = [
    "ConfigError", "DAConfig", "DataConfig", "ExperimentConfig", "MethodConfig", "ModelConfig", "OptimConfig",
    "RuntimeConfig", "apply_overrides", "config_from_dict", "config_to_dict", "load_config", "save_config",
    "validate",
]
