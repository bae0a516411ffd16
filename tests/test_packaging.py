"""The package as a user gets it: build the wheel from this checkout, install it offline into a fresh virtual
environment, and run `socratic --version`, `socratic configs` and a tiny training run from there."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from socratic.cli import main
from socratic.shipped_configs import configs_root, list_configs

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("socratic", "configs", "pyproject.toml", "README.md", "LICENSE")


def _checkout_version() -> str:
    return re.search(r'__version__ = "([^"]+)"', (ROOT / "socratic" / "__init__.py").read_text()).group(1)


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(4):
                Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(root / split / label / f"{i}.png")


def test_the_wheel_installs_offline_and_runs(tmp_path: Path) -> None:
    # build from a copy, so that the checkout gets no build/ or egg-info
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp_path / "dist"), str(source)], tmp_path, env)
    wheel, = (tmp_path / "dist").glob("socratic_kd-*.whl")
    version = _checkout_version()
    assert wheel.name.startswith(f"socratic_kd-{version}-")
    names = zipfile.ZipFile(wheel).namelist()
    assert "socratic/py.typed" in names and any(n.endswith("licenses/LICENSE") for n in names)
    shipped = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml"))
    assert sorted(n.removeprefix("socratic/configs/") for n in names if n.startswith("socratic/configs/")) == shipped

    # a fresh environment: the machine's packages (torch, ...) are visible, socratic only from the wheel
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, env).strip())
    here = sysconfig.get_paths()["purelib"]  # this interpreter's packages, when it is itself a virtual environment
    if Path(here) != site:
        (site / "_socratic_test_parent.pth").write_text(here + "\n")  # a plain path: its .pth hooks do not run
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], tmp_path, env)
    work = tmp_path / "work"
    work.mkdir()
    socratic = str(venv / "bin" / "socratic")
    assert _run([socratic, "--version"], work, env).strip() == f"socratic {version}"
    where = _run([str(python), "-c", "import socratic, importlib.metadata as m; "
                  "print(socratic.__file__); print(m.version('socratic-kd'))"], work, env).split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == version  # the wheel's copy, one version

    # a shipped config (from inside the installed package), and a tiny run from it
    _run([socratic, "configs", "copy", "fashion_mnist/student_resnet8"], work, env)
    _image_folder(tmp_path / "images")
    _run([socratic, "train", "student_resnet8.yaml", "data.name=imagefolder", f"data.root={tmp_path / 'images'}",
          f"data.cache_dir={tmp_path / 'cache'}", "data.batch_size=4", "optim.epochs=1", "runtime.progress=false",
          "runtime.num_threads=1", f"output_dir={tmp_path / 'runs'}"], work, env)
    summary = json.loads((tmp_path / "runs" / "fashion_mnist_student_resnet8" / "seed0" / "summary.json").read_text())
    assert summary["epochs"] == 1 and 0.0 <= summary["best_top1"] <= 100.0


def test_configs_list_and_copy(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where the config's relative teacher path does not exist
    assert configs_root().resolve() == (ROOT / "configs").resolve()  # in a checkout: socratic/configs -> configs/
    names = list_configs()
    assert len(names) == len(list((ROOT / "configs").rglob("*.yaml"))) and "cifar100/kd/resnet32x4_resnet8x4" in names
    assert main(["configs", "list", "rl/"]) == 0
    listed = capsys.readouterr().out.split()
    assert listed and all(n.startswith("rl/") for n in listed)
    assert main(["configs", "copy", "fashion_mnist/kd_resnet20_resnet8.yaml", "--to", str(tmp_path)]) == 0
    copied = tmp_path / "kd_resnet20_resnet8.yaml"
    assert copied.read_text() == (ROOT / "configs" / "fashion_mnist" / "kd_resnet20_resnet8.yaml").read_text()
    assert "teachers/fashion_mnist/resnet20/model.pt are not here" in capsys.readouterr().err
    assert main(["configs", "copy", "fashion_mnist/kd_resnet20_resnet8", "--to", str(tmp_path)]) == 2
    assert "exists: pass --force" in capsys.readouterr().err
    assert main(["configs", "copy", "fashion_mnist/kd_resnet20_resnet8", "--to", str(tmp_path), "--force"]) == 0
    assert main(["configs", "copy", "fashion_mnist/kd_resnet2", "--to", str(tmp_path)]) == 2
    assert "did you mean fashion_mnist/kd_resnet20_resnet8" in capsys.readouterr().err
    assert main(["configs", "copy", "../pyproject", "--to", str(tmp_path)]) == 2  # only the shipped ones
    assert main(["configs", "list", "nothing/"]) == 2


def test_readme_links_are_absolute_and_point_at_files_of_this_repository() -> None:
    links = re.findall(r"\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert links, "the README links its docs"
    base = "https://github.com/socratic-kd/socratic/"
    for link in links:
        assert link.startswith("https://"), f"README link {link} is relative: it breaks on a package index"
        if link.startswith((base + "blob/main/", base + "tree/main/")):
            path = link.split("/main/", 1)[1]
            assert (ROOT / path).exists(), f"README link {link}: {path} is not in the repository"
