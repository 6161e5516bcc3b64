"""A tiny deterministic env whose observations say which episode and step they are."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

TERMINATE_AT = 3  # odd episodes terminate after this many steps
TIME_LIMIT = 5  # even episodes run into the TimeLimit (truncation)


class ChainEnv(gym.Env):
    """obs = [episode_id, t] (float32); reward = 1 + t; two actions, ignored.

    episode_id = 1000 * (seed % 10_000) + episode number, so ids are unique across envs
    (run seeds are 63-bit; the fold keeps ids exact in float32).
    Odd-numbered episodes terminate after TERMINATE_AT steps; even ones never
    terminate and are cut by the TimeLimit wrapper after TIME_LIMIT steps.
    """

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.base = 0
        self.episode = -1
        self.t = 0

    def _obs(self):
        return np.array([self.base * 1000 + self.episode, self.t], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.base = seed % 10_000
            self.episode = -1
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = 1.0 + self.t
        self.t += 1
        terminated = self.episode % 2 == 1 and self.t >= TERMINATE_AT
        return self._obs(), reward, terminated, False, {}


def register() -> str:
    env_id = "FakeChain-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=ChainEnv, max_episode_steps=TIME_LIMIT)
    return env_id
