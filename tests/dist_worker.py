"""Started by tests/test_distributed.py as `torchrun --nproc_per_node 2 tests/dist_worker.py SPEC.json`.

Each rank runs, in order: the parity run through the CLI (`socratic train`), a run killed after epoch 1's
checkpoint plus its --resume, a KD + Disagreement Augmentation run recording every DA coin flip, the SyncBatchNorm
error, KD runs without, recording and replaying the teacher-output cache, and the all_reduce_mean /
broadcast_module helpers; it writes what it saw to <out>/rank<R>.json.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _dist_support import register_flat_model  # noqa: E402

from socratic.augment.disagreement import DisagreementAugmentation  # noqa: E402
from socratic.cli import main  # noqa: E402
from socratic.config import ConfigError, config_from_dict  # noqa: E402
from socratic.engine import distributed  # noqa: E402
from socratic.experiment import run_experiment  # noqa: E402


class Killed(Exception):
    pass


def run() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    out = Path(spec["out"])
    rank = distributed.env_info().rank
    register_flat_model()
    seen: dict = {"rank": rank}

    # 1. parity: the command line under torchrun (the process group is made and destroyed by run_experiment)
    cfg_path = out / f"parity_rank{rank}.yaml"
    cfg_path.write_text(yaml.safe_dump(spec["parity"]))
    assert main(["train", str(cfg_path)]) == 0
    assert not distributed.is_initialized()

    # 2. killed after epoch 1 (every rank stops at the same step), then --resume on every rank
    def kill(epoch: int, step: int) -> None:
        if epoch == 2 and step == 3:
            raise Killed

    killed = {**spec["parity"], "name": "interrupted"}
    try:
        run_experiment(config_from_dict(killed), callbacks=[kill])
        raise AssertionError("the kill did not happen")
    except Killed:
        pass
    seen["resumed"] = run_experiment(config_from_dict(killed), resume=True)

    # 3. Disagreement Augmentation: record every coin flip (the batch comes back unchanged when not perturbed)
    flips: list[bool] = []
    weights: list[str] = []  # the student's parameters at each DA call: the same on every rank
    original = DisagreementAugmentation.__call__

    def recording(self, x, student, teachers):  # noqa: ANN001, ANN202
        assert not isinstance(student, torch.nn.parallel.DistributedDataParallel)
        new = original(self, x, student, teachers)
        flips.append(new is not x)
        weights.append(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in student.parameters())).hexdigest())
        return new

    DisagreementAugmentation.__call__ = recording
    seen["da_summary"] = run_experiment(config_from_dict(spec["da"]))
    DisagreementAugmentation.__call__ = original
    seen["flips"] = flips
    seen["weights"] = weights

    # 4. SyncBatchNorm is CUDA-only in torch: a clear config error on every rank, before anything is written
    runtime = {**spec["parity"]["runtime"], "sync_bn": True}
    try:
        run_experiment(config_from_dict({**spec["parity"], "name": "syncbn", "runtime": runtime}))
    except ConfigError as err:
        seen["sync_bn_error"] = str(err)

    # 5. the teacher-output cache: a KD run without it, one recording it and one replaying it (each rank its shard)
    kd = spec["kd_cache"]
    run_experiment(config_from_dict({**kd, "name": "kd_live"}))
    for name in ("kd_record", "kd_replay"):
        run_experiment(config_from_dict({**kd, "name": name, "teacher_cache": {"enabled": True,
                                                                              "dir": str(out / "teacher_cache")}}))

    # 6. helpers for learned modules updated outside the optimizer
    with distributed.session("cpu"):
        layer = torch.nn.Linear(3, 2)
        with torch.no_grad():
            layer.weight.fill_(float(rank + 1))
            layer.bias.fill_(float(10 * rank))
        distributed.all_reduce_mean(layer)
        seen["mean_weight"] = layer.weight.flatten().tolist()
        seen["mean_bias"] = layer.bias.flatten().tolist()
        with torch.no_grad():
            layer.weight.fill_(float(rank + 5))
        distributed.broadcast_module(layer)
        seen["broadcast_weight"] = layer.weight.flatten().tolist()
        distributed.check_rng_in_sync()
        seen["world_size"] = distributed.get_world_size()
    (out / f"rank{rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack (a hung collective)
    run()
