"""A run that SIGKILLs itself at a chosen point (tests/test_faults.py starts it as a subprocess).

    python tests/fault_worker.py SPEC.json

SPEC: {"kind": "train" | "rl", "config": {...}, "kill": {...}} where kill is one of
  {"at": "step", "epoch": E, "step": S}     -- after optimiser step S of epoch E (mid-epoch)
  {"at": "write", "file": "last.pt", "count": N}  -- half-way through writing the N-th last.pt (a .tmp is left)
  {"at": "rename", "file": "last.pt", "count": N} -- right after the N-th last.pt was renamed into place
  {"at": "hold", "epoch": E, "step": S, "ready": PATH} -- write PATH at that step, then sleep (a lock holder)
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _patch_checkpoint_writes(kill: dict[str, Any]) -> None:
    import socratic.engine.run as run

    real = run.save_checkpoint
    seen = {"count": 0}

    def save(state: dict[str, Any], path: str | Path) -> None:
        path = Path(path)
        if path.name != kill["file"]:
            return real(state, path)
        seen["count"] += 1
        if seen["count"] != kill["count"]:
            return real(state, path)
        if kill["at"] == "rename":
            real(state, path)
            _die()
        buffer = io.BytesIO()  # "write": half of the bytes reach the temporary file, then the process dies
        torch.save(state, buffer)
        handle, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.write(handle, buffer.getvalue()[: len(buffer.getvalue()) // 2])
        os.fsync(handle)
        _die()

    run.save_checkpoint = save


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    kill = spec["kill"]
    torch.set_num_threads(1)

    def at_step(epoch: int, step: int) -> None:
        if (epoch, step) != (kill["epoch"], kill["step"]):
            return
        if kill["at"] == "hold":
            Path(kill["ready"]).write_text(str(os.getpid()))
            time.sleep(120)
        _die()

    callbacks = [at_step] if kill["at"] in ("step", "hold") else []
    if kill["at"] in ("write", "rename"):
        _patch_checkpoint_writes(kill)
    if spec["kind"] == "train":
        from socratic.config import config_from_dict
        from socratic.experiment import run_experiment

        run_experiment(config_from_dict(spec["config"]), callbacks=callbacks)
    else:
        from socratic.rl.config import DistillConfig, rl_config_from_dict
        from socratic.rl.distill import run_distillation

        run_distillation(rl_config_from_dict(DistillConfig, spec["config"]), step_callbacks=callbacks)
    sys.exit(3)  # not killed: the test fails on this exit code


if __name__ == "__main__":
    main(sys.argv[1])
