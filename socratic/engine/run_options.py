"""The command-line options of every run command (classification and RL): what to do with the run folder.

Only argparse and yaml are imported here, so `socratic --help` stays fast and a missing extra never breaks it.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import yaml


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--resume, --overwrite, --print-config and --accept-config-changes (read by `socratic.engine.run.RunFolder`)."""
    parser.add_argument("--resume", action="store_true",
                        help="continue the run folder's checkpoints/last.pt to the same result as an uninterrupted run")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (the file, the overrides and every default) and exit")
    parser.add_argument("--accept-config-changes", action="store_true",
                        help="with --resume: continue although keys that change the numbers (precision, "
                             "channels_last, optim.*, ...) differ from the saved config; the change is recorded in "
                             "the run folder's config_changes.jsonl")


def print_config(config: Any) -> None:
    """`--print-config`: the resolved config dataclass as YAML on stdout, in the layout of the run's config.yaml."""
    print(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False), end="")
