"""The `QNetwork` trunk as a Stable-Baselines3 features extractor (imports stable_baselines3: `rl` extra).

Kept in its own module because SB3 stores the extractor class by its import path in a saved .zip: a DQN
trained by `socratic rl train-teacher` loads wherever `socratic.rl.sb3_extractor` can be imported.
"""

from __future__ import annotations

from collections.abc import Sequence

from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import Tensor

from socratic.rl.networks import QNetwork


class QTrunkExtractor(BaseFeaturesExtractor):
    """conv-conv-conv-fc of a `QNetwork`; with `net_arch=[]` SB3 adds the linear Q head, so the SB3 q_net is
    exactly a `QNetwork` (see `socratic.rl.teachers.sb3_to_qnetwork`). Scaling by `input_scale` happens here:
    train with `normalize_images=False` so SB3 does not divide by 255 a second time."""

    def __init__(self, observation_space, arch: str = "nature", convs: Sequence[int] = (32, 64, 64),  # noqa: ANN001
                 hidden: int = 512, input_scale: float = 255.0) -> None:
        super().__init__(observation_space, features_dim=int(hidden))
        net = QNetwork(observation_space.shape, 1, arch, convs, hidden, input_scale)
        self.trunk = net.trunk
        self.input_scale = float(input_scale)

    def forward(self, observations: Tensor) -> Tensor:
        return self.trunk(observations.float() / self.input_scale)
