"""Policy distillation building blocks: buffer, collection, losses, DPD weights, DA on states, networks, errors."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from socratic.config import ConfigError
from socratic.engine.checkpoint import CheckpointError, save_checkpoint
from socratic.rl.buffer import StateBuffer
from socratic.rl.config import DistillConfig, DPDConfig, TrainTeacherConfig, load_rl_config
from socratic.rl.envs import canonical_game, env_info, make_vec_env
from socratic.rl.errors import MissingExtraError, UnknownGameError
from socratic.rl.losses import dpd_weights, policy_kl, policy_loss, policy_loss_per_sample
from socratic.rl.networks import WIDTH_PRESETS, QNetwork, count_parameters
from socratic.rl.rollout import TeacherCollector, play_episodes
from socratic.rl.scripted import BreakoutTracker
from socratic.rl.teachers import load_teacher, qnetwork_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "rl"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------ buffer
def test_buffer_is_fifo_and_evicts_the_oldest_states() -> None:
    buffer = StateBuffer(capacity=5, state_shape=(1, 2, 2), num_actions=2)

    def states(values: list[int]) -> tuple[np.ndarray, np.ndarray]:
        s = np.array(values, dtype=np.uint8)[:, None, None, None] * np.ones((1, 1, 2, 2), dtype=np.uint8)
        return s, np.stack([np.array(values, dtype=np.float32), -np.array(values, dtype=np.float32)], axis=1)

    buffer.add(*states([1, 2, 3]))
    assert len(buffer) == 3
    buffer.add(*states([4, 5, 6, 7]))  # wraps around: 1 and 2 are evicted
    order = buffer.chronological()
    assert buffer.states[order, 0, 0, 0].tolist() == [3, 4, 5, 6, 7]
    assert buffer.q_values[order, 0].tolist() == [3, 4, 5, 6, 7]  # Q-values stay with their states
    buffer.add(*states(list(range(10, 22))))  # more than the capacity at once: only the newest 5 survive
    assert buffer.states[buffer.chronological(), 0, 0, 0].tolist() == [17, 18, 19, 20, 21]
    assert len(buffer) == 5 and buffer.added == 19

    seen = []
    for x, q in buffer.epoch(batch_size=2, rng=np.random.default_rng(0)):
        assert x.dtype == torch.uint8 and torch.equal(x[:, 0, 0, 0].float(), q[:, 0])
        seen += x[:, 0, 0, 0].tolist()
    assert sorted(seen) == [17, 18, 19, 20, 21]  # one pass = every stored state exactly once
    assert buffer.num_batches(2) == 3 and len(list(buffer.epoch(2, np.random.default_rng(0), max_batches=2))) == 2


class _ConstantQ(torch.nn.Module):
    """Q-values that encode the state: an action is never 'greedy-random' by accident."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.float().flatten(1)
        return torch.stack([flat.sum(1), -flat.sum(1), flat[:, 0]], dim=1)


class _RecordingEnvs:
    """A fake vector env whose observation at step t is t (per env), recording the actions it receives."""

    num_envs = 4

    class single_action_space:  # noqa: N801 - mimics gymnasium's attribute
        n = 3

    def __init__(self) -> None:
        self.t = 0
        self.actions: list[np.ndarray] = []

    def _obs(self) -> np.ndarray:
        return np.stack([np.full((1, 2, 2), (self.t * 4 + i) % 256, dtype=np.uint8) for i in range(self.num_envs)])

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        self.t = 0
        return self._obs(), {}

    def step(self, actions: np.ndarray):  # noqa: ANN201
        self.actions.append(np.array(actions))
        self.t += 1
        zeros = np.zeros(self.num_envs)
        return self._obs(), zeros, zeros.astype(bool), zeros.astype(bool), {}


def test_collection_never_stores_random_action_states() -> None:
    envs = _RecordingEnvs()
    teacher = _ConstantQ()
    collector = TeacherCollector(teacher, envs, epsilon=0.3, seed=0)
    states, q, stats = collector.collect(120)  # ~43 steps of 4 envs: observation ids stay below 256
    assert states.shape == (120, 1, 2, 2) and states.dtype == np.uint8 and q.shape == (120, 3)
    # replay the collector's decisions: which (step, env) took a random action
    rng = np.random.default_rng(0)
    stored_ids, random_ids = [], []
    for t, actions in enumerate(envs.actions):
        explore = rng.random(4) < 0.3
        rng.integers(0, 3, size=int(explore.sum()))
        for i in range(4):
            (random_ids if explore[i] else stored_ids).append(t * 4 + i)
    assert random_ids, "epsilon = 0.3 must have produced random actions"
    stored = states[:, 0, 0, 0].astype(int).tolist()
    assert stored == stored_ids[:120]
    assert not set(stored) & set(random_ids)
    assert stats.random_actions == len(random_ids) and stats.stored == 120
    # the stored Q-values are the teacher's on the stored states
    np.testing.assert_allclose(q, teacher(torch.from_numpy(states)).numpy())
    # greedy steps took the teacher's argmax
    stored_set = set(stored_ids)
    greedy = [a for t, actions in enumerate(envs.actions) for i, a in enumerate(actions) if t * 4 + i in stored_set]
    assert set(greedy) == {0}  # argmax of (sum, -sum, first) for non-negative states is action 0


# ------------------------------------------------------------------------------------------------ losses
def _softmax(v: list[float]) -> list[float]:
    m = max(v)
    e = [math.exp(x - m) for x in v]
    return [x / sum(e) for x in e]


def test_kl_losses_match_a_hand_computation() -> None:
    s = torch.tensor([[1.00, 1.02, 0.97], [0.5, 0.4, 0.45]])
    t = torch.tensor([[1.01, 1.00, 0.99], [0.3, 0.35, 0.5]])
    tau = 0.01

    def kl(p: list[float], q: list[float]) -> float:
        return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)

    both = [kl(_softmax([x / tau for x in tr]), _softmax([x / tau for x in sr])) for sr, tr in zip(s.tolist(), t.tolist())]
    rusu = [kl(_softmax([x / tau for x in tr]), _softmax(sr)) for sr, tr in zip(s.tolist(), t.tolist())]
    assert policy_kl(s, t, tau).item() == pytest.approx(sum(both) / 2, rel=1e-4)
    assert policy_loss("kl_rusu", s, t, tau).item() == pytest.approx(sum(rusu) / 2, rel=1e-4)
    assert both[0] != pytest.approx(rusu[0], rel=0.1)  # tempering the student matters
    mse = ((s - t) ** 2).sum(1).mean()
    assert policy_loss("mse", s, t).item() == pytest.approx(mse.item())
    nll = -(math.log(_softmax(s[0].tolist())[0]) + math.log(_softmax(s[1].tolist())[2])) / 2
    assert policy_loss("nll", s, t).item() == pytest.approx(nll, rel=1e-5)
    assert policy_loss_per_sample("kl", s, t, tau).shape == (2,)


def test_kl_at_small_temperature_stays_finite() -> None:
    """log(softmax(q/0.01)) underflows to -inf for Q gaps of a few units; log_softmax does not."""
    s = torch.tensor([[0.0, 10.0, -10.0]], requires_grad=True)
    t = torch.tensor([[10.0, 0.0, -5.0]])
    loss = policy_kl(s, t, 0.01)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 100 and torch.isfinite(s.grad).all()
    assert policy_kl(t.clone(), t, 0.01).item() == pytest.approx(0.0, abs=1e-6)


def test_dpd_weights_on_hand_made_values() -> None:
    peer = torch.tensor([1.0, 2.0, 0.0, 10.0])
    own = torch.tensor([1.0, 1.0, 1.0, 0.0])
    w = dpd_weights(peer, own, beta=1.0)
    raw = [1.0, math.e, math.exp(-1), 100.0]  # exp(10) is clipped to 100
    assert w.tolist() == pytest.approx([r / sum(raw) for r in raw], rel=1e-6)
    assert w.sum().item() == pytest.approx(1.0)
    w = dpd_weights(torch.tensor([0.0, 0.0]), torch.tensor([10.0, 0.0]), beta=0.5)
    assert w.tolist() == pytest.approx([0.01 / 1.01, 1 / 1.01], rel=1e-6)  # exp(-5) is clipped up to 0.01
    assert dpd_weights(peer, own, beta=0.0).tolist() == pytest.approx([0.25] * 4)


# ----------------------------------------------------------------------------------------------- networks
def test_networks_shapes_and_the_one_percent_student() -> None:
    atari_teacher = QNetwork((4, 84, 84), 6, "nature", *WIDTH_PRESETS["teacher"])
    atari_student = QNetwork((4, 84, 84), 6, "nature", *WIDTH_PRESETS["dqn4"])
    assert count_parameters(atari_teacher) == 1_687_206  # the Nature DQN with 6 actions
    assert 15_000 < count_parameters(atari_student) < 17_000  # "roughly 16,000" (DA paper)
    x = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    assert atari_student(x).shape == (2, 6)
    torch.testing.assert_close(atari_student(x), atari_student(x.float()))  # uint8 and 0..255 floats agree
    minatar_teacher = QNetwork((4, 10, 10), 3, "minatar", (32, 64, 64), 512, 1.0)
    minatar_student = QNetwork((4, 10, 10), 3, "minatar", (8, 8, 8), 32, 1.0)
    assert 0.008 < count_parameters(minatar_student) / count_parameters(minatar_teacher) < 0.012
    assert minatar_student(torch.ones(5, 4, 10, 10, dtype=torch.bool)).shape == (5, 3)
    with pytest.raises(ConfigError, match="does not fit inputs"):
        QNetwork((4, 10, 10), 3, "nature")


# --------------------------------------------------------------------------------------- DA on states
def test_da_changes_the_states_and_raises_the_kl() -> None:
    from socratic.augment import DisagreementAugmentation, disagreement_score

    torch.manual_seed(0)
    envs = make_vec_env("minatar", "Breakout", 4, max_episode_steps=500)
    teacher = BreakoutTracker()
    states, _, _ = TeacherCollector(teacher, envs, 0.05, seed=0).collect(64)
    envs.close()
    student = QNetwork((4, 10, 10), 3, "minatar", (8, 8, 8), 32, 1.0)
    x = torch.from_numpy(states).float()
    da = DisagreementAugmentation(steps=1, lr=0.01, prob=1.0, objective="kl", optimizer="adam", temperature=1.0,
                                  clamp=None, target=0)
    before_params = [p.detach().clone() for p in student.parameters()]
    x_new = da(x, student, [teacher])
    assert x_new is not x and x_new.shape == x.shape
    assert (x_new - x).abs().max().item() == pytest.approx(0.01, rel=1e-3)  # one fresh-Adam step: ~alpha per element
    with torch.no_grad():
        kl_before = disagreement_score(student(x), teacher(x), "kl", 1.0).item()
        kl_after = disagreement_score(student(x_new), teacher(x_new), "kl", 1.0).item()
    assert kl_after > kl_before
    assert all(torch.equal(a, b) for a, b in zip(before_params, student.parameters()))  # no leak into weights
    never = DisagreementAugmentation(steps=1, lr=0.01, prob=0.0, objective="kl")
    assert never(x, student, [teacher]) is x


# ------------------------------------------------------------------------------------ environments, errors
def test_minatar_environments_and_unknown_games() -> None:
    info = env_info("minatar", "space_invaders")
    assert (info.game, info.env_id, info.obs_shape, info.num_actions) == ("SpaceInvaders", "MinAtar/SpaceInvaders-v1",
                                                                          (6, 10, 10), 4)
    assert canonical_game("minatar", "Breakout") == canonical_game("minatar", "breakout") == "Breakout"
    with pytest.raises(UnknownGameError, match="Asterix, Breakout, Freeway, Seaquest, SpaceInvaders"):
        canonical_game("minatar", "Pong")
    with pytest.raises(UnknownGameError, match="env.suite"):
        canonical_game("procgen", "Breakout")
    envs = make_vec_env("minatar", "Breakout", 2, max_episode_steps=50)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 4, 10, 10) and obs.dtype == np.uint8 and set(np.unique(obs)) <= {0, 1}
    scores = play_episodes(BreakoutTracker(), envs, 3, seed=0)
    assert len(scores) == 3
    envs.close()


@pytest.mark.parametrize(("module", "call", "extra"), [
    ("minatar", lambda: canonical_game("minatar", "Breakout"), '"socratic-kd[rl,minatar]"'),
    ("ale_py", lambda: canonical_game("atari", "SpaceInvaders"), '"socratic-kd[rl,atari]"'),
    ("gymnasium", lambda: make_vec_env("minatar", "Breakout", 1), '"socratic-kd[rl]"'),
])
def test_missing_extras_say_what_to_install(monkeypatch: pytest.MonkeyPatch, module: str, call, extra: str) -> None:
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(MissingExtraError, match=re.escape(f"pip install {extra}")):
        call()


def test_teacher_for_another_game_is_refused(tmp_path: Path) -> None:
    breakout = env_info("minatar", "Breakout")
    invaders = env_info("minatar", "SpaceInvaders")
    net = QNetwork(invaders.obs_shape, invaders.num_actions, "minatar", (8, 8, 8), 32, 1.0)
    path = tmp_path / "invaders.pt"
    save_checkpoint(qnetwork_checkpoint(net, invaders), path)
    assert load_teacher(path, invaders)(torch.zeros(1, 6, 10, 10)).shape == (1, 4)
    with pytest.raises(CheckpointError, match="number of actions 4, the environment has 3"):
        load_teacher(path, breakout)
    plain = tmp_path / "plain.pt"  # a plain state dict: the architecture comes from the config
    torch.save(net.state_dict(), plain)
    spec = QNetwork(breakout.obs_shape, breakout.num_actions, "minatar", (8, 8, 8), 32, 1.0).spec()
    with pytest.raises(CheckpointError, match="number of actions 4, the environment has 3"):
        load_teacher(plain, breakout, net_spec=spec)
    with pytest.raises(CheckpointError, match="plain state dict without metadata"):
        load_teacher(plain, invaders)
    with pytest.raises(CheckpointError, match="plays minatar Breakout, not minatar SpaceInvaders"):
        load_teacher("scripted:breakout_tracker", invaders)
    with pytest.raises(CheckpointError, match="not found"):
        load_teacher(tmp_path / "missing.zip", breakout)


# ------------------------------------------------------------------------------------------------ configs
def test_shipped_rl_configs_load_and_bad_keys_are_named() -> None:
    files = sorted(CONFIGS.glob("*.yaml"))
    assert len(files) >= 11
    for path in files:
        kind = TrainTeacherConfig if "teacher" in path.stem else DPDConfig if "dpd" in path.stem else DistillConfig
        config = load_rl_config(kind, path)
        assert config.name == path.stem
    atari = load_rl_config(DistillConfig, CONFIGS / "atari_space_invaders_pd_da.yaml")
    assert (atari.collect.states_per_epoch, atari.collect.buffer_size, atari.collect.epsilon) == (54_000, 540_000, 0.05)
    assert (atari.optim.lr, atari.optim.batch_size, atari.optim.epochs, atari.loss.temperature) == (1e-4, 32, 500, 0.01)
    assert (atari.da.enabled, atari.da.prob, atari.da.lr, atari.da.temperature) == (True, 0.3, 0.001, 1.0)
    with pytest.raises(ConfigError, match="unknown config key 'collect.buffer'"):
        load_rl_config(DistillConfig, CONFIGS / "minatar_breakout_pd.yaml", ["collect.buffer=5"])
    with pytest.raises(ConfigError, match="loss.name: 'kld' is not one of kl, kl_rusu, mse, nll"):
        load_rl_config(DistillConfig, CONFIGS / "minatar_breakout_pd.yaml", ["loss.name=kld"])
    with pytest.raises(ConfigError, match="teacher.checkpoint is required"):
        load_rl_config(DistillConfig, None)
    with pytest.raises(ConfigError, match="dpd.clip_high must be > dpd.clip_low"):
        load_rl_config(DPDConfig, CONFIGS / "minatar_breakout_dpd.yaml", ["dpd.clip_high=0.001"])


def test_rl_sections_are_the_shared_ones_with_rl_presets() -> None:
    from socratic.config import DAConfig, OptimConfig, RuntimeConfig, SearchConfig

    config = load_rl_config(DistillConfig, CONFIGS / "minatar_breakout_pd.yaml", ["da.enabled=true"])
    assert isinstance(config.da, DAConfig) and isinstance(config.optim, OptimConfig)
    assert isinstance(config.runtime, RuntimeConfig) and isinstance(config.search, SearchConfig)
    assert config.da.prob == 0.3 and config.da.lr == 0.001 and config.da.objective == "kl"  # the paper's RL values
    assert config.search.objective == "eval_score_mean" and config.runtime.device == "cpu"
    with pytest.raises(ConfigError, match=r"da.prob must be a probability in \[0, 1\], got 2"):
        load_rl_config(DistillConfig, CONFIGS / "minatar_breakout_pd.yaml", ["da.prob=2"])  # the shared check
    with pytest.raises(ConfigError, match="runtime.channels_last is not used by the RL commands"):
        load_rl_config(DistillConfig, CONFIGS / "minatar_breakout_pd.yaml", ["runtime.channels_last=true"])
    with pytest.raises(ConfigError, match="da.clamp is not used on RL states"):
        load_rl_config(DistillConfig, CONFIGS / "minatar_breakout_pd.yaml", ["da.clamp=[0, 1]"])
    with pytest.raises(ConfigError, match="env.suite: 'procgen' is not one of atari, classic_control, minatar, mujoco"):
        load_rl_config(DistillConfig, CONFIGS / "minatar_breakout_pd.yaml", ["env.suite=procgen"])
