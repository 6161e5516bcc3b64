"""Environments: picklable factories, vector envs, frame stacking, episode statistics.

The trainer drives every backend the same way (Gymnasium 1.x vector envs, ``autoreset_mode``):

* vector envs run with ``autoreset_mode=SAME_STEP``: when an env ends, the
  step returns the *reset* observation and the true final observation sits in
  ``info["final_obs"]``, so no stored transition spans two episodes;
* envs return single frames; :class:`FrameStacker` keeps the agent's stacked
  input, restarting a stack at each new episode (Atari frames cross process
  boundaries once, not four times);
* every env is seeded once, ``reset(seed=seed + i)``, and so is its action space.
"""

from __future__ import annotations

import functools
from typing import Callable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from dqn_cli.config import EnvConfig
from dqn_cli.envs import atari, classic, minatar
from dqn_cli.envs.spec import EnvSpec

# ------------------------------------------------------------------ env kinds
# Each kind (``env.kind``) is a module with the same three functions:
#   describe(cfg) -> EnvSpec                 check the env in this process, before any worker starts;
#   make_env(cfg, render_mode=None) -> Env   one env (top level, picklable: async workers call it;
#                                            render_mode="rgb_array" films it);
#   make_vector_env(cfg, num_envs, seed, training) -> VectorEnv   on cfg.vectorization's backend,
#                                            the training or the evaluation protocol, not yet reset.
# A new kind is a module with those functions and a line here (and its backends in config.py).
KINDS = {"classic": classic, "minatar": minatar, "atari": atari}


def env_kind(cfg: EnvConfig):
    """The module of ``cfg.kind`` (config.py has checked the name)."""
    return KINDS[cfg.kind]


def capture_envs(envs, stacker, env_cfg: EnvConfig) -> dict | None:
    """The training envs' simulator state and the agent's stacked observations, as tensors,
    lists and numbers (the env kind's ``capture_envs``); None where the envs cannot be restored
    exactly (envs.snapshot says which). Call between steps (the vector env idle)."""
    capture = getattr(env_kind(env_cfg), "capture_envs", None)
    return None if capture is None else capture(envs, stacker, env_cfg)


def restore_envs(envs, stacker, saved: dict | None) -> bool:
    """Put the envs (already reset) and the frame stacks back where :func:`capture_envs`
    found them (the ``restore_envs`` of the kind whose state ``saved`` is: each checks its own
    tag and the envs it is given); False (nothing changed) when none restores it."""
    if not saved:
        return False
    kinds = (module for module in KINDS.values() if hasattr(module, "restore_envs"))
    return any(module.restore_envs(envs, stacker, saved) for module in kinds)


def env_factory(cfg: EnvConfig, render_mode: str | None = None) -> Callable[[], gym.Env]:
    """A picklable zero-argument callable making one (unvectorised) env."""
    return functools.partial(env_kind(cfg).make_env, cfg, render_mode=render_mode)


def describe_env(cfg: EnvConfig) -> EnvSpec:
    """Check the env exists and suits DQN; return its spec, from one env made in this process
    (no subprocess), so bad input is refused before any worker starts. Raises ConfigError."""
    return env_kind(cfg).describe(cfg)


def make_vector_env(cfg: EnvConfig, num_envs: int, seed: int, training: bool = True) -> VectorEnv:
    """``num_envs`` envs stepped together, autoreset SAME_STEP, the action space seeded; not yet reset.

    ``training=False`` builds the evaluation protocol: for Atari the full game
    (no episodic life) with raw rewards.
    """
    envs = env_kind(cfg).make_vector_env(cfg, num_envs, seed, training)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP, "the loop is written for SAME_STEP autoreset"
    envs.action_space.seed(seed)
    return envs


# -------------------------------------------------------------- frame stacks
class FrameStacker:
    """The agent's stacked observations, (E, S, *frame_shape), one stack per env.

    A new episode's stack is its first frame repeated S times (Gymnasium's
    "reset" padding), the same rule the replay buffer uses to rebuild stacks.
    """

    def __init__(self, num_envs: int, frame_stack: int, frame_shape: tuple, dtype):
        self.obs = np.zeros((num_envs, frame_stack, *frame_shape), dtype=dtype)

    def reset(self, frames: np.ndarray) -> np.ndarray:
        """frames: (E, *frame_shape), the first frames of new episodes."""
        self.obs[:] = frames[:, None]
        return self.obs

    def step(self, frames: np.ndarray, new_episode: np.ndarray) -> np.ndarray:
        """Push the newest frames; envs in ``new_episode`` (E,) bool restart their stack."""
        if self.obs.shape[1] > 1:
            self.obs[:, :-1] = self.obs[:, 1:]
        self.obs[:, -1] = frames
        if new_episode.any():
            self.obs[new_episode] = frames[new_episode][:, None]
        return self.obs


# --------------------------------------------------------- episode statistics
class EpisodeStats:
    """Returns and lengths of the episodes the envs play, counted in the trainer (Gymnasium's vector RecordEpisodeStatistics miscounted under SAME_STEP autoreset in released versions).

    ``update(rewards, game_over)`` adds one vector step; it returns the
    (return, length) pairs of the episodes that finished at this step.
    Rewards are the raw (unclipped) rewards; ``game_over`` marks the end of the
    real episode (for Atari with episodic life, the game, not a life).
    """

    def __init__(self, num_envs: int):
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.episodes = 0

    def update(self, rewards: np.ndarray, game_over: np.ndarray) -> list[tuple[float, int]]:
        self.returns += rewards
        self.lengths += 1
        done = np.flatnonzero(game_over)
        finished = [(float(self.returns[i]), int(self.lengths[i])) for i in done]
        self.returns[done] = 0.0
        self.lengths[done] = 0
        self.episodes += len(finished)
        return finished

    def drop_open(self) -> None:
        """Forget the episodes under way (their envs were restarted: they never finish)."""
        self.returns[:] = 0.0
        self.lengths[:] = 0

    def state_dict(self) -> dict:
        return {"returns": self.returns.tolist(), "lengths": self.lengths.tolist(), "episodes": self.episodes}

    def load_state_dict(self, state: dict) -> None:
        self.returns[:] = state["returns"]
        self.lengths[:] = state["lengths"]
        self.episodes = int(state["episodes"])
