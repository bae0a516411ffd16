"""torchrun on CPU (gloo, 2 processes): parity with one process, resume, DA coin flips, the teacher cache, rank
helpers.

One torchrun launch (tests/dist_worker.py) does every distributed run; the single-process reference runs
here. TensorLoader gives rank r the r-th contiguous half of each epoch's permutation, so the 1-process
reference trains on the union of the two ranks' step-t batches (MergedShards) with the same crops/flips: a
2 x 20 DDP step must then equal a 1 x 40 step, up to float summation order. The model has no BatchNorm
(with BatchNorm each rank normalises its own half; SyncBatchNorm needs CUDA).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _dist_support import FLAT_MODEL, FlatCNN, MergedShards, flat_model_registered
from socratic.config import ConfigError, config_from_dict
from socratic.engine import distributed
from socratic.engine.evaluate import accuracy_from_counts, evaluate_counts
from socratic.engine.logger import read_metrics

WORKER = Path(__file__).resolve().parent / "dist_worker.py"
# Measured on CPU: max |w_2proc - w_1proc| 1.2-1.5e-7 after 30 SGD steps (float32 summation order only).
WEIGHT_TOLERANCE = 1e-5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _parity_config(root: Path, out: Path) -> dict:
    return {
        "name": "parity", "seed": 3, "output_dir": str(out / "runs"),
        "data": {"name": "fashion_mnist", "root": str(root), "batch_size": 20, "eval_batch_size": 50,
                 "cache_dir": str(out / "cache")},
        "student": {"name": FLAT_MODEL}, "method": {"name": "ce"},
        "optim": {"epochs": 3, "lr": 0.1, "schedule": "cosine"},
        "runtime": {"device": "cpu", "progress": False, "deterministic": True, "tensorboard": False},
    }


@pytest.fixture(scope="module")
def torchrun_out(tiny_fashion: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torchrun")
    teacher = out / "teacher.pt"
    torch.manual_seed(1)
    torch.save(FlatCNN(10, 1).state_dict(), teacher)
    parity = _parity_config(tiny_fashion, out)
    da = {**parity, "name": "da", "student": {"name": "resnet8"}, "method": {"name": "kd"},
          "teachers": [{"name": FLAT_MODEL, "checkpoint": str(teacher)}],
          "data": {**parity["data"], "batch_size": 10, "train_subset": 200},
          "optim": {**parity["optim"], "epochs": 1},
          "da": {"enabled": True, "prob": 0.5, "steps": 1}}
    spec = out / "spec.json"
    kd_cache = {key: value for key, value in da.items() if key != "da"}
    kd_cache["optim"] = {**da["optim"], "epochs": 2}
    spec.write_text(json.dumps({"out": str(out), "parity": parity, "da": da, "kd_cache": kd_cache}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(WORKER), str(spec)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # a hang: SIGTERM makes torchrun stop its workers (they are not its group)
        proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun timed out:\n{stdout[-3000:]}\n{stderr[-5000:]}")
    assert proc.returncode == 0, f"torchrun failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return out


def _ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def test_two_processes_match_one_process_with_the_same_global_batch(torchrun_out: Path, tiny_fashion: Path,
                                                                     tmp_path: Path) -> None:
    from socratic.engine.runtime import seed_everything
    from socratic.engine.trainer import Trainer
    from socratic.experiment import build_distiller, checkpoint_meta, load_datasets, make_loaders

    values = _parity_config(tiny_fashion, torchrun_out)
    values["output_dir"] = str(tmp_path / "runs")
    with flat_model_registered():
        cfg = config_from_dict({**values, "name": "single"})
        seed_everything(cfg.seed, cfg.runtime.deterministic)  # as run_experiment: seed, data, then the model
        datasets = load_datasets(cfg)
        distiller = build_distiller(cfg, datasets.train.num_classes, datasets.train.image_shape[0])
    cpu = torch.device("cpu")
    shards = [make_loaders(cfg, datasets, cpu, rank=r, world_size=2)[0] for r in range(2)]
    _, test_loader = make_loaders(cfg, datasets, cpu)
    run_dir = tmp_path / "runs" / "single" / "seed3"
    run_dir.mkdir(parents=True)
    single = Trainer(distiller, MergedShards(shards), test_loader, cfg, run_dir, cpu,
                     meta=checkpoint_meta(cfg, datasets.train, cpu)).fit()

    two_dir = torchrun_out / "runs" / "parity" / "seed3"
    a, b = _weights(run_dir), _weights(two_dir)
    max_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    one, two = read_metrics(run_dir / "metrics.jsonl"), read_metrics(two_dir / "metrics.jsonl")
    loss_diff = max(abs(m1["train_loss"] - m2["train_loss"]) for m1, m2 in zip(one, two))
    print(f"parity: max |w_1proc - w_2proc| = {max_diff:.3g}, max train-loss diff {loss_diff:.3g}, val top-1 "
          f"{[m['val_top1'] for m in one]} (1 proc) vs {[m['val_top1'] for m in two]} (2 procs)")
    assert max_diff < WEIGHT_TOLERANCE
    assert [m["epoch"] for m in two] == [1, 2, 3]  # rank 0 alone wrote the metrics
    for m1, m2 in zip(one, two):
        assert m2["train_loss"] == pytest.approx(m1["train_loss"], abs=1e-5)
        assert m2["train_top1"] == pytest.approx(m1["train_top1"], abs=1e-9)  # counts over both ranks
        assert m2["val_top1"] == pytest.approx(m1["val_top1"], abs=1e-9)  # sharded evaluation, summed counts
        assert m2["val_loss"] == pytest.approx(m1["val_loss"], abs=1e-5)
    summary = json.loads((two_dir / "summary.json").read_text())
    assert summary["best_top1"] == pytest.approx(single["best_top1"], abs=1e-9)
    assert not list(two_dir.glob("**/*.tmp")) and (two_dir / "checkpoints" / "best.pt").exists()


def test_resume_under_torchrun_reaches_the_uninterrupted_result(torchrun_out: Path) -> None:
    full = torchrun_out / "runs" / "parity" / "seed3"
    resumed = torchrun_out / "runs" / "interrupted" / "seed3"
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["train_loss"] for m in read_metrics(full / "metrics.jsonl")] == \
           [m["train_loss"] for m in read_metrics(resumed / "metrics.jsonl")]
    ranks = _ranks(torchrun_out)
    assert ranks[0]["resumed"] == ranks[1]["resumed"]  # every rank returns rank 0's summary


def test_the_teacher_cache_under_torchrun_replays_each_rank_exactly(torchrun_out: Path) -> None:
    runs = torchrun_out / "runs"
    live, record, replay = (_weights(runs / name / "seed3") for name in ("kd_live", "kd_record", "kd_replay"))
    assert all(torch.equal(live[k], record[k]) and torch.equal(live[k], replay[k]) for k in live)
    assert [m["teacher_cache_replayed"] for m in read_metrics(runs / "kd_record" / "seed3" / "metrics.jsonl")] == [0, 0]
    assert [m["teacher_cache_replayed"] for m in read_metrics(runs / "kd_replay" / "seed3" / "metrics.jsonl")] == [1, 1]
    assert len([p for p in (torchrun_out / "teacher_cache").iterdir() if p.is_dir()]) == 2  # one entry per rank


def test_disagreement_augmentation_coin_flips_agree_across_ranks(torchrun_out: Path) -> None:
    rank0, rank1 = _ranks(torchrun_out)
    assert len(rank0["flips"]) == 10  # 200 images / 2 ranks / batch 10
    assert rank0["flips"] == rank1["flips"]
    assert any(rank0["flips"]) and not all(rank0["flips"])  # prob 0.5: both outcomes happen
    assert rank0["weights"] == rank1["weights"]  # DA's input gradients never desynchronise the student
    assert rank0["da_summary"] == rank1["da_summary"]
    metrics = read_metrics(torchrun_out / "runs" / "da" / "seed3" / "metrics.jsonl")
    assert metrics[0]["da_perturbed"] == pytest.approx(sum(rank0["flips"]) / 10)


def test_rank_helpers_for_modules_updated_outside_the_optimizer(torchrun_out: Path) -> None:
    for seen in _ranks(torchrun_out):
        assert seen["world_size"] == 2
        assert seen["mean_weight"] == [1.5] * 6 and seen["mean_bias"] == [5.0] * 2  # (1 + 2) / 2, (0 + 10) / 2
        assert seen["broadcast_weight"] == [5.0] * 6  # rank 0's
        assert seen["sync_bn_error"].startswith("runtime.sync_bn needs CUDA")


def test_single_process_helpers_and_sharded_counts(tiny_fashion: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.env_info() == distributed.DistInfo(0, 1, 0) and not distributed.info().enabled
    layer = torch.nn.Linear(2, 2)
    before = distributed.module_fingerprint(layer)
    assert distributed.module_fingerprint(distributed.all_reduce_mean(layer)) == before  # no-op alone
    assert distributed.run_on_main(lambda: 7) == 7
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="inconsistent torchrun environment"):
        distributed.env_info()
    with pytest.raises(ValueError, match="cannot be used under torchrun"):
        distributed.device_for_rank("cuda:1", 0)
    # Shards of 7 samples over 3 ranks: 3, 3, 1 real ones (TensorLoader pads rank 2 with 2 wrapped samples).
    assert [distributed.shard_valid_count(7, r, 3) for r in range(3)] == [3, 3, 1]
    from socratic.data import TensorLoader, load_dataset

    test = load_dataset("fashion_mnist", root=str(tiny_fashion), split="test", cache_dir=str(tmp_path))
    model = FlatCNN(10, 1).eval()
    whole = evaluate_counts(model, TensorLoader(test, 64), torch.device("cpu"))
    parts = [evaluate_counts(model, TensorLoader(test, 64, rank=r, world_size=3), torch.device("cpu"),
                             max_samples=distributed.shard_valid_count(len(test), r, 3)) for r in range(3)]
    summed = {k: sum(p[k] for p in parts) for k in whole}
    assert summed["total"] == len(test) == 200  # 67 + 67 + 66, the 1 padded sample left out
    assert accuracy_from_counts(summed)["top1"] == pytest.approx(accuracy_from_counts(whole)["top1"])
    assert accuracy_from_counts(summed)["loss"] == pytest.approx(accuracy_from_counts(whole)["loss"], rel=1e-5)


def test_sync_bn_on_cpu_is_a_config_error_only_under_torchrun(run_config: dict) -> None:
    config_from_dict({**run_config, "runtime": {**run_config["runtime"], "sync_bn": True}})  # valid: no-op alone
    with pytest.raises(ConfigError, match="sync_bn: expected true or false"):
        config_from_dict({**run_config, "runtime": {**run_config["runtime"], "sync_bn": "yes"}})
