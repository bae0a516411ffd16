"""The configs that ship inside the package (`socratic configs list|copy NAME`).

`configs/` of the repository travels in the wheel as `socratic/configs/` (in a checkout that is a link to
`configs/`), so an installed socratic has the paper recipes and CPU-scale configs without the repository.
A config is named by its path below `configs/` without `.yaml`: `fashion_mnist/kd_resnet20_resnet8`.
"""

from __future__ import annotations

import difflib
import shutil
from importlib import resources
from pathlib import Path

from socratic.config import ConfigError


def configs_root() -> Path:
    """The folder of the shipped configs (inside the installed package, or the checkout's `configs/`)."""
    root = Path(str(resources.files("socratic"))) / "configs"
    if not root.is_dir():  # pragma: no cover - a broken install
        raise FileNotFoundError(f"no shipped configs at {root}: reinstall socratic-kd")
    return root


def list_configs(prefix: str = "") -> list[str]:
    """Names of the shipped configs (sorted), only those starting with `prefix` when given."""
    root = configs_root()
    names = sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))
    return [n for n in names if n.startswith(prefix.strip("/"))]


def config_path(name: str) -> Path:
    """The file of the shipped config `name` (with or without `.yaml`); unknown names are a ConfigError naming
    the closest ones."""
    name = name.strip("/").removesuffix(".yaml")
    path = configs_root() / f"{name}.yaml"
    if ".." in Path(name).parts or not path.is_file():
        names = list_configs()
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.4) or [n for n in names if name in n][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"no shipped config named '{name}'{hint} (`socratic configs list` shows all "
                          f"{len(names)})")
    return path


def copy_config(name: str, to: str | Path = ".", overwrite: bool = False) -> Path:
    """Copy the shipped config `name` into the folder `to` (or to the file `to` when it ends in .yaml) and
    return the new file; an existing file is kept (ConfigError) unless `overwrite`."""
    source = config_path(name)
    to = Path(to)
    target = to if to.suffix in (".yaml", ".yml") else to / source.name
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} exists: pass --force to replace it, or --to another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


__all__ = ["config_path", "configs_root", "copy_config", "list_configs"]
