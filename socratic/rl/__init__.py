"""Policy distillation for RL agents: environments, teachers, the state buffer, PD / PD+DA, dual policy distillation.

* Rusu et al. 2016, "Policy Distillation" (ICLR): distil a DQN teacher's Q-values into a smaller network
  from states the teacher visits (`socratic.rl.distill`, losses in `socratic.rl.losses`).
* Wong et al., "A Socratic Approach to Knowledge Distillation" (Disagreement Augmentation, ICCV 2025
  submission), Sec. 3.3 / Table 2: the recipe used by default, and DA on the states
  (`socratic.augment.DisagreementAugmentation`).
* Lai et al. 2020, "Dual Policy Distillation" (IJCAI): two peer learners distilling from each other
  (`socratic.rl.dqn.run_dpd`).

gymnasium, Stable-Baselines3, MinAtar and ale-py are optional extras (`pip install "socratic-kd[rl,minatar]"`,
`"socratic-kd[rl,atari]"`), imported only by the code that needs them; this package imports without them.
"""

from socratic.rl.buffer import StateBuffer
from socratic.rl.config import DistillConfig, DPDConfig, TrainTeacherConfig, load_rl_config
from socratic.rl.errors import MissingExtraError, UnknownGameError
from socratic.rl.losses import POLICY_LOSSES, dpd_weights, policy_kl, policy_loss
from socratic.rl.networks import WIDTH_PRESETS, QNetwork

__all__ = [
    "DPDConfig", "DistillConfig", "MissingExtraError", "POLICY_LOSSES", "QNetwork", "StateBuffer", "TrainTeacherConfig",
    "UnknownGameError", "WIDTH_PRESETS", "dpd_weights", "load_rl_config", "policy_kl", "policy_loss",
]
