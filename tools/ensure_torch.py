"""Install torch into the running interpreter's environment, preferring a wheel already on this machine.

Order: (1) torch already importable -> nothing to do; (2) a torch wheel in one of pip's configured
``find-links`` folders or in $SOCRATIC_TORCH_WHEELS -> install the newest such wheel (so an offline CPU
build is used instead of downloading a multi-GB CUDA build); (3) otherwise ``pip install torch`` from the
index, i.e. whatever build the user's pip would pick. Nothing is pinned.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def _local_wheel_dirs() -> list[Path]:
    dirs = [d for d in os.environ.get("SOCRATIC_TORCH_WHEELS", "").split(os.pathsep) if d]
    found = _pip("config", "list").stdout
    for line in found.splitlines():
        if "find-links" in line:
            value = line.split("=", 1)[1].strip().strip("'\"")
            dirs.extend(value.split())
    return [Path(d.removeprefix("file://")) for d in dirs if Path(d.removeprefix("file://")).is_dir()]


def _version_key(wheel: Path) -> tuple[int, ...]:
    match = re.match(r"torch-(\d+)\.(\d+)\.(\d+)", wheel.name)
    return tuple(int(g) for g in match.groups()) if match else (0,)


def main() -> int:
    if importlib.util.find_spec("torch") is not None:
        print("torch: already installed")
        return 0
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = sorted(
        (w for d in _local_wheel_dirs() for w in d.glob(f"torch-*-{tag}-*.whl")), key=_version_key
    )
    target = str(wheels[-1]) if wheels else "torch"
    print(f"torch: installing {target}")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", target])
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
