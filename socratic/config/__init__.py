"""Typed experiment configs: YAML in, validated dataclasses out, dotted overrides from the command line."""

from socratic.config.loader import (
    ConfigError,
    apply_overrides,
    build_component,
    build_dataclass,
    config_from_dict,
    config_to_dict,
    load_config,
    migrate_legacy,
    resolve_saved,
    save_config,
    validate,
)
from socratic.config.schema import (
    DAConfig,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    SearchConfig,
    component,
)

__all__ = [
    "ConfigError", "DAConfig", "DataConfig", "ExperimentConfig", "ModelConfig", "OptimConfig", "RuntimeConfig",
    "SearchConfig", "apply_overrides", "build_component", "build_dataclass", "component", "config_from_dict",
    "config_to_dict", "load_config", "migrate_legacy", "resolve_saved", "save_config", "validate",
]
