"""Teachers from the SB3 ecosystem, continuous-action PD and PD + DA, PPO/SAC/TD3 teacher training, honest selection.

Every SB3 teacher here is trained in the test for a few hundred steps (tiny networks): what is checked is that
socratic's teacher computes exactly what SB3's own model computes on the observations it was trained on.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("stable_baselines3")
gym = pytest.importorskip("gymnasium")

from socratic.cli import main  # noqa: E402
from socratic.config import ConfigError  # noqa: E402
from socratic.engine.checkpoint import CheckpointError  # noqa: E402
from socratic.engine.logger import read_metrics  # noqa: E402
from socratic.rl.config import DistillConfig, RLEvalConfig, TrainTeacherConfig, load_rl_config  # noqa: E402
from socratic.rl.continuous import gaussian_kl_per_sample  # noqa: E402
from socratic.rl.envs import env_info  # noqa: E402
from socratic.rl.teachers import load_teacher  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
def small() -> dict:
    """Tiny networks (a fresh dict: SB3 adds keys to the one it is given)."""
    return {"net_arch": [16, 16]}


def _pendulum_obs(count: int = 6, seed: int = 0) -> np.ndarray:
    env = gym.make("Pendulum-v1")
    obs = [env.reset(seed=seed + i)[0] for i in range(count)]
    return np.stack(obs).astype(np.float32)


# ------------------------------------------------------------------------------------ loading SB3 teachers
@pytest.mark.parametrize("algo", ["PPO", "A2C", "SAC", "TD3", "DDPG"])
def test_every_continuous_sb3_algorithm_loads_without_unpickling_and_acts_as_sb3(algo: str, tmp_path: Path) -> None:
    import stable_baselines3

    cls = getattr(stable_baselines3, algo)
    extra = {"PPO": {"n_steps": 64, "n_epochs": 2, "batch_size": 32}, "A2C": {"n_steps": 8}}.get(
        algo, {"learning_starts": 50, "batch_size": 16})
    model = cls("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu", policy_kwargs=small(), **extra)
    model.learn(128)
    path = tmp_path / f"{algo.lower()}.zip"
    model.save(path)
    info = env_info("classic_control", "Pendulum")
    obs = _pendulum_obs()
    expected, _ = model.predict(obs, deterministic=True)
    for trust in (False, True):
        teacher = load_teacher(path, info, trust_pickle=trust)
        np.testing.assert_allclose(teacher.act(torch.from_numpy(obs)).numpy(), expected, rtol=1e-5, atol=1e-6)
    out = teacher(torch.from_numpy(obs))
    assert out.shape == (6, 2 if algo in ("PPO", "A2C", "SAC") else 1)
    if algo in ("PPO", "A2C"):  # the Gaussian's log std is the policy's own parameter
        assert torch.allclose(out[:, 1], model.policy.log_std.detach().expand(6))


@pytest.mark.parametrize("layout", ["channels_last", "flattened"])
@pytest.mark.parametrize("algo", ["DQN", "QRDQN"])
def test_a_minatar_teacher_trained_on_the_native_layout_sees_what_it_was_trained_on(algo: str, layout: str,
                                                                                     tmp_path: Path) -> None:
    pytest.importorskip("minatar")
    import minatar.gym

    from socratic.rl.envs import make_env

    minatar.gym.register_envs()
    if algo == "QRDQN":
        from sb3_contrib import QRDQN as cls
        extra = {"policy_kwargs": {"net_arch": [16], "n_quantiles": 5}}
    else:
        from stable_baselines3 import DQN as cls
        extra = {"policy_kwargs": {"net_arch": [16]}}
    native = gym.make("MinAtar/Breakout-v1")  # (10, 10, 4) bool, channels last: as a new user trains it
    if layout == "flattened":
        native = gym.wrappers.FlattenObservation(native)
    model = cls("MlpPolicy", native, seed=0, device="cpu", learning_starts=50, buffer_size=500, **extra)
    model.learn(200)
    model.save(tmp_path / "teacher.zip")
    teacher = load_teacher(tmp_path / "teacher.zip", env_info("minatar", "Breakout"))
    ours = make_env("minatar", "Breakout")  # socratic's (4, 10, 10) uint8
    states = np.stack([ours.reset(seed=s)[0] for s in range(4)])
    raw = np.transpose(states, (0, 2, 3, 1)).astype(np.float32)  # what the teacher saw
    if layout == "flattened":
        raw = raw.reshape(4, -1)
    with torch.no_grad():
        net = model.policy.quantile_net if algo == "QRDQN" else model.policy.q_net
        expected = net(torch.from_numpy(raw))
        expected = expected.mean(dim=1) if algo == "QRDQN" else expected
        assert torch.allclose(teacher(torch.from_numpy(states)), expected, atol=1e-6)


def _zoo_teacher(tmp_path: Path) -> tuple[Path, object, object]:
    """A PPO teacher trained on VecNormalize'd Pendulum, saved in the RL-Zoo layout."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    model = PPO("MlpPolicy", venv, seed=0, device="cpu", n_steps=128, batch_size=64, policy_kwargs=small())
    model.learn(256)
    folder = tmp_path / "ppo" / "Pendulum-v1_1"
    (folder / "Pendulum-v1").mkdir(parents=True)
    model.save(folder / "Pendulum-v1.zip")
    venv.save(str(folder / "Pendulum-v1" / "vecnormalize.pkl"))
    (folder / "Pendulum-v1" / "config.yml").write_text(yaml.safe_dump([["normalize", True], ["n_envs", 1]]))
    (folder / "Pendulum-v1" / "env_kwargs.yml").write_text("{}\n")
    return folder, model, venv


def test_an_rl_zoo_folder_with_vecnormalize_statistics_is_adapted(tmp_path: Path, capsys: pytest.CaptureFixture
                                                                  ) -> None:
    folder, model, venv = _zoo_teacher(tmp_path)
    info = env_info("classic_control", "Pendulum")
    obs = _pendulum_obs()
    expected, _ = model.predict(venv.normalize_obs(obs), deterministic=True)
    assert not np.allclose(venv.normalize_obs(obs), obs)  # the statistics matter
    for path in (folder, folder / "Pendulum-v1.zip"):  # the folder, or the zip with its files beside it
        teacher = load_teacher(path, info)
        np.testing.assert_allclose(teacher.act(torch.from_numpy(obs)).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert "VecNormalize statistics" in capsys.readouterr().err

    (folder / "Pendulum-v1" / "vecnormalize.pkl").unlink()  # normalize: true without its statistics
    with pytest.raises(CheckpointError, match="normalize: True.*no vecnormalize.pkl"):
        load_teacher(folder, info)
    (folder / "Pendulum-v1" / "config.yml").write_text("[]\n")
    (folder / "Pendulum-v1" / "env_kwargs.yml").write_text("g: 5.0\n")
    with pytest.raises(CheckpointError, match=r"env_kwargs \{'g': 5.0\}"):
        load_teacher(folder, info)


def test_a_vecnormalize_file_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    folder, _, _ = _zoo_teacher(tmp_path)
    marker = tmp_path / "ran"

    class Touch:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    (folder / "Pendulum-v1" / "vecnormalize.pkl").write_bytes(pickle.dumps({"obs_rms": Touch()}))
    with pytest.raises(CheckpointError, match="pathlib.*which a VecNormalize file does not hold"):
        load_teacher(folder, env_info("classic_control", "Pendulum"))
    assert not marker.exists()


def test_another_game_action_space_or_observation_size_is_refused(tmp_path: Path) -> None:
    from stable_baselines3 import DQN, TD3

    pendulum = env_info("classic_control", "Pendulum")
    car = gym.make("MountainCarContinuous-v0")  # 2 observations, actions in [-1, 1]
    TD3("MlpPolicy", car, seed=0, device="cpu", policy_kwargs=small()).save(tmp_path / "car.zip")
    with pytest.raises(CheckpointError, match=r"action low bound \[-1.0\].*\[-2.0\]"):
        load_teacher(tmp_path / "car.zip", pendulum)
    # same actions, other observation size: a teacher for another task
    wide = gym.wrappers.RescaleAction(gym.make("MountainCarContinuous-v0"), -2.0, 2.0)
    TD3("MlpPolicy", wide, seed=0, device="cpu", policy_kwargs=small()).save(tmp_path / "wide.zip")
    with pytest.raises(CheckpointError, match=r"observation shape \(2,\), the environment has \(3,\).*another "
                                              r"observation size"):
        load_teacher(tmp_path / "wide.zip", pendulum)
    DQN("MlpPolicy", gym.make("CartPole-v1"), seed=0, device="cpu", policy_kwargs=small()).save(tmp_path / "dqn.zip")
    with pytest.raises(CheckpointError, match=r"action space Discrete\(2\), the environment has Box\(1,\)"):
        load_teacher(tmp_path / "dqn.zip", pendulum)
    TD3("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu", policy_kwargs=small()).save(tmp_path / "Hopper-v5.zip")
    with pytest.raises(CheckpointError, match="named after Hopper-v5, another game"):
        load_teacher(tmp_path / "Hopper-v5.zip", pendulum)


# ------------------------------------------------------------------------------------------------- losses
def test_the_gaussian_kl_against_hand_computed_values() -> None:
    # one dimension: N(0, 1) against N(1, 2^2): log 2 + (1 + 1) / 8 - 1/2
    teacher = torch.tensor([[0.0, 0.0]])
    student = torch.tensor([[1.0, math.log(2.0)]])
    assert gaussian_kl_per_sample(student, teacher).item() == pytest.approx(math.log(2.0) + 0.25 - 0.5, abs=1e-6)
    # two dimensions sum; identical Gaussians give 0
    teacher = torch.tensor([[0.5, -1.0, math.log(0.5), 0.0]])
    student = torch.tensor([[0.5, 1.0, math.log(0.5), math.log(3.0)]])
    second = math.log(3.0) + (1.0 + 4.0) / (2 * 9.0) - 0.5
    assert gaussian_kl_per_sample(student, teacher).item() == pytest.approx(second, abs=1e-6)
    assert gaussian_kl_per_sample(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    # against torch.distributions on random values: KL(teacher || student)
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(t[:, :3], t[:, 3:].exp()),
                                                  torch.distributions.Normal(s[:, :3], s[:, 3:].exp())).sum(1)
    assert torch.allclose(gaussian_kl_per_sample(s, t), reference, atol=1e-5)


def test_continuous_da_raises_the_divergence_and_stays_in_the_observation_bounds() -> None:
    from socratic.rl.config import RLDAConfig
    from socratic.rl.continuous import ContinuousDisagreement
    from socratic.rl.networks import MLPPolicy

    torch.manual_seed(0)
    student, teacher = MLPPolicy(3, 1, [8]), MLPPolicy(3, 1, [8])
    x = torch.tensor([[0.99, 0.0, 7.99], [-0.5, 0.5, 0.0]])
    info = env_info("classic_control", "Pendulum")
    for objective in ("kl", "mse"):
        da = ContinuousDisagreement(RLDAConfig(enabled=True, lr=0.5, prob=1.0, objective=objective), 1,
                                    (info.obs_low, info.obs_high))
        values: list[torch.Tensor] = []
        x_new = da.perturb(x, student, [teacher], final_forward=True, values=values)
        assert values[-1] > values[0]  # the step increases the divergence the student is trained on
        assert (x_new[:, :2].abs() <= 1.0).all() and (x_new[:, 2].abs() <= 8.0).all()
        assert not torch.equal(x_new, x)


def test_selection_is_on_at_least_30_episodes_by_default() -> None:
    assert RLEvalConfig().episodes_per_epoch >= 30


# ----------------------------------------------------------------------------------- CLI end to end
def _train_teacher(tmp_path: Path, algo: str, **changes: object) -> tuple[Path, dict]:
    hyper = {"ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 2},
             "sac": {"learning_starts": 64, "batch_size": 32}}
    config = {"name": f"teacher_{algo}", "output_dir": str(tmp_path / "runs"), "algo": algo,
              "env": {"suite": "classic_control", "game": "Pendulum", "eval_num_envs": 2},
              "sb3": {"n_timesteps": 384 if algo == "ppo" else 256, "net_arch": [16, 16], "normalize": algo == "ppo", "hyperparams": hyper[algo]},
              "eval": {"every_steps": 128, "episodes": 2, "final_episodes": 2},
              "runtime": {"progress": False, "tensorboard": False, "plot": False}}
    for key, value in changes.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / f"teacher_{algo}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def _last_weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("algo", ["ppo", "sac"])  # on-policy and off-policy (TD3's state is SAC's minus the entropy)
def test_train_teacher_ppo_and_sac_resume_bit_for_bit(algo: str, tmp_path: Path) -> None:
    from socratic.rl.sb3_teacher import train_sb3_teacher

    path, config = _train_teacher(tmp_path, algo)
    cfg = load_rl_config(TrainTeacherConfig, path)
    reference = train_sb3_teacher(cfg)
    run_dir = tmp_path / "runs" / config["name"] / "seed0"
    assert (run_dir / "checkpoints" / "best.zip").is_file() and (run_dir / "checkpoints" / "last.zip").is_file()
    if algo == "ppo":  # normalised: the RL-Zoo layout beside the zip
        assert (run_dir / "checkpoints" / "best" / "vecnormalize.pkl").is_file()
    assert {"score_mean", "last_score_mean", "best_eval_score"} <= set(reference)
    final = _last_weights(run_dir)["learners"][0]["policy"]

    def after_round_1(epoch: int, metrics: dict) -> None:
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_sb3_teacher(cfg, overwrite=True, epoch_callbacks=[after_round_1])
    resumed = train_sb3_teacher(cfg, resume=True)
    again = _last_weights(run_dir)["learners"][0]["policy"]
    assert set(again) == set(final)
    for key in final:
        assert torch.equal(again[key], final[key]), key
    assert resumed["score_mean"] == reference["score_mean"]
    # the trained teacher is a teacher for rl distill / evaluate
    teacher = load_teacher(run_dir / "checkpoints" / "best.zip", env_info("classic_control", "Pendulum"))
    assert teacher(torch.zeros(2, 3)).shape[1] == (2 if algo in ("ppo", "sac") else 1)


def _distill_config(tmp_path: Path, teacher: Path, with_da: bool, **changes: dict) -> Path:
    config = {"name": "pd_da" if with_da else "pd", "output_dir": str(tmp_path / "runs"),
              "env": {"suite": "classic_control", "game": "Pendulum", "num_envs": 4, "eval_num_envs": 4},
              "teacher": {"checkpoint": str(teacher)}, "student": {"arch": "mlp", "hidden": 16, "layers": 2},
              "collect": {"states_per_epoch": 400, "buffer_size": 1200, "action_noise": 0.1},
              "loss": {"name": "kl"}, "optim": {"epochs": 3, "optimizer": "adam", "lr": 3e-3, "batch_size": 64},
              "da": {"enabled": with_da, "lr": 0.05, "prob": 1.0, "clamp_to_obs_bounds": True},
              "eval": {"episodes_per_epoch": 4, "final_episodes": 4, "teacher_episodes": 4},
              "runtime": {"progress": False, "tensorboard": False, "plot": False}}
    for key, value in changes.items():
        config[key].update(value)
    path = tmp_path / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def ppo_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PPO teacher (VecNormalize'd) from `socratic rl train-teacher`, as checkpoints/best.zip."""
    tmp = tmp_path_factory.mktemp("ppo_teacher")
    path, config = _train_teacher(tmp, "ppo")
    assert main(["rl", "train-teacher", str(path)]) == 0
    return tmp / "runs" / config["name"] / "seed0" / "checkpoints" / "best.zip"


@pytest.mark.parametrize("da", [False, True])
def test_pd_and_pd_da_continuous_through_the_cli_and_resume(da: bool, ppo_teacher: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from socratic.rl.distill import run_distillation

    path = _distill_config(tmp_path, ppo_teacher, da)
    assert main(["rl", "distill", str(path)]) == 0
    run_dir = tmp_path / "runs" / ("pd_da" if da else "pd") / "seed0"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == ("pd+da" if da else "pd") and summary["student_params"] == (3 * 16 + 16) + (16 * 16 + 16) + (16 * 2 + 2)
    assert summary["last_score_mean"] is not None and summary["selection_episodes"] == 4
    assert summary["relative_score"] is None  # Pendulum's scores are negative: no ratio
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[-1]["train_action_mae"] < metrics[0]["train_action_mae"]
    if da:
        assert metrics[0]["da_perturbed"] == 1.0 and metrics[0]["da_disagreement_gain"] > 1.0

    capsys.readouterr()
    assert main(["rl", "evaluate", str(run_dir / "checkpoints" / "best.pt"), "--episodes", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["game"] == "Pendulum"

    final = _last_weights(run_dir)["model"]

    def after_epoch_1(epoch: int, metrics: dict) -> None:
        if epoch == 1:
            raise Interrupt

    cfg = load_rl_config(DistillConfig, path)
    with pytest.raises(Interrupt):
        run_distillation(cfg, overwrite=True, epoch_callbacks=[after_epoch_1])
    run_distillation(cfg, resume=True)
    again = _last_weights(run_dir)["model"]
    for key in final:
        assert torch.equal(again[key], final[key]), key


def test_continuous_config_errors_name_the_key(ppo_teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [({"loss": {"name": "kl_rusu"}}, "loss.name: 'kl_rusu' is not one of kl"),
             ({"student": {"arch": "minatar"}}, "student.arch: classic_control Pendulum has continuous actions"),
             ({"collect": {"action_noise": -1}}, "collect.action_noise must be >= 0")]
    for changes, message in cases:
        path = _distill_config(tmp_path, ppo_teacher, False, **changes)
        assert main(["rl", "distill", str(path), "--overwrite"]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing half-written
    with pytest.raises(ConfigError, match="sb3.hyperparams.policy_kwargs is set by socratic"):
        load_rl_config(TrainTeacherConfig, None, ["algo=sac", "sb3.hyperparams={policy_kwargs: {}}"])


def test_a_deterministic_teacher_needs_the_action_mse(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from stable_baselines3 import TD3

    TD3("MlpPolicy", gym.make("Pendulum-v1"), seed=0, device="cpu", policy_kwargs=small()).save(tmp_path / "td3.zip")
    path = _distill_config(tmp_path, tmp_path / "td3.zip", True)
    assert main(["rl", "distill", str(path)]) == 2
    assert "loss.name: kl needs a stochastic (Gaussian) teacher" in capsys.readouterr().err
    path = _distill_config(tmp_path, tmp_path / "td3.zip", True, loss={"name": "mse"}, da={"objective": "mse"},
                           optim={"epochs": 1})
    assert main(["rl", "distill", str(path)]) == 0
