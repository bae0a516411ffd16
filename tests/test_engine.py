import pickle
import warnings
from pathlib import Path

import pytest
import torch

from socratic.config.schema import OptimConfig
from socratic.engine.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from socratic.engine.optim import lr_factor
from socratic.engine.runtime import autocast, rng_state, select_device, set_rng_state


def test_multistep_schedule_follows_mdistiller() -> None:
    cfg = OptimConfig(epochs=240, lr=0.05, milestones=[150, 180, 210])
    assert [lr_factor(e, cfg) for e in (1, 150, 151, 180, 181, 211, 240)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.001, 0.001])


def test_cosine_with_warmup() -> None:
    cfg = OptimConfig(epochs=10, lr=1.0, schedule="cosine", warmup_epochs=2)
    assert lr_factor(1, cfg) == pytest.approx(1 / 3)
    assert lr_factor(3, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) < 0.05
    factors = [lr_factor(e, cfg) for e in range(3, 11)]
    assert factors == sorted(factors, reverse=True)


def test_checkpoint_round_trip_and_atomic_write(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "rng": rng_state()}
    save_checkpoint(state, path)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0)) and loaded["epoch"] == 2


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)
    assert "this must never run" not in capsys.readouterr().out
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)


def test_load_weights_explains_mismatch(tmp_path: Path) -> None:
    source = torch.nn.Linear(4, 10)
    save_checkpoint({"model": source.state_dict(), "meta": {"model_name": "lin", "num_classes": 10}},
                    tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"teacher: checkpoint .*made for lin with 10 classes.*shape mismatch: weight"):
        load_weights(torch.nn.Linear(4, 100), tmp_path / "m.pt", role="teacher")
    target = torch.nn.Linear(4, 10)
    load_weights(target, tmp_path / "m.pt")
    assert torch.equal(target.weight, source.weight)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_weights(target, tmp_path / "none.pt")


def test_rng_state_restores_every_generator() -> None:
    import random

    import numpy as np

    state = rng_state()
    first = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(state)
    second = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]


def test_device_and_precision_errors() -> None:
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="not a device"):
        select_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            select_device("cuda")
        with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
            autocast(torch.device("cpu"), "fp16")
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16


def test_bf16_on_a_cpu_without_native_bf16_warns_and_auto_picks_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    from socratic.engine import runtime

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="runtime.precision: auto picks fp32 here"), autocast(torch.device("cpu"), "bf16"):
        pass
    assert runtime.resolve_precision(torch.device("cpu"), "auto") == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with autocast(torch.device("cpu"), "auto"):
            assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    assert runtime.resolve_precision(torch.device("cpu"), "auto") == "bf16"
    assert runtime.resolve_precision(torch.device("cpu"), "fp16") == "fp16"  # explicit values are kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with autocast(torch.device("cpu"), "bf16"):
            pass


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from socratic.engine import runtime

    for flags, expected in (("fpu avx2 avx512f", False), ("fpu avx512f avx512_bf16", True), ("amx_bf16 amx_tile", True)):
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"processor : 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(runtime, "Path", lambda _: cpuinfo)
        runtime.cpu_has_native_bf16.cache_clear()
        assert runtime.cpu_has_native_bf16() is expected
    runtime.cpu_has_native_bf16.cache_clear()
