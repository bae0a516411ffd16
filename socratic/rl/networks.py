"""Q-networks for teachers and students: the Nature-DQN shape with configurable widths, and a MinAtar shape.

* `nature` (Mnih et al. 2015, "Human-level control through deep reinforcement learning"): conv(C->c1, 8x8, s4)
  - ReLU - conv(c1->c2, 4x4, s2) - ReLU - conv(c2->c3, 3x3, s1) - ReLU - flatten - Linear(->h) - ReLU -
  Linear(h->A), on 84x84 frames. The Nature DQN is (32, 64, 64, 512) (~1.7M parameters with 6 actions);
  Rusu et al. 2016 ("Policy Distillation") shrink it to (16, 32, 32, 256), (16, 16, 16, 128) and
  (16, 16, 16, 64); the DA paper (Wong et al., Sec. 3.3) uses a ~1% student, (8, 8, 8, 32).
* `minatar`: MinAtar frames are 10x10xC, too small for 8x8/4 convolutions, so all three convolutions are 3x3
  with stride 1 and no padding (10 -> 8 -> 6 -> 4), as the MinAtar paper's DQN uses 3x3 stride-1
  convolutions (Young & Tian 2019, one 16-channel layer there). With the same widths the proportions of
  the Atari recipe hold: (32, 64, 64, 512) has ~0.58M parameters, (8, 8, 8, 32) ~6k (about 1%).

Inputs may be uint8, bool or float; `forward` divides by `input_scale` (255 for Atari frames, 1 for MinAtar's
0/1 planes), so states perturbed on their own scale (floats in 0..255) go through unchanged.

* `mlp` (continuous control): `MLPPolicy`, `layers` hidden layers of width `hidden` with ReLU, on float vector
  observations, giving a deterministic action (B, A) or a Gaussian [mean, log std] (B, 2A) in the teacher's
  action parametrisation (`socratic.rl.continuous`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from socratic.config import ConfigError

ARCHS = ("nature", "minatar")  # Q-networks (QNetwork)
POLICY_ARCHS = ("mlp",)  # continuous-action policies (MLPPolicy)

# (conv widths, hidden width). Names follow the DA authors' dqn.py; fractions are of the Nature DQN.
WIDTH_PRESETS: dict[str, tuple[tuple[int, int, int], int]] = {
    "teacher": ((32, 64, 64), 512),  # Nature DQN
    "dqn1": ((16, 32, 32), 256),  # ~25%, Rusu's Dist-KL-net1
    "dqn2": ((16, 16, 16), 128),  # ~7%
    "dqn3": ((16, 16, 16), 64),  # ~4%
    "dqn4": ((8, 8, 8), 32),  # ~1%: the DA paper's student
    "dqn5": ((4, 4, 4), 16),
    "dqn6": ((2, 2, 2), 8),
}

_CONV_SHAPES = {"nature": ((8, 4), (4, 2), (3, 1)), "minatar": ((3, 1), (3, 1), (3, 1))}


class QNetwork(nn.Module):
    """Three convolutions, one hidden fully connected layer and a linear Q-value head (`trunk` + `head`)."""

    def __init__(self, input_shape: Sequence[int], num_actions: int, arch: str = "nature",
                 convs: Sequence[int] = (32, 64, 64), hidden: int = 512, input_scale: float = 255.0) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"arch: '{arch}' is not one of {', '.join(ARCHS)}")
        if len(convs) != 3 or any(int(c) <= 0 for c in convs) or hidden <= 0:
            raise ConfigError(f"convs must be three positive widths and hidden > 0, got convs={list(convs)}, "
                              f"hidden={hidden}")
        if len(input_shape) != 3:
            raise ConfigError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        if num_actions <= 0:
            raise ConfigError(f"num_actions must be > 0, got {num_actions}")
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_actions = int(num_actions)
        self.arch, self.convs, self.hidden = arch, tuple(int(c) for c in convs), int(hidden)
        self.input_scale = float(input_scale)
        layers: list[nn.Module] = []
        channels = self.input_shape[0]
        for width, (kernel, stride) in zip(self.convs, _CONV_SHAPES[arch]):
            layers += [nn.Conv2d(channels, width, kernel, stride), nn.ReLU()]
            channels = width
        convs_only = nn.Sequential(*layers)
        with torch.no_grad():
            try:
                flat = convs_only(torch.zeros(1, *self.input_shape)).numel()
            except RuntimeError as err:
                raise ConfigError(f"arch '{arch}' does not fit inputs of shape {self.input_shape} ({err}); "
                                  f"use 'nature' for 84x84 Atari frames "
                                  f"and 'minatar' for 10x10 MinAtar frames") from err
        self.trunk = nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, self.hidden), nn.ReLU())
        self.head = nn.Linear(self.hidden, self.num_actions)

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x.float() / self.input_scale)

    def forward(self, x: Tensor) -> Tensor:
        """Q-values, shape (B, num_actions), for states (B, C, H, W) on their own scale."""
        return self.head(self.features(x))

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this network (stored in checkpoint metadata)."""
        return {"arch": self.arch, "convs": list(self.convs), "hidden": self.hidden,
                "input_shape": list(self.input_shape), "num_actions": self.num_actions,
                "input_scale": self.input_scale}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "QNetwork":
        return cls(spec["input_shape"], spec["num_actions"], spec["arch"], spec["convs"], spec["hidden"],
                   spec["input_scale"])


class MLPPolicy(nn.Module):
    """A continuous-action policy: flatten - (Linear - ReLU) x len(hidden) - Linear(-> A or 2A).

    `gaussian`: the outputs are [mean, log std] (log std clamped to SB3's [-20, 2]); else the action itself.
    `action_map` and the action bounds say how a mean becomes an environment action (`act`); see
    `socratic.rl.continuous`.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int] = (64, 64), gaussian: bool = True,
                 action_map: str = "clip", action_low: Sequence[float] = (), action_high: Sequence[float] = ()
                 ) -> None:
        super().__init__()
        from socratic.rl.continuous import ACTION_MAPS

        if action_map not in ACTION_MAPS:
            raise ConfigError(f"action_map: '{action_map}' is not one of {', '.join(ACTION_MAPS)}")
        if obs_dim <= 0 or action_dim <= 0 or any(int(h) <= 0 for h in hidden):
            raise ConfigError(f"an MLP policy needs positive sizes, got obs {obs_dim}, actions {action_dim}, "
                              f"hidden {list(hidden)}")
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.gaussian, self.action_map = bool(gaussian), action_map
        layers: list[nn.Module] = [nn.Flatten()]
        width = self.obs_dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, self.action_dim * (2 if self.gaussian else 1)))
        self.net = nn.Sequential(*layers)
        low = torch.tensor(list(action_low) or [-1.0] * self.action_dim, dtype=torch.float32)
        high = torch.tensor(list(action_high) or [1.0] * self.action_dim, dtype=torch.float32)
        self.register_buffer("action_low", low, persistent=False)
        self.register_buffer("action_high", high, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x.float())
        if not self.gaussian:
            return out
        from socratic.rl.continuous import LOG_STD_MAX, LOG_STD_MIN

        mean, log_std = out[:, :self.action_dim], out[:, self.action_dim:]
        return torch.cat([mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)], dim=1)

    @torch.no_grad()
    def act(self, x: Tensor) -> Tensor:
        """The greedy (mean) environment action, (B, A)."""
        from socratic.rl.continuous import to_env_action

        return to_env_action(self(x)[:, :self.action_dim], self.action_map, self.action_low, self.action_high)

    def spec(self) -> dict[str, Any]:
        return {"arch": "mlp", "obs_dim": self.obs_dim, "action_dim": self.action_dim, "hidden": list(self.hidden),
                "gaussian": self.gaussian, "action_map": self.action_map,
                "action_low": self.action_low.tolist(), "action_high": self.action_high.tolist()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "MLPPolicy":
        return cls(spec["obs_dim"], spec["action_dim"], spec["hidden"], spec["gaussian"], spec["action_map"],
                   spec["action_low"], spec["action_high"])


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def greedy_actions(net: nn.Module, states: Tensor) -> Tensor:
    return net(states).argmax(dim=1)


__all__ = ["ARCHS", "MLPPolicy", "POLICY_ARCHS", "QNetwork", "WIDTH_PRESETS", "count_parameters", "greedy_actions"]
