"""Hostile and broken inputs (issue 18, items 1, 3, 4, 6): a Stable-Baselines3 .zip that would run code when
unpickled, teachers with NaN/inf weights, an image folder whose class list changed under the cache, and a
truncated image. Each is refused with exit code 2 and a message naming the file, or handled as documented."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from socratic.cli import main
from socratic.engine.checkpoint import CheckpointError, load_weights, save_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "rl"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------ SB3 .zip teachers
def _space_env(shape: tuple[int, ...], actions: int, high: int) -> Any:
    """A gymnasium env with the given uint8 Box and Discrete spaces (enough to construct an SB3 model)."""
    import gymnasium as gym

    class SpaceEnv(gym.Env):
        def __init__(self) -> None:
            self.observation_space = gym.spaces.Box(0, high, shape, np.uint8)
            self.action_space = gym.spaces.Discrete(actions)

        def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
            return self.observation_space.sample(), {}

        def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
            return self.observation_space.sample(), 0.0, False, False, {}

    return SpaceEnv()


def _minatar_breakout() -> Any:
    from socratic.rl.envs import env_info

    return env_info("minatar", "Breakout")  # (4, 10, 10) in {0, 1}, 3 actions


def _atari_like() -> Any:
    from socratic.rl.envs import EnvInfo

    # what env_info gives for an Atari game; built by hand so the test needs no ALE ROMs
    return EnvInfo("atari", "Pong", "PongNoFrameskip-v4", (4, 84, 84), 6, 255.0, "nature")


def _qtrunk_kwargs() -> dict[str, Any]:
    from socratic.rl.dqn import policy_kwargs

    return policy_kwargs({"arch": "minatar", "convs": [8, 8, 8], "hidden": 32, "input_scale": 1.0})


def _save_sb3(path: Path, algo: str, policy: str, info: Any, policy_kwargs: dict[str, Any]) -> Path:
    """A freshly initialised SB3 DQN / QR-DQN for `info`'s spaces, saved as SB3 does."""
    if algo == "qrdqn":
        from sb3_contrib import QRDQN as Algorithm
    else:
        from stable_baselines3 import DQN as Algorithm
    env = _space_env(info.obs_shape, info.num_actions, 255 if info.input_scale == 255 else 1)
    Algorithm(policy, env, buffer_size=10, learning_starts=0, policy_kwargs=policy_kwargs, seed=0).save(path)
    return path


class _WritesMarker:
    """Pickles as a call of `exec` that writes `marker`: what a hostile .zip hides in its JSON."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


def _rewrite_zip(path: Path, change: Any) -> Path:
    """Rewrite the zip's `data` JSON with `change(data)` (in place), keeping every other entry."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    change(data)
    entries["data"] = json.dumps(data, indent=4).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return path


def _poison(path: Path, marker: Path) -> Path:
    import cloudpickle

    payload = base64.b64encode(cloudpickle.dumps(_WritesMarker(marker))).decode()

    def change(data: dict[str, Any]) -> None:
        data["train_freq"] = {":type:": "<class 'stable_baselines3.common.type_aliases.TrainFreq'>",
                              ":serialized:": payload}

    return _rewrite_zip(path, change)


def _no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any cloudpickle/pickle load of SB3's JSON fail the test."""
    import cloudpickle

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an SB3 zip was unpickled")

    monkeypatch.setattr(cloudpickle, "loads", refuse)


def _tiny_distill(runs: Path, teacher: Path) -> list[str]:
    return ["rl", "distill", str(CONFIGS / "minatar_breakout_pd.yaml"), f"output_dir={runs}",
            f"teacher.checkpoint={teacher}", "optim.epochs=1", "collect.states_per_epoch=200",
            "collect.buffer_size=400", "eval.episodes_per_epoch=1", "eval.final_episodes=1",
            "eval.teacher_episodes=0", "env.max_episode_steps=50", "env.num_envs=2", "env.eval_num_envs=1",
            "runtime.progress=false", "runtime.plot=false"]


def _tiny_evaluate(teacher: Path, *extra: str) -> list[str]:
    return ["rl", "evaluate", str(teacher), "--suite", "minatar", "--game", "Breakout", "--episodes", "1",
            "--num-envs", "1", "--max-episode-steps", "30", *extra]


def test_malicious_sb3_zip_runs_no_code_unless_trusted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "marker.txt"
    teacher = _poison(_save_sb3(tmp_path / "evil.zip", "dqn", "MlpPolicy", _minatar_breakout(), _qtrunk_kwargs()),
                      marker)
    # the payload is real: SB3's own JSON decoding runs it
    from stable_baselines3.common.save_util import json_to_data

    with zipfile.ZipFile(teacher) as archive:
        json_to_data(archive.read("data").decode())
    assert marker.read_text() == "code ran"
    marker.unlink()

    exit_code = main(_tiny_evaluate(teacher))
    assert not marker.exists()
    assert exit_code == 0 and json.loads(capsys.readouterr().out)["episodes"] == 1
    exit_code = main(_tiny_distill(tmp_path / "runs", teacher))
    assert not marker.exists()
    assert exit_code == 0 and (tmp_path / "runs" / "minatar_breakout_pd" / "seed0" / "summary.json").is_file()
    assert "unpickling" not in capsys.readouterr().err

    # only an explicit --trust-pickle takes SB3's unpickling loader, and it says so with the file's name
    main(_tiny_evaluate(teacher, "--trust-pickle"))
    assert marker.exists()
    assert f"unpickling {teacher}" in capsys.readouterr().err
    marker.unlink()
    main(_tiny_distill(tmp_path / "runs_trusted", teacher) + ["--trust-pickle"])
    assert marker.exists()
    assert f"unpickling {teacher}" in capsys.readouterr().err
    marker.unlink()
    main(_tiny_distill(tmp_path / "runs_key", teacher) + ["teacher.trust_pickle=true"])  # the config key
    assert marker.exists()


@pytest.mark.parametrize("algo, policy, env, kwargs", [
    ("dqn", "MlpPolicy", "minatar", {"net_arch": [16], "activation_fn": "Tanh"}),
    ("dqn", "MlpPolicy", "minatar", "qtrunk"),  # socratic rl train-teacher's policy
    ("dqn", "CnnPolicy", "atari", {"features_extractor_kwargs": {"features_dim": 32}}),
    ("qrdqn", "MlpPolicy", "minatar", {"n_quantiles": 5}),
    ("qrdqn", "CnnPolicy", "atari", {"n_quantiles": 3, "net_arch": [8]}),
])
def test_sb3_zip_loads_without_unpickling_with_sb3s_q_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             algo: str, policy: str, env: str, kwargs: Any) -> None:
    from socratic.rl.teachers import load_teacher

    info = _minatar_breakout() if env == "minatar" else _atari_like()
    if kwargs == "qtrunk":
        kwargs = _qtrunk_kwargs()
    elif "activation_fn" in kwargs:
        kwargs = {**kwargs, "activation_fn": getattr(torch.nn, kwargs["activation_fn"])}
    path = _save_sb3(tmp_path / f"{algo}.zip", algo, policy, info, kwargs)
    x = torch.randint(0, 256 if env == "atari" else 2, (8, *info.obs_shape), dtype=torch.uint8)
    with monkeypatch.context() as patch:
        _no_unpickling(patch)
        safe = load_teacher(path, info)
        q_safe = safe(x)
    q_sb3 = load_teacher(path, info, trust_pickle=True)(x)  # SB3's own DQN.load / QRDQN.load
    assert q_safe.shape == (8, info.num_actions) and q_safe.abs().sum() > 0
    torch.testing.assert_close(q_safe, q_sb3, rtol=0, atol=0)
    assert not any(p.requires_grad for p in safe.parameters())


def test_unreadable_sb3_zip_exits_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    info = _minatar_breakout()
    not_a_zip = tmp_path / "text.zip"
    not_a_zip.write_text("hello")
    assert main(_tiny_evaluate(not_a_zip)) == 2
    assert f"{not_a_zip} is not a readable zip file" in capsys.readouterr().err

    no_weights = _save_sb3(tmp_path / "no_weights.zip", "dqn", "MlpPolicy", info, {"net_arch": [8]})
    with zipfile.ZipFile(no_weights) as archive:
        data = archive.read("data")
    with zipfile.ZipFile(no_weights, "w") as archive:
        archive.writestr("data", data)
    assert main(_tiny_evaluate(no_weights, "--json", str(tmp_path / "out.json"))) == 2
    assert "no 'policy.pth' entry" in capsys.readouterr().err and not (tmp_path / "out.json").exists()

    def custom_extractor(data: dict[str, Any]) -> None:
        data["policy_kwargs"] = {":type:": "<class 'dict'>", ":serialized:": "",
                                 "features_extractor_class": "<class 'somewhere.Extractor'>"}

    custom = _rewrite_zip(_save_sb3(tmp_path / "custom.zip", "dqn", "MlpPolicy", info, {}), custom_extractor)
    assert main(_tiny_evaluate(custom)) == 2
    err = capsys.readouterr().err
    assert str(custom) in err and "somewhere.Extractor" in err and "--trust-pickle" in err
    assert "Nothing was unpickled" in err

    def wrong_arch(data: dict[str, Any]) -> None:
        data["policy_kwargs"] = {"net_arch": [32, 32]}

    mismatch = _rewrite_zip(_save_sb3(tmp_path / "arch.zip", "dqn", "MlpPolicy", info, {"net_arch": [8]}), wrong_arch)
    assert main(_tiny_evaluate(mismatch)) == 2
    assert "do not fit the network its JSON describes" in capsys.readouterr().err


def test_malformed_sb3_json_fields_are_checkpoint_errors(tmp_path: Path) -> None:
    """Whatever a file puts in the fields the safe reader uses, the answer is a CheckpointError (exit 2)."""
    from socratic.rl.teachers import load_teacher

    info = _minatar_breakout()
    base = _save_sb3(tmp_path / "base.zip", "dqn", "MlpPolicy", info, _qtrunk_kwargs())
    weird = ["x", 3, [1, "a"], {"net_arch": "[64]"}, {"net_arch": [True]}, {"activation_fn": "<class 'os.system'>"},
             {"features_extractor_class": 5}, {"features_extractor_kwargs": {"bogus": 1}}, {"_shape": ["a"]},
             {"n": "x"}, {"__module__": 5}, {"normalize_images": "yes"}, {"n_quantiles": 0}]
    for key in ("policy_kwargs", "observation_space", "action_space", "policy_class"):
        for value in weird:
            path = tmp_path / f"{key}.zip"
            path.write_bytes(base.read_bytes())
            _rewrite_zip(path, lambda data: data.__setitem__(key, value))
            try:
                load_teacher(path, info)
            except CheckpointError:
                pass


# ------------------------------------------------------------------------------------- NaN / inf teachers
def _poison_weights(state: dict[str, torch.Tensor], value: float) -> str:
    name = next(k for k, v in state.items() if v.is_floating_point() and v.ndim > 1)
    state[name] = state[name].clone()
    state[name].view(-1)[0] = value
    return name


def _classifier_checkpoint(path: Path, data_root: Path, value: float | None) -> tuple[Path, str]:
    from socratic.data import FASHION_MNIST_CLASSES
    from socratic.models import create_model

    torch.manual_seed(0)
    state = create_model("resnet8", num_classes=10, in_channels=1).state_dict()
    name = _poison_weights(state, value) if value is not None else ""
    meta = {"model_name": "resnet8", "model_kwargs": {}, "num_classes": 10, "in_channels": 1,
            "image_shape": [1, 28, 28], "dataset": "fashion_mnist", "data_root": str(data_root),
            "classes": list(FASHION_MNIST_CLASSES), "mean": [0.286], "std": [0.353]}
    save_checkpoint({"model": state, "meta": meta}, path)
    return path, name


def test_nan_teacher_is_refused_at_load(run_config: dict, tiny_fashion: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    from socratic.models import create_model

    nan, name = _classifier_checkpoint(tmp_path / "nan.pt", tiny_fashion, float("nan"))
    inf, _ = _classifier_checkpoint(tmp_path / "inf.pt", tiny_fashion, float("inf"))
    with pytest.raises(CheckpointError, match=f"teacher: checkpoint {inf} holds non-finite weights"):
        load_weights(create_model("resnet8", num_classes=10, in_channels=1), inf, role="teacher")
    load_weights(create_model("resnet8", num_classes=10, in_channels=1), inf, require_finite=False)  # opt-out

    config = {**run_config, "name": "kd", "method": {"name": "kd"},
              "teachers": [{"name": "resnet8", "checkpoint": str(nan)}]}
    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["distill", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(nan) in err and name in err and "non-finite weights" in err and "1 NaN" in err
    assert not (Path(run_config["output_dir"]) / "kd").exists()  # no run folder, no empty metrics.jsonl

    # `socratic evaluate` of that file is an error, not "top-1 10.0, loss NaN" with exit 0
    assert main(["evaluate", str(nan), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(nan) in err and name in err
    good, _ = _classifier_checkpoint(tmp_path / "good.pt", tiny_fashion, None)
    assert main(["evaluate", str(good), "--device", "cpu"]) == 0


def test_nan_rl_teacher_is_refused_at_load(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from socratic.rl.networks import QNetwork
    from socratic.rl.teachers import load_teacher, qnetwork_checkpoint

    info = _minatar_breakout()
    net = QNetwork(info.obs_shape, info.num_actions, "minatar", (8, 8, 8), 32, 1.0)
    checkpoint = qnetwork_checkpoint(net, info)
    name = _poison_weights(checkpoint["model"], float("nan"))
    save_checkpoint(checkpoint, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'nan.pt'} holds non-finite .* {name}"):
        load_teacher(tmp_path / "nan.pt", info)
    assert main(_tiny_distill(tmp_path / "runs", tmp_path / "nan.pt")) == 2
    assert "non-finite weights" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

    zip_path = _save_sb3(tmp_path / "nan.zip", "dqn", "MlpPolicy", info, _qtrunk_kwargs())
    with zipfile.ZipFile(zip_path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    state = torch.load(io.BytesIO(entries["policy.pth"]), weights_only=True)
    state["q_net.q_net.0.weight"][0, 0] = float("inf")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    entries["policy.pth"] = buffer.getvalue()
    with zipfile.ZipFile(zip_path, "w") as archive:
        for entry, content in entries.items():
            archive.writestr(entry, content)
    assert main(_tiny_evaluate(zip_path)) == 2
    err = capsys.readouterr().err
    assert str(zip_path) in err and "q_net.0.weight" in err and "1 inf" in err


# ------------------------------------------------------------------------------------------ image folders
def _image_folder(root: Path, counts: dict[str, dict[str, int]], fmt: str = "PNG") -> Path:
    """<root>/<split>/<class>/<i>.<ext>: 8x6 RGB noise images."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in counts.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.{fmt.lower()}", fmt)
    return root


def test_dataset_cache_follows_the_class_list(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from socratic.data import DataFormatError, load_dataset

    root = _image_folder(tmp_path / "imgs", {"train": {"cat": 3, "dog": 2}, "test": {"cat": 1, "dog": 1}})
    cache = tmp_path / "cache"
    assert load_dataset("imagefolder", root, "train", cache).num_classes == 2
    (root / "train" / "bird").mkdir()  # an empty class: no file changed, the class list did
    with pytest.raises(DataFormatError, match=f"empty class folder {root.resolve() / 'train' / 'bird'}"):
        load_dataset("imagefolder", root, "train", cache)
    with pytest.raises(DataFormatError, match="empty class folder"):  # the test split reads train's classes
        load_dataset("imagefolder", root, "test", cache)
    train = load_dataset("imagefolder", root, "train", cache, allow_empty_classes=True)
    assert train.classes == ["bird", "cat", "dog"] and train.class_counts().tolist() == [0, 3, 2]
    assert len(list(cache.glob("imagefolder-train-*.pt"))) == 2  # a new entry, not the stale 2-class one
    test = load_dataset("imagefolder", root, "test", cache, allow_empty_classes=True)
    assert test.num_classes == 3 and test.labels.tolist() == [1, 2]

    # a renamed file (same size and pixels) is a new listing, so a new entry
    (root / "train" / "bird").rmdir()
    (root / "train" / "dog" / "1.png").rename(root / "train" / "dog" / "9.png")
    load_dataset("imagefolder", root, "train", cache)
    assert len(list(cache.glob("imagefolder-train-*.pt"))) == 3

    (root / "train" / "bird").mkdir()
    assert main(["data", "imagefolder", "--root", str(root)]) == 2
    assert f"empty class folder {root.resolve() / 'train' / 'bird'}" in capsys.readouterr().err


def _truncate(path: Path) -> Path:
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path


def test_truncated_jpeg_exits_2_naming_it_or_is_skipped(run_config: dict, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    from socratic.data import DataFormatError, load_dataset

    root = _image_folder(tmp_path / "imgs", {"train": {"cat": 3, "dog": 3}, "test": {"cat": 2, "dog": 2}}, "JPEG")
    broken = _truncate(root / "train" / "dog" / "1.jpeg")
    assert main(["data", "imagefolder", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(broken.resolve()) in err and "cannot decode image" in err and "Traceback" not in err

    config = {**run_config, "data": {"name": "imagefolder", "root": str(root), "batch_size": 2,
                                     "cache_dir": str(tmp_path / "cache")}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 2  # was an uncaught DataFormatError (exit 1)
    assert str(broken.resolve()) in capsys.readouterr().err
    assert not Path(run_config["output_dir"]).exists()

    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image file\(s\) of 6 .* e\.g\. .*1\.jpeg"):
        train = load_dataset("imagefolder", root, "train", cache, skip_unreadable=True)
    assert len(train) == 5 and train.class_counts().tolist() == [3, 2]
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):  # from the cache: still said
        assert len(load_dataset("imagefolder", root, "train", cache, skip_unreadable=True)) == 5
    with pytest.raises(DataFormatError, match="1.jpeg"):  # the skipping entry never serves a strict call
        load_dataset("imagefolder", root, "train", cache)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):  # the training statistics
        test = load_dataset("imagefolder", root, "test", cache, skip_unreadable=True)
    assert len(test) == 4 and test.mean == train.mean


# ------------------------------------------------------------------------------------- dataset registry
def test_every_dataset_is_one_registered_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from socratic.data import ImageDataset, load_dataset, make_payload, normalization
    from socratic.registry import DATASETS, Entry

    assert DATASETS.names() == ["cifar10", "cifar100", "fashion_mnist", "imagefolder"]
    for entry in DATASETS.entries():
        assert entry.factory.__module__ == f"socratic.data.sources.{'cifar' if 'cifar' in entry.name else entry.name}"
        assert entry.meta["augment"]["name"] == "crop_flip" and entry.meta["augment"]["flip"] is True
    assert DATASETS.get("fashion_mnist").meta["augment"]["padding"] == 2
    assert DATASETS.get("cifar10").meta["augment"]["padding"] == 4
    assert normalization("cifar100") == (DATASETS.get("cifar100").meta["mean"], DATASETS.get("cifar100").meta["std"])

    def load_toy(root: Any, split: str, options: Any) -> dict[str, Any]:  # a new dataset: nothing but this
        images = np.full((4, 1, 2, 2), 7 if split == "train" else 9, dtype=np.uint8)
        return make_payload("toy", split, images, np.array([0, 1, 0, 1]), ["a", "b"], (0.5,), (0.25,))

    monkeypatch.setitem(DATASETS._entries, "toy", Entry("dataset", "toy", load_toy, None, {"mean": (0.5,), "std": (0.25,)}))
    toy = load_dataset("toy", split="val")
    assert isinstance(toy, ImageDataset) and toy.split == "test" and int(toy.images[0, 0, 0, 0]) == 9
    assert toy.num_classes == 2 and normalization("toy")[0] == (0.5,)
    assert main(["data", "cifar10", "--install"]) == 2  # --install comes from the dataset's metadata
