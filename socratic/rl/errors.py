"""Errors of the RL package. They subclass the project's error types, so the CLI maps them to exit code 2."""

from __future__ import annotations

from socratic.config import ConfigError

INSTALL_HINTS = {
    "rl": 'pip install "socratic-kd[rl]"',
    "minatar": 'pip install "socratic-kd[rl,minatar]"',
    "atari": 'pip install "socratic-kd[rl,atari]"',
}


class MissingExtraError(ConfigError):
    """An optional dependency group (`rl`, `minatar`, `atari`) is not installed."""

    def __init__(self, extra: str, what: str, missing: str) -> None:
        self.extra = extra
        super().__init__(f"{what} needs the optional package '{missing}', which is not installed: "
                         f"run {INSTALL_HINTS[extra]}")


class UnknownGameError(ConfigError):
    """A game name that the chosen suite does not have."""
