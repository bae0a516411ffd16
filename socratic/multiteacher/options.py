"""Value checks of the `multiteacher` config section (run by `socratic.config.validate`, even when the method is
not a multi-teacher one, so a typo never waits for the day the section is used)."""

from __future__ import annotations

from typing import Any

CAMKD_FEATURE_WEIGHTS = ("confidence", "equal")
AEKD_FEATURES = ("gradient", "equal")


def check_options(cfg: Any, prefix: str = "multiteacher") -> None:
    """Raise a ValueError naming the key (`multiteacher.agent.lr`, ...) and what is valid."""
    from socratic.multiteacher.agent import COMBINES, LAYOUTS, OPTIMIZERS, REWARDS, UPDATES

    for key in ("alpha", "beta"):
        if getattr(cfg, key) < 0:
            raise ValueError(f"{prefix}.{key} must be >= 0, got {getattr(cfg, key)}")
    for key in ("temperature", "entropy_temperature", "aekd_c"):
        if not getattr(cfg, key) > 0:
            raise ValueError(f"{prefix}.{key} must be > 0, got {getattr(cfg, key)}")
    if cfg.aekd_c > 1:
        raise ValueError(f"{prefix}.aekd_c is an upper bound on weights that sum to 1: use a value in (0, 1], "
                         f"got {cfg.aekd_c}")
    choices = {
        "camkd_feature_weights": CAMKD_FEATURE_WEIGHTS, "aekd_features": AEKD_FEATURES,
        "agent.layout": LAYOUTS, "agent.combine": COMBINES, "agent.reward": REWARDS, "agent.update": UPDATES,
        "agent.optimizer": OPTIMIZERS,
    }
    for key, allowed in choices.items():
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        if node not in allowed:
            raise ValueError(f"{prefix}.{key}: '{node}' is not one of {', '.join(allowed)}")
    agent = cfg.agent
    if agent.hidden <= 0:
        raise ValueError(f"{prefix}.agent.hidden must be > 0, got {agent.hidden}")
    if not agent.lr > 0:
        raise ValueError(f"{prefix}.agent.lr must be > 0, got {agent.lr}")
    for key in ("update_every", "warmup_epochs"):
        if getattr(agent, key) < 0:
            raise ValueError(f"{prefix}.agent.{key} must be >= 0, got {getattr(agent, key)}")
