"""The teacher-output cache: replayed runs are bit-identical to live ones, keys miss when an input changes, partial
entries are never read, concurrent runs share entries, DA batches run live, resume works, `socratic cache`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from socratic.cli import main
from socratic.config import ConfigError, config_from_dict
from socratic.context import TrainContext
from socratic.distillers import create_distiller
from socratic.distillers.at import AT
from socratic.distillers.base import Distiller, TeacherReplay, compute_teacher_outputs
from socratic.engine.teacher_cache import (TeacherCache, decode, encode, list_cache, read_entry,
                                           stream_description, teacher_description)
from socratic.experiment import run_dir_for, run_experiment
from socratic.models import create_model

ROOT = Path(__file__).resolve().parents[1]
TIMES = ("train_time", "train_img_per_s", "peak_memory_mb", "teacher_cache_replayed")


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two untrained 1-channel teachers saved as checkpoints (outputs need not be good, only fixed)."""
    root = tmp_path_factory.mktemp("teachers")
    paths = []
    for i, name in enumerate(("resnet8", "wrn_16_1")):
        torch.manual_seed(10 + i)
        model = create_model(name, num_classes=10, in_channels=1)
        path = root / f"{name}.pt"
        torch.save({"model": model.state_dict(), "meta": {"model_name": name, "num_classes": 10}}, path)
        paths.append(str(path))
    return paths


def _config(run_config: dict, teacher_files: list[str], tmp_path: Path, method: str = "kd", *, cache: bool = True,
            teachers: int = 1, **changes: object) -> dict:
    config = {**run_config, "method": {"name": method}, "optim": {**run_config["optim"], "epochs": 1},
              "data": {**run_config["data"], "train_subset": 200},
              "teachers": [{"name": n, "checkpoint": c} for n, c in zip(("resnet8", "wrn_16_1"), teacher_files)][
                  :teachers],
              "runtime": {**run_config["runtime"], "num_threads": 1, "eval_every": 1},
              "teacher_cache": {"enabled": cache, "dir": str(tmp_path / "tcache")}}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        config[section] = {**config.get(section, {}), field: value} if field else value
    return config


def _run(config: dict, name: str, **kwargs: object) -> tuple[dict, list[dict], dict]:
    cfg = config_from_dict({**config, "name": name})
    run_experiment(cfg, **kwargs)
    folder = run_dir_for(cfg)
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return torch.load(folder / "checkpoints" / "last.pt", weights_only=True), metrics, cfg


def _same_training(a: tuple, b: tuple) -> None:
    (state_a, metrics_a, _), (state_b, metrics_b, _) = a, b
    for key in ("model", "extra", "optimizer"):
        assert _flat(state_a[key]) == _flat(state_b[key]), key
    for row_a, row_b in zip(metrics_a, metrics_b, strict=True):
        numbers = {k: v for k, v in row_a.items() if k not in TIMES}
        assert numbers == {k: v for k, v in row_b.items() if k in numbers}


def _flat(tree: object, prefix: str = "") -> dict[str, object]:
    """A nested state as {path: bytes or value}, so tensors compare bit for bit."""
    if isinstance(tree, dict):
        out: dict[str, object] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}.{k}"))
        return out
    if isinstance(tree, (list, tuple)):
        return _flat(dict(enumerate(tree)), prefix)
    if isinstance(tree, torch.Tensor):
        return {prefix: (tree.dtype, tuple(tree.shape), tree.detach().contiguous().view(-1).view(torch.uint8)
                         .numpy().tobytes() if tree.numel() else b"")}
    return {prefix: tree}


def _recorded_cache(root: Path, teacher_file: str, epoch: int = 1, batches: int = 3) -> TeacherCache:
    """A cache with one epoch of random logits recorded through a session, as the trainer records them."""
    stream = stream_description(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.arange(2), [0.5], [0.5],
                                {"name": "none"}, seed=0, batch_size=4, shuffle=True, drop_last=False, rank=0,
                                world_size=1, channels_last=False)
    cache = TeacherCache(root, stream, {"precision": "fp32"}, [teacher_description("resnet8", {}, teacher_file)],
                         [("logits",)])
    session = cache.open_epoch(epoch, batches, torch.device("cpu"))
    for step in range(batches):
        x, y = torch.randn(4, 1, 2, 2), torch.arange(4)
        replay = session.begin(x, y)
        replay.store(0, {"logits": torch.randn(4, 10)})
        session.end(replay, y)
    session.close(complete=True)
    return cache


def _replayed(metrics: list[dict]) -> list[float]:
    return [m["teacher_cache_replayed"] for m in metrics]


# ------------------------------------------------------------------------------- every method, one step
@pytest.mark.parametrize("method,teachers,options", [
    ("kd", 1, {}), ("dkd", 1, {}), ("dist", 1, {}), ("ctkd", 1, {}), ("fitnet", 1, {"hint_layer": -1}),
    ("at", 1, {}), ("sp", 1, {}), ("pkt", 1, {}), ("rkd", 1, {}), ("vid", 1, {}),
    ("crd", 1, {"num_negatives": 4, "kd_weight": 1.0}), ("ofd", 1, {}), ("reviewkd", 1, {}),
    ("reviewkd", 1, {"teacher_preact": False, "embedding": False}),
    ("aver", 2, {}), ("ebkd", 2, {"feature_loss": False}),
])
def test_replayed_outputs_give_the_live_losses(method: str, teachers: int, options: dict, one_torch_thread) -> None:
    torch.manual_seed(0)
    pool = [create_model(n, num_classes=10, in_channels=1).eval() for n in ("resnet8", "wrn_16_1")][:teachers]
    distiller = create_distiller(method, create_model("resnet8", num_classes=10, in_channels=1), pool, **options)
    distiller.train()
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 10
    if method == "crd":  # its memory bank and negatives: 8 samples of a 16-sample training set
        distiller.bind_train_set(torch.arange(16) % 10)
    ctx = TrainContext(epoch=3, step=0, epochs=5, steps_per_epoch=1, indices=torch.arange(8))
    fields = distiller.teacher_cache_fields()
    recorded = {i: compute_teacher_outputs(t, x, f) for i, (t, f) in enumerate(zip(pool, fields))}
    for teacher in pool:  # logits recorded with a feature map are the logits of a plain forward, bit for bit
        both = compute_teacher_outputs(teacher, x, ("stage1", "logits"))["logits"]
        assert _flat(both) == _flat(compute_teacher_outputs(teacher, x, ("logits",))["logits"])
    state = {k: v.clone() for k, v in distiller.state_dict().items()}
    torch.manual_seed(1)  # the same negatives (CRD) both times
    _, live = distiller.forward_train(x, y, ctx)
    distiller.load_state_dict(state)
    torch.manual_seed(1)
    calls = []
    for teacher in pool:  # the stem runs whenever the teacher does (forward or forward_features)
        stem = next(m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d))
        stem.register_forward_pre_hook(lambda module, args: calls.append(module))
    replay = TeacherReplay(x, {i: {f: v.clone() for f, v in r.items()} for i, r in recorded.items()})
    with distiller.replaying(replay):
        _, cached = distiller.forward_train(x, y, ctx)
    assert calls == [] and len(replay.served) == teachers
    assert {k: v.item() for k, v in cached.items()} == {k: v.item() for k, v in live.items()}
    # another tensor (a perturbed batch) is never served, even with the same values
    replay = TeacherReplay(x.clone(), recorded)
    with distiller.replaying(replay):
        distiller.forward_train(x, y, ctx)
    assert not replay.served and len(calls) >= teachers


def test_a_method_that_reads_its_teachers_otherwise_refuses_the_cache(run_config, teacher_files, tmp_path,
                                                                    monkeypatch) -> None:
    # every shipped method with a teacher declares its fields; a user's method that does not is refused
    monkeypatch.setattr(AT, "teacher_cache_fields", Distiller.teacher_cache_fields)
    with pytest.raises(ConfigError, match=r"teacher_cache.enabled: method.name 'at' .* the methods that use it: .*kd"):
        run_experiment(config_from_dict({**_config(run_config, teacher_files, tmp_path, "at"), "name": "at"}))
    with pytest.raises(ConfigError, match=r"teacher_cache.topk=10 keeps every logit of a 10-class dataset"):
        run_experiment(config_from_dict({**_config(run_config, teacher_files, tmp_path, teacher_cache__topk=10),
                                         "name": "k"}))
    with pytest.raises(ConfigError, match=r"teacher_cache.topk must be null .* got 0"):
        config_from_dict(_config(run_config, teacher_files, tmp_path, teacher_cache__topk=0))
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------- whole runs
# aver: logits, embeddings and maps of two teachers; reviewkd: pre-ReLU maps and the embedding
@pytest.mark.parametrize("method,teachers", [("kd", 1), ("aver", 2), ("reviewkd", 1)])
def test_cached_training_is_bit_identical_to_live(method, teachers, run_config, teacher_files, tmp_path,
                                                  one_torch_thread) -> None:
    common = dict(method=method, teachers=teachers, runtime__channels_last=True)  # maps keep their memory format
    live = _run(_config(run_config, teacher_files, tmp_path, cache=False, **common), "live")
    recording = _run(_config(run_config, teacher_files, tmp_path, **common), "recording")
    replaying = _run(_config(run_config, teacher_files, tmp_path, **common), "replaying")
    assert _replayed(recording[1]) == [0.0] and _replayed(replaying[1]) == [1.0]
    _same_training(live, recording)
    _same_training(live, replaying)


def test_topk_trains_on_the_same_numbers_recording_or_replaying(run_config, teacher_files, tmp_path,
                                                                one_torch_thread) -> None:
    topk = _config(run_config, teacher_files, tmp_path, teacher_cache__topk=3)
    recording, replaying = _run(topk, "recording"), _run(topk, "replaying")
    assert _replayed(recording[1]) == [0.0] and _replayed(replaying[1]) == [1.0]
    _same_training(recording, replaying)
    exact = _run(_config(run_config, teacher_files, tmp_path), "exact")  # the live logits: other numbers
    assert exact[1][0]["train_kd"] != recording[1][0]["train_kd"]


def test_a_changed_input_misses(run_config, teacher_files, tmp_path, one_torch_thread) -> None:
    base = _config(run_config, teacher_files, tmp_path)
    # FitNet records its hint map and the logits; KD on the same stream replays those logits
    assert _replayed(_run({**base, "method": {"name": "fitnet", "hint_layer": 1}}, "fitnet")[1]) == [0.0]
    assert _replayed(_run(base, "first")[1]) == [1.0]
    assert _replayed(_run({**base, "seed": 1}, "seed")[1]) == [0.0]
    state = torch.load(teacher_files[0], weights_only=True)
    state["model"]["fc.bias"] += 1.0  # other weights (the file name would not tell)
    other = tmp_path / "edited.pt"
    torch.save(state, other)
    edited = {**base, "teachers": [{"name": "resnet8", "checkpoint": str(other)}]}
    assert _replayed(_run(edited, "teacher")[1]) == [0.0]
    # epoch 2 of a longer run: epoch 1 is replayed, epoch 2 is new
    longer = {**base, "optim": {**base["optim"], "epochs": 2}}
    assert _replayed(_run(longer, "longer")[1]) == [1.0, 0.0]


def test_key_parts(teacher_files, tmp_path) -> None:
    images, labels = torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4)
    args = dict(seed=0, batch_size=2, shuffle=True, drop_last=False, rank=0, world_size=1, channels_last=False)
    stream = stream_description(images, labels, [0.5], [0.5], {"name": "crop_flip"}, **args)
    teacher = teacher_description("resnet8", {}, teacher_files[0])

    def key(**changes):
        return TeacherCache(tmp_path, {**stream, **changes}, {"precision": "fp32"}, [teacher], [("logits",)]).keys[0]

    keys = {key(), key(seed=1), key(batch_size=3), key(augment={"name": "none"}), key(rank=1),
            key(channels_last=True),
            key(data=stream_description(images + 1, labels, [0.5], [0.5], {"name": "crop_flip"}, **args)["data"])}
    assert len(keys) == 7
    cache = TeacherCache(tmp_path, stream, {"precision": "fp32"}, [teacher], [("logits",)])
    assert cache.entry_path(0, 1, "logits") != cache.entry_path(0, 2, "logits")
    assert TeacherCache(tmp_path, stream, {"precision": "bf16"}, [teacher], [("logits",)]).keys != cache.keys
    topk = TeacherCache(tmp_path, stream, {"precision": "fp32"}, [teacher], [("logits",)], topk=3)
    assert topk.entry_path(0, 1, "logits") != cache.entry_path(0, 1, "logits")
    renamed = {**teacher, "checkpoint": "elsewhere.pt"}  # a copied file with the same content shares the key
    assert TeacherCache(tmp_path, stream, {"precision": "fp32"}, [renamed], [("logits",)]).keys == cache.keys


def test_topk_keeps_the_largest_logits_and_the_mean_of_the_rest() -> None:
    logits = torch.tensor([[5.0, 1.0, 3.0, -1.0, 0.0], [0.0, 2.0, -2.0, 4.0, 1.0]])
    arrays = encode("logits", logits, 2)
    assert arrays["indices"].dtype == torch.int16 and arrays["values"].shape == (2, 2)
    out = decode("logits", arrays, {"classes": 5}, torch.device("cpu"))
    assert torch.equal(out, torch.tensor([[5.0, 0.0, 3.0, 0.0, 0.0], [-1 / 3, 2.0, -1 / 3, 4.0, -1 / 3]]))
    assert torch.allclose(out.sum(1), logits.sum(1))
    assert decode("logits", encode("logits", logits, None), {}, torch.device("cpu")).equal(logits)


# -------------------------------------------------------------------------------------- partial entries
def test_a_partial_entry_is_never_read(run_config, teacher_files, tmp_path, one_torch_thread) -> None:
    cache = _recorded_cache(tmp_path / "tcache", teacher_files[0])
    entry = cache.entry_path(0, 1, "logits")
    meta, arrays = read_entry(entry)
    assert meta["batches"] == 3 and arrays["data"].shape == (12, 10)
    session = cache.open_epoch(1, 3, torch.device("cpu"))
    assert session.replay and not session.writers
    # a truncated array file (a crash during a copy, a full disk) is not read, and the epoch is recorded again
    data = entry / "data.bin"
    data.write_bytes(data.read_bytes()[:-4])
    assert read_entry(entry) is None
    session = cache.open_epoch(1, 3, torch.device("cpu"))
    assert not session.replay and list(session.writers[0]) == ["logits"]
    session.close(complete=False)
    # a folder without its meta.json (what a killed writer leaves, under a hidden name) is not read either
    (entry / "meta.json").unlink()
    assert read_entry(entry) is None
    # a run stopped mid-epoch publishes nothing and leaves no temporary folder
    base = _config(run_config, teacher_files, tmp_path)
    class Stop(Exception):
        pass

    def stop(epoch: int, step: int) -> None:
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        _run(base, "stopped", callbacks=[stop])
    keys = [p for p in (tmp_path / "tcache").iterdir() if p != cache.folder(0)]
    assert len(keys) == 1 and [p.name for p in keys[0].iterdir()] == ["key.json"]  # nothing published or left


# ------------------------------------------------------------------------------------ two processes
WORKER = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from socratic.config import config_from_dict
    from socratic.experiment import run_experiment, run_dir_for
    config = config_from_dict(json.loads(sys.argv[1]))
    run_experiment(config)
    print(run_dir_for(config))
""")


def test_two_processes_share_one_cache(run_config, teacher_files, tmp_path, monkeypatch) -> None:
    base = _config(run_config, teacher_files, tmp_path)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "SOCRATIC_CACHE": str(tmp_path / "dcache"),
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps({**base, "name": f"p{i}"})], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    folders = [Path(o[0].strip().splitlines()[-1]) for o in outs]
    states = [torch.load(f / "checkpoints" / "last.pt", weights_only=True) for f in folders]
    assert _flat(states[0]["model"]) == _flat(states[1]["model"])
    (key,) = list((tmp_path / "tcache").iterdir())
    names = sorted(p.name for p in key.iterdir())
    assert names == ["e1.batches", "e1.logits", "key.json"]  # both published the same entry, no temporary left
    third = _run(base, "third")
    assert _replayed(third[1]) == [1.0]
    assert _flat(third[0]["model"]) == _flat(states[0]["model"])


# --------------------------------------------------------------------------------------- DA and resume
def test_da_batches_run_the_teacher_live(run_config, teacher_files, tmp_path, one_torch_thread) -> None:
    da = {"enabled": True, "prob": 0.5}
    small = {**run_config["data"], "train_subset": 200, "batch_size": 25}  # 8 batches, some perturbed
    live = _run(_config(run_config, teacher_files, tmp_path, cache=False, da=da, data=small), "live")
    recording = _run(_config(run_config, teacher_files, tmp_path, da=da, data=small), "recording")  # clean ones too
    replaying = _run(_config(run_config, teacher_files, tmp_path, da=da, data=small), "replaying")
    perturbed = replaying[1][0]["da_perturbed"]
    assert 0 < perturbed < 1
    assert _replayed(recording[1]) == [0.0] and _replayed(replaying[1]) == [pytest.approx(1 - perturbed)]
    _same_training(live, recording)
    _same_training(live, replaying)


def test_resume_with_a_cache(run_config, teacher_files, tmp_path, stopped_and_resumed, one_torch_thread) -> None:
    config = _config(run_config, teacher_files, tmp_path, optim__epochs=2)
    full, cut = stopped_and_resumed(config, epoch=2, step=2)  # "full" records both epochs, "cut" replays them
    states = [torch.load(f / "checkpoints" / "last.pt", weights_only=True) for f in (full, cut)]
    assert _flat(states[0]) == _flat(states[1])
    metrics = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    assert _replayed(metrics) == [1.0, 1.0]
    # top-k logits change the numbers: a resume that turns them on is refused like any numerics change

    class Stop(Exception):
        pass

    def stop(epoch: int, step: int) -> None:
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        _run(config, "stopped", callbacks=[stop])
    topk = {**config, "name": "stopped", "teacher_cache": {**config["teacher_cache"], "topk": 3}}
    with pytest.raises(ConfigError, match=r"teacher outputs \(resolved\): 'exact' -> 'top-3 logits'"):
        run_experiment(config_from_dict(topk), resume=True)


# -------------------------------------------------------------------------------------------------- CLI
def test_cache_list_and_clear(teacher_files, tmp_path, capsys) -> None:
    directory = tmp_path / "tcache"
    cache = _recorded_cache(directory, teacher_files[0], epoch=2)
    (cache.folder(0) / ".tmp-e3.logits-123-abc").mkdir()  # a killed writer's folder
    (row,) = list_cache(directory)
    assert (row["epochs"], row["fields"], row["partial"], row["teacher"]) == ([2], ["logits"], 1, "resnet8")
    assert main(["cache", "list", "--dir", str(directory)]) == 0
    out = capsys.readouterr().out
    assert cache.keys[0] in out and "resnet8" in out and "logits" in out and "1 partial" in out
    assert main(["cache", "clear", "--partial", "--dir", str(directory)]) == 0
    assert list_cache(directory)[0]["partial"] == 0 and read_entry(cache.entry_path(0, 2, "logits")) is not None
    (directory / "unrelated").mkdir()  # not ours: never removed
    assert main(["cache", "clear", "--dir", str(directory)]) == 0
    assert list_cache(directory) == [] and (directory / "unrelated").is_dir()
    assert main(["cache", "list", "--dir", str(directory)]) == 0
    assert "no teacher outputs cached" in capsys.readouterr().out
