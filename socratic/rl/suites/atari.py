"""Atari (ALE), as in the DA paper's policy-distillation code: `<Game>NoFrameskip-v4` + `AtariPreprocessing`
(noop_max 30, frame_skip 4, 84x84 grayscale, terminal_on_life_loss False, no scaling) + `FrameStackObservation(4)`
-> (4, 84, 84) uint8 in 0..255; episodes are cut at 27,000 agent steps (108,000 frames). `AtariPreprocessing`
resizes with OpenCV. Needs the extras `rl` and `atari` (GPL)."""

from __future__ import annotations

from typing import Any

from socratic.registry import ENV_SUITES
from socratic.rl.envs import EnvSuite, gymnasium, import_extra

FRAME_STACK = 4


@ENV_SUITES.register("atari", max_episode_steps=27_000, input_scale=255.0, arch="nature")
class AtariSuite(EnvSuite):
    def games(self) -> list[str]:
        gym = gymnasium("Atari games")
        ale_py = import_extra("ale_py", "atari", "Atari games")
        import_extra("cv2", "atari", "Atari preprocessing (frame resizing)")
        if not any(k.endswith("NoFrameskip-v4") for k in gym.registry):
            gym.register_envs(ale_py)
        return sorted(k[: -len("NoFrameskip-v4")] for k in gym.registry if k.endswith("NoFrameskip-v4"))

    def env_id(self, game: str) -> str:
        return f"{game}NoFrameskip-v4"

    def make(self, game: str, render_mode: str | None = None) -> Any:
        gym = gymnasium()
        env = gym.make(self.env_id(game), render_mode=render_mode)
        env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84,
                                              terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
        return gym.wrappers.FrameStackObservation(env, FRAME_STACK)
