"""A package-like module that registers its env id on import, as third-party env packages do:
`dqn train env=classic env.imports=[corridor_env] env.id=TestCorridor-v0`."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    """Walk right along 6 cells: reward 1 at the end (terminated), -0.01 per step."""

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.position = 0

    def _obs(self):
        return np.array([self.position / 5, 1.0], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return self._obs(), {}

    def step(self, action):
        self.position = max(0, self.position + (1 if action == 1 else -1))
        done = self.position == 5
        return self._obs(), 1.0 if done else -0.01, done, False, {}


if "TestCorridor-v0" not in gym.registry:
    gym.register("TestCorridor-v0", entry_point=Corridor, max_episode_steps=50)
