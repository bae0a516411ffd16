"""Typed configs of the RL commands: `socratic rl train-teacher | distill | dpd`.

YAML keys are the field names below (docs/methods/rl.md lists them). The `da`, `optim`, `runtime` and `search`
sections are the classification sections with RL presets for their defaults (subclasses that change defaults and
add the RL-only keys); loading is the project's config machinery (`socratic.config`): unknown keys and wrong
types are a `ConfigError` naming the dotted key, and `key.sub=value` overrides work as for the classification
commands.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from socratic.config import ConfigError, DAConfig, OptimConfig, RuntimeConfig, SearchConfig
from socratic.config.loader import (apply_overrides, build_dataclass, check_choice, check_non_negative,
                                    check_positive, read_yaml)
from socratic.rl.envs import suites

TEACHER_ALGOS = ("auto", "dqn", "qrdqn")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
DISADVANTAGES = ("value", "peer_action")


@dataclass
class EnvConfig:
    """Which game, and how many copies play at once."""

    suite: str = "minatar"  # a registered suite (socratic.registry.ENV_SUITES): minatar, atari
    game: str = "Breakout"  # MinAtar: Asterix, Breakout, Freeway, Seaquest, SpaceInvaders; Atari: any ALE game
    num_envs: int = 8  # environments stepped together for collection (and DQN training in dpd: 1 is used)
    eval_num_envs: int = 8  # environments stepped together for evaluation
    max_episode_steps: int | None = None  # agent steps before truncation; None = 10,000 MinAtar / 27,000 Atari
    asynchronous: bool = False  # one process per environment (gymnasium AsyncVectorEnv)


@dataclass
class NetConfig:
    """A Q-network (socratic.rl.networks.QNetwork): three convolutions and one hidden layer; or, for continuous
    control (arch mlp), an MLP policy (socratic.rl.networks.MLPPolicy) of `layers` hidden layers of `hidden` units."""

    arch: str | None = None  # nature | minatar | mlp; None = the suite's (nature Atari, minatar MinAtar, mlp MuJoCo)
    convs: list[int] = field(default_factory=lambda: [8, 8, 8])  # conv widths c1, c2, c3 (nature, minatar)
    hidden: int = 32  # width of the fully connected layer(s)
    layers: int = 2  # mlp only: number of hidden layers


def _teacher_net() -> NetConfig:
    return NetConfig(convs=[32, 64, 64], hidden=512)


@dataclass
class TeacherSourceConfig:
    """Where the teacher comes from."""

    checkpoint: str = ""  # SB3 .zip (DQN/QR-DQN, read without unpickling), .pt (weights_only) or scripted:<name>
    algo: str = "auto"  # .zip only: auto | dqn | qrdqn
    net: NetConfig | None = None  # .pt plain state dicts without metadata: the architecture to build
    trust_pickle: bool = False  # .zip only: load with SB3's unpickling loader (runs code in the file: trusted only)


@dataclass
class CollectConfig:
    """Online collection by the teacher (Wong et al. Sec. 3.3.1)."""

    states_per_epoch: int = 54_000  # greedy-step states stored per epoch
    buffer_size: int = 540_000  # FIFO capacity
    epsilon: float = 0.05  # discrete actions: probability of a random action (whose state is not stored)
    action_noise: float = 0.1  # continuous actions: Gaussian noise std on the teacher's action, x half the range


@dataclass
class LossConfig:
    """The distillation loss (socratic.rl.losses)."""

    # discrete: kl (both sides tempered, DA code) | kl_rusu (student untempered) | mse | nll;
    # continuous: kl (Gaussian KL, stochastic teachers) | mse (action MSE; deterministic teachers: TD3, DDPG)
    name: str = "kl"
    temperature: float = 0.01  # tau of kl / kl_rusu


@dataclass
class RLDAConfig(DAConfig):
    """Disagreement Augmentation on states (socratic.augment.DisagreementAugmentation): the `da` section with the
    DA paper's RL settings (Sec. 3.3: p = 0.3, alpha = 0.001 on the states' own scale, a KL objective on raw
    Q-values)."""

    prob: float = 0.3  # probability that a batch is perturbed
    lr: float = 0.001  # alpha, on the states' own scale (0..255 Atari, 0..1 MinAtar)
    objective: str = "kl"  # kl | mse | l1_mse (continuous actions: kl = Gaussian KL, mse = mean-action MSE)
    clamp_to_obs_bounds: bool = False  # continuous control: clamp perturbed states to the observation space's bounds


@dataclass
class RLOptimConfig(OptimConfig):
    """The student's optimiser, the `optim` section with the DA paper's RL settings (SGD lr 1e-4, momentum 0.9,
    wd 1e-4, batch 32, 500 epochs, constant rate) and two RL keys: the minibatch size and the updates per epoch."""

    epochs: int = 500
    optimizer: str = "sgd"  # sgd | adam | rmsprop (Rusu et al. used RMSProp)
    lr: float = 1e-4
    weight_decay: float = 1e-4
    schedule: str = "constant"
    milestones: list[int] = field(default_factory=list)
    batch_size: int = 32  # states per minibatch
    max_updates_per_epoch: int | None = None  # None = one full pass over the buffer per epoch


@dataclass
class RLEvalConfig:
    """Greedy evaluation."""

    # evaluation after every epoch on held-out seeds (10,000 + epoch; the final one uses seed 1): picks best.pt.
    # The DA paper's 5 episodes overstate the best score; 30 by default (docs/methods/rl.md)
    episodes_per_epoch: int = 30
    final_episodes: int = 1000  # the final score of best.pt, and of last.pt beside it (DA paper: 1000)
    teacher_episodes: int = 1000  # the teacher's score for the relative score; 0 = do not measure
    teacher_score: float | None = None  # a known teacher score to use instead of measuring it


@dataclass
class RLRuntimeConfig(RuntimeConfig):
    """The `runtime` section on the CPU by default, plus the learning-curve picture; the image-only keys
    (precision, channels_last, sync_bn, find_unused_parameters, eval_every) must keep their defaults."""

    device: str = "cpu"  # cpu | cuda | cuda:N | mps | auto
    plot: bool = True  # learning-curve PNG in the run folder


@dataclass
class RLSearchConfig(SearchConfig):
    """What `socratic search` optimises for an RL run: its per-epoch greedy evaluation score."""

    objective: str = "eval_score_mean"


@dataclass
class RLRunConfig:
    """What every RL command's config has: its run folder <output_dir>/<name>/seed<seed>, the game, the runtime
    and the search objective."""

    name: str = "rl"
    seed: int = 0
    output_dir: str = "runs/rl"
    env: EnvConfig = field(default_factory=EnvConfig)
    runtime: RLRuntimeConfig = field(default_factory=RLRuntimeConfig)
    search: RLSearchConfig = field(default_factory=RLSearchConfig)


@dataclass
class DistillConfig(RLRunConfig):
    """`socratic rl distill`: policy distillation (optionally with DA) from one teacher into one student."""

    name: str = "pd"
    teacher: TeacherSourceConfig = field(default_factory=TeacherSourceConfig)
    student: NetConfig = field(default_factory=NetConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    da: RLDAConfig = field(default_factory=RLDAConfig)
    optim: RLOptimConfig = field(default_factory=RLOptimConfig)
    eval: RLEvalConfig = field(default_factory=RLEvalConfig)


@dataclass
class DQNConfig:
    """Stable-Baselines3 DQN hyperparameters, under RL-Zoo's key names (see docs/methods/rl.md for the values)."""

    n_timesteps: int = 1_000_000
    learning_rate: float = 1e-4
    buffer_size: int = 100_000
    learning_starts: int = 5_000
    batch_size: int = 32
    gamma: float = 0.99
    train_freq: int = 4
    gradient_steps: int = 1
    target_update_interval: int = 1_000
    exploration_fraction: float = 0.1
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.01
    max_grad_norm: float = 10.0


@dataclass
class SB3TeacherConfig:
    """A PPO / SAC / TD3 teacher on a continuous-control suite; Stable-Baselines3 does the learning."""

    n_timesteps: int = 100_000
    net_arch: list[int] = field(default_factory=lambda: [64, 64])  # hidden widths of the actor (and critic)
    normalize: bool = False  # VecNormalize observations (and PPO's rewards), as RL-Zoo's `normalize: true`
    action_noise: float = 0.1  # TD3 only: Gaussian exploration noise std, x half the action range
    hyperparams: dict = field(default_factory=dict)  # other arguments of the SB3 algorithm, under SB3's names


@dataclass
class TeacherEvalConfig:
    every_steps: int = 100_000  # greedy evaluation every N environment steps; picks best
    episodes: int = 10  # episodes per periodic evaluation (held-out seeds 10,000 + epoch)
    final_episodes: int = 100  # episodes of the final evaluation of the best network (and of the last, beside it)


TEACHER_TRAIN_ALGOS = ("dqn", "ppo", "sac", "td3")


@dataclass
class TrainTeacherConfig(RLRunConfig):
    """`socratic rl train-teacher`: a DQN teacher (discrete actions) or a PPO / SAC / TD3 teacher (continuous
    control), trained with Stable-Baselines3."""

    name: str = "teacher"
    algo: str = "dqn"  # dqn (MinAtar, Atari) | ppo | sac | td3 (classic_control, mujoco)
    net: NetConfig = field(default_factory=_teacher_net)  # dqn only
    dqn: DQNConfig = field(default_factory=DQNConfig)  # dqn only
    sb3: SB3TeacherConfig = field(default_factory=SB3TeacherConfig)  # ppo, sac, td3 only
    eval: TeacherEvalConfig = field(default_factory=TeacherEvalConfig)


@dataclass
class DPDSettings:
    """Dual policy distillation (Lai et al. 2020) between two peer learners of one algorithm (`learner`).

    The keys left at None take the learner's default (`DPD_DEFAULTS`: the authors' settings for DDPG and PPO, the
    DQN adaptation's for DQN); the resolved value is what config.yaml records."""

    enabled: bool = True  # false = the same two learners trained alone (the baseline)
    learner: str = "dqn"  # dqn (SB3 DQN, MinAtar/Atari) | ddpg | ppo (SB3 DDPG / PPO, continuous actions)
    beta: float | None = None  # w = clip(exp(beta * xi), clip_low, clip_high), normalised over the batch
    clip_low: float = 0.01
    clip_high: float = 100.0
    # which values make xi: dqn: value (max_a Q_peer - max_a Q_own) | peer_action (both Qs at the peer's greedy
    # action); ddpg: peer_action (Q_peer(s, pi_peer(s)) - Q_own(s, pi_peer(s)), the authors' code) | value
    # (Q_peer(s, pi_peer(s)) - Q_own(s, pi_own(s)), the paper's V); ppo: value (V_peer(s) - V_own(s)) only
    disadvantage: str | None = None
    # peer_minus_own: xi = peer - own (the paper; the authors' DDPG code) | own_minus_peer (the authors' PPO code)
    sign: str = "peer_minus_own"
    batch_size: int | None = None  # states sampled from the peer's replay buffer / state memory per step
    # Adam of the distillation steps, separate from the learner's own optimiser. DQN: 1e-5 (the authors' 1e-4
    # made both DQN learners collapse, benchmarks/results/rl_minatar.md); DDPG: 1e-4 (actor_dis_lr);
    # PPO: ppo.learning_rate
    lr: float | None = None
    every: int | None = None  # ddpg / ppo: one distillation step after every N-th update (ddpg 1, ppo 5)
    memory_size: int = 100_000  # ppo: the FIFO of visited states the peer samples from
    loss: str = "kl"  # dqn: kl | kl_rusu | mse | nll, on Q-values (ddpg / ppo: the MSE between actions)
    temperature: float = 1.0  # dqn: the loss's temperature
    round_steps: int = 10_000  # environment steps of one learner before the other takes its turn


# learner -> the defaults of the DPDSettings keys left at None (ppo's lr is ppo.learning_rate)
DPD_DEFAULTS: dict[str, dict[str, Any]] = {
    "dqn": {"beta": 1.0, "disadvantage": "value", "batch_size": 64, "lr": 1e-5, "every": None},
    "ddpg": {"beta": 1.0, "disadvantage": "peer_action", "batch_size": 512, "lr": 1e-4, "every": 1},
    "ppo": {"beta": 0.5, "disadvantage": "value", "batch_size": 512, "lr": None, "every": 5},
}
DPD_LEARNERS = tuple(DPD_DEFAULTS)
DPD_SIGNS = ("peer_minus_own", "own_minus_peer")


@dataclass
class DDPGConfig:
    """Stable-Baselines3 DDPG hyperparameters of a DPD learner (`dpd.learner: ddpg`), SB3's key names. Defaults:
    the authors' DPD-DDPG (OpenAI Baselines: 100 rollout steps then 50 updates, batch 64, tau 0.01, 64-64 MLPs)
    except what SB3 does not have (see docs/methods/rl.md)."""

    n_timesteps: int = 2_500_000  # per learner (the authors: 5M for the pair)
    learning_rate: float = 1e-3  # actor and critic (SB3 has one rate; the authors: critic 1e-3, actor 1e-4)
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    batch_size: int = 64
    tau: float = 0.01
    gamma: float = 0.99
    train_freq: int = 100  # environment steps between two training phases
    gradient_steps: int = 50  # updates per training phase
    noise_std: float = 0.1  # Gaussian exploration noise on the [-1, 1]-scaled action
    net_arch: list[int] = field(default_factory=lambda: [64, 64])  # actor and critic hidden widths


@dataclass
class PPOConfig:
    """Stable-Baselines3 PPO hyperparameters of a DPD learner (`dpd.learner: ppo`), SB3's key names. Defaults:
    the authors' DPD-PPO (OpenAI Baselines ppo2: 2048 steps, 64 minibatches, 10 epochs, lr 5e-5, 64-64 MLPs)."""

    n_timesteps: int = 10_000_000  # per learner (the authors: 20M for the pair)
    learning_rate: float = 5e-5
    n_steps: int = 2048  # environment steps per update (one environment per learner)
    batch_size: int = 32  # minibatch size (2048 / 64 minibatches)
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5  # also clips the distillation step's gradient, as the authors' code
    net_arch: list[int] = field(default_factory=lambda: [64, 64])  # policy and value hidden widths (tanh)


@dataclass
class DPDEvalConfig:
    episodes_per_round: int = 5
    final_episodes: int = 100


@dataclass
class DPDConfig(RLRunConfig):
    """`socratic rl dpd`: two peer learners (DQN, DDPG or PPO: `dpd.learner`) on the same task, each distilling
    from the other. `net` and `dqn` are the DQN learners', `ddpg` and `ppo` the continuous-control ones'."""

    name: str = "dpd"
    net: NetConfig = field(default_factory=_teacher_net)
    dqn: DQNConfig = field(default_factory=DQNConfig)
    ddpg: DDPGConfig = field(default_factory=DDPGConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpd: DPDSettings = field(default_factory=DPDSettings)
    eval: DPDEvalConfig = field(default_factory=DPDEvalConfig)

    @property
    def n_timesteps(self) -> int:
        """Environment steps of each learner: `<dpd.learner>.n_timesteps`."""
        return int(getattr(self, self.dpd.learner).n_timesteps)

    @property
    def rounds(self) -> int:
        """The run's epochs: rounds of `dpd.round_steps` steps until `n_timesteps` (the last may be shorter)."""
        return math.ceil(self.n_timesteps / self.dpd.round_steps)


Config = TypeVar("Config", DistillConfig, TrainTeacherConfig, DPDConfig)


# ----------------------------------------------------------------------------------------------- checks
def _check_env(env: EnvConfig) -> None:
    check_choice("env.suite", env.suite, tuple(suites()))
    if not env.game:
        raise ConfigError("env.game is required")
    check_positive({"env.num_envs": env.num_envs, "env.eval_num_envs": env.eval_num_envs,
               "env.max_episode_steps": env.max_episode_steps})


def _check_net(key: str, net: NetConfig) -> None:
    from socratic.rl.networks import ARCHS, POLICY_ARCHS

    if net.arch is not None:
        check_choice(f"{key}.arch", net.arch, (*ARCHS, *POLICY_ARCHS))
    check_positive({f"{key}.layers": net.layers})
    if len(net.convs) != 3 or any(c <= 0 for c in net.convs):
        raise ConfigError(f"{key}.convs must be three positive widths [c1, c2, c3], got {net.convs}")
    check_positive({f"{key}.hidden": net.hidden})


def _check_prob(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key} must be a probability in [0, 1], got {value}")


def _check_dqn(dqn: DQNConfig) -> None:
    check_positive({f"dqn.{k}": getattr(dqn, k) for k in ("n_timesteps", "learning_rate", "buffer_size", "batch_size",
                                                       "train_freq", "target_update_interval", "max_grad_norm")})
    check_non_negative({"dqn.learning_starts": dqn.learning_starts})
    if not 0 < dqn.gamma <= 1:
        raise ConfigError(f"dqn.gamma must be in (0, 1], got {dqn.gamma}")
    if dqn.gradient_steps == 0 or dqn.gradient_steps < -1:
        raise ConfigError(f"dqn.gradient_steps must be > 0 or -1 (as many as environment steps), "
                          f"got {dqn.gradient_steps}")
    for key in ("exploration_fraction", "exploration_initial_eps", "exploration_final_eps"):
        _check_prob(f"dqn.{key}", getattr(dqn, key))


SCHEDULES = ("multistep", "cosine", "constant")
_IMAGE_ONLY_RUNTIME = ("precision", "channels_last", "sync_bn", "find_unused_parameters", "eval_every")


def _check_da(da: RLDAConfig) -> None:
    try:
        da.check("da")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if da.clamp is not None:
        raise ConfigError("da.clamp is not used on RL states (the perturbed states are not clamped): remove it")
    if da.target not in ("mean", 0):
        raise ConfigError(f"da.target: policy distillation has one teacher; use 'mean' or 0, got {da.target!r}")


def _check_runtime(runtime: RLRuntimeConfig) -> None:
    check_positive({"runtime.num_threads": runtime.num_threads})
    try:
        runtime.check("runtime")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    defaults = RLRuntimeConfig()
    for key in _IMAGE_ONLY_RUNTIME:
        if getattr(runtime, key) != getattr(defaults, key):
            raise ConfigError(f"runtime.{key} is not used by the RL commands (fp32 Q-networks, one process): "
                              f"remove it")


def resolve_dpd(config: "DPDConfig") -> None:
    """Fill the `dpd` keys left at None with the learner's defaults (`DPD_DEFAULTS`), in place."""
    dpd = config.dpd
    check_choice("dpd.learner", dpd.learner, DPD_LEARNERS)
    for key, value in DPD_DEFAULTS[dpd.learner].items():
        if getattr(dpd, key) is None:
            setattr(dpd, key, config.ppo.learning_rate if (dpd.learner, key) == ("ppo", "lr") else value)


def _check_dpd(config: "DPDConfig") -> None:
    from socratic.rl.envs import suite_meta
    from socratic.rl.losses import POLICY_LOSSES

    resolve_dpd(config)
    dpd, learner = config.dpd, config.dpd.learner
    continuous_suite = suite_meta(config.env.suite, "arch") == "mlp"
    if (learner != "dqn") != continuous_suite:
        wanted = "ddpg or ppo" if continuous_suite else "dqn"
        raise ConfigError(f"dpd.learner: {learner} does not fit env.suite {config.env.suite} "
                          f"({'continuous' if continuous_suite else 'discrete'} actions): use {wanted}")
    allowed = {"dqn": DISADVANTAGES, "ddpg": ("peer_action", "value"), "ppo": ("value",)}[learner]
    check_choice("dpd.disadvantage", dpd.disadvantage, allowed)
    check_choice("dpd.sign", dpd.sign, DPD_SIGNS)
    check_positive({"dpd.clip_low": dpd.clip_low, "dpd.batch_size": dpd.batch_size, "dpd.lr": dpd.lr,
               "dpd.round_steps": dpd.round_steps, "dpd.memory_size": dpd.memory_size})
    check_non_negative({"dpd.beta": dpd.beta})
    if dpd.clip_high <= dpd.clip_low:
        raise ConfigError(f"dpd.clip_high must be > dpd.clip_low, got {dpd.clip_high} <= {dpd.clip_low}")
    check_positive({"eval.episodes_per_round": config.eval.episodes_per_round,
               "eval.final_episodes": config.eval.final_episodes})
    if learner == "dqn":
        _check_net("net", config.net)
        _check_dqn(config.dqn)
        check_choice("dpd.loss", dpd.loss, POLICY_LOSSES)
        check_positive({"dpd.temperature": dpd.temperature})
        if dpd.every is not None:
            raise ConfigError("dpd.every is not used by DQN learners (one distillation step after every TD update): "
                              "remove it")
        return
    check_positive({"dpd.every": dpd.every})
    section = getattr(config, learner)
    positive = {"ddpg": ("n_timesteps", "learning_rate", "buffer_size", "batch_size", "tau", "train_freq",
                         "gradient_steps"),
                "ppo": ("n_timesteps", "learning_rate", "n_steps", "batch_size", "n_epochs", "clip_range",
                        "max_grad_norm")}[learner]
    check_positive({f"{learner}.{k}": getattr(section, k) for k in positive})
    if not 0 < section.gamma <= 1:
        raise ConfigError(f"{learner}.gamma must be in (0, 1], got {section.gamma}")
    if not section.net_arch or any(w <= 0 for w in section.net_arch):
        raise ConfigError(f"{learner}.net_arch must be a list of positive widths, got {section.net_arch}")
    if learner == "ddpg":
        check_non_negative({"ddpg.learning_starts": section.learning_starts, "ddpg.noise_std": section.noise_std})
        if section.tau > 1:
            raise ConfigError(f"ddpg.tau must be in (0, 1], got {section.tau}")
        step = section.train_freq
    else:
        check_non_negative({"ppo.ent_coef": section.ent_coef, "ppo.vf_coef": section.vf_coef})
        if not 0 <= section.gae_lambda <= 1:
            raise ConfigError(f"ppo.gae_lambda must be in [0, 1], got {section.gae_lambda}")
        if section.n_steps % section.batch_size:
            raise ConfigError(f"ppo.batch_size ({section.batch_size}) must divide ppo.n_steps ({section.n_steps})")
        step = section.n_steps
    if dpd.round_steps % step:
        what = "ddpg.train_freq" if learner == "ddpg" else "ppo.n_steps"
        raise ConfigError(f"dpd.round_steps ({dpd.round_steps}) must be a multiple of {what} ({step}): a round "
                          "ends where the learner's own collection phase ends")


def validate_rl(config: Any) -> None:
    """Value checks beyond types, for any of the three RL configs."""
    from socratic.rl.losses import POLICY_LOSSES

    _check_env(config.env)
    if isinstance(config, DistillConfig):
        if not config.teacher.checkpoint:
            raise ConfigError("teacher.checkpoint is required: a .zip saved by Stable-Baselines3 or a .pt state dict "
                              "(train one with `socratic rl train-teacher`)")
        check_choice("teacher.algo", config.teacher.algo, TEACHER_ALGOS)
        if config.teacher.net is not None:
            _check_net("teacher.net", config.teacher.net)
        _check_net("student", config.student)
        check_positive({"collect.states_per_epoch": config.collect.states_per_epoch,
                   "collect.buffer_size": config.collect.buffer_size})
        _check_prob("collect.epsilon", config.collect.epsilon)
        check_non_negative({"collect.action_noise": config.collect.action_noise})
        if config.collect.epsilon >= 1.0:
            raise ConfigError("collect.epsilon must be < 1: random-action states are never stored")
        check_choice("loss.name", config.loss.name, POLICY_LOSSES)
        check_positive({"loss.temperature": config.loss.temperature})
        _check_da(config.da)
        optim = config.optim
        check_choice("optim.optimizer", optim.optimizer, OPTIMIZERS)
        check_choice("optim.schedule", optim.schedule, SCHEDULES)
        check_positive({"optim.epochs": optim.epochs, "optim.batch_size": optim.batch_size, "optim.lr": optim.lr,
                   "optim.max_updates_per_epoch": optim.max_updates_per_epoch})
        check_non_negative({"optim.momentum": optim.momentum, "optim.weight_decay": optim.weight_decay,
                       "optim.warmup_epochs": optim.warmup_epochs, "optim.min_lr": optim.min_lr})
        check_positive({"eval.episodes_per_epoch": config.eval.episodes_per_epoch,
                   "eval.final_episodes": config.eval.final_episodes})
        check_non_negative({"eval.teacher_episodes": config.eval.teacher_episodes})
    elif isinstance(config, TrainTeacherConfig):
        check_choice("algo", config.algo, TEACHER_TRAIN_ALGOS)
        if config.algo == "dqn":
            _check_net("net", config.net)
            _check_dqn(config.dqn)
            if config.sb3 != SB3TeacherConfig():
                raise ConfigError("sb3.* is for algo ppo, sac or td3; a DQN teacher takes dqn.* and net.*")
        else:
            sb3 = config.sb3
            check_positive({"sb3.n_timesteps": sb3.n_timesteps})
            check_non_negative({"sb3.action_noise": sb3.action_noise})
            if not sb3.net_arch or any(not isinstance(w, int) or w <= 0 for w in sb3.net_arch):
                raise ConfigError(f"sb3.net_arch must be a list of positive layer widths, got {sb3.net_arch}")
            for key in ("policy_kwargs", "env", "policy", "seed", "device", "verbose", "action_noise"):
                if key in sb3.hyperparams:
                    raise ConfigError(f"sb3.hyperparams.{key} is set by socratic (sb3.net_arch, env.*, seed, "
                                      "runtime.device, sb3.action_noise): remove it")
            if config.dqn != DQNConfig() or config.net != _teacher_net():
                raise ConfigError(f"dqn.* and net.* are for algo dqn; a {config.algo.upper()} teacher takes sb3.*")
        check_positive({"eval.every_steps": config.eval.every_steps, "eval.episodes": config.eval.episodes,
                   "eval.final_episodes": config.eval.final_episodes})
    elif isinstance(config, DPDConfig):
        _check_dpd(config)
    _check_runtime(config.runtime)
    check_choice("search.direction", config.search.direction, ("maximize", "minimize"))


def rl_config_from_dict(cls: type[Config], values: dict) -> Config:
    """Build and validate one of `DistillConfig`, `TrainTeacherConfig`, `DPDConfig` from plain data."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(values).__name__}")
    config = build_dataclass(cls, values, "")
    validate_rl(config)
    return config


def load_rl_config(cls: type[Config], path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (defaults when `path` is None), apply dotted overrides, validate."""
    values = read_yaml(path) if path is not None else {}
    values = apply_overrides(values, list(overrides or []))
    return rl_config_from_dict(cls, values)


def rl_config_to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def save_rl_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(rl_config_to_dict(config), sort_keys=False))


__all__ = [
    "CollectConfig", "DDPGConfig", "DPDConfig", "DPDEvalConfig", "DPDSettings", "DPD_DEFAULTS", "DQNConfig",
    "PPOConfig", "DistillConfig", "EnvConfig",
    "LossConfig", "NetConfig", "RLDAConfig", "RLRunConfig", "RLEvalConfig", "RLOptimConfig", "RLRuntimeConfig",
    "RLSearchConfig", "SB3TeacherConfig", "TEACHER_TRAIN_ALGOS", "TeacherEvalConfig",
    "TeacherSourceConfig", "TrainTeacherConfig", "load_rl_config", "rl_config_from_dict", "rl_config_to_dict",
    "resolve_dpd", "save_rl_config", "validate_rl",
]
