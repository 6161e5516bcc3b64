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
import importlib
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

from dqn_cli.config import ConfigError, EnvConfig
from dqn_cli.envs.spec import EnvSpec


# ------------------------------------------------------------------ factories
def import_env_modules(modules) -> None:
    """Import the modules of ``env.imports`` (packages that register their Gymnasium ids on import).

    Raises ConfigError naming a module that cannot be imported."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:  # ImportError, or the module failed while registering
            raise ConfigError(
                f"env.imports: cannot import {name!r} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "it must be importable here, e.g. installed with pip install -e ."
            ) from None


def make_classic_env(
    env_id: str, max_episode_steps: int | None = None, render_mode: str | None = None, imports: tuple[str, ...] = ()
) -> gym.Env:
    """One Gymnasium env; top level so AsyncVectorEnv can pickle a partial of it (its worker imports
    ``imports`` first, so ids registered on import exist there too)."""
    import_env_modules(imports)
    kwargs: dict[str, Any] = {}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    return gym.make(env_id, **kwargs)


def env_factory(cfg: EnvConfig, training: bool, render_mode: str | None = None) -> Callable[[], gym.Env]:
    """A picklable zero-argument callable making one (unvectorised) env."""
    if cfg.kind == "atari":
        from dqn_cli.envs import atari

        return functools.partial(atari.make_atari_env, cfg, render_mode=render_mode)
    if cfg.kind == "minatar":
        from dqn_cli.envs import minatar

        return functools.partial(minatar.make_minatar_env, cfg, render_mode=render_mode)
    return functools.partial(make_classic_env, cfg.id, cfg.max_episode_steps, render_mode, tuple(cfg.imports))


def describe_env(cfg: EnvConfig) -> EnvSpec:
    """Check the env exists and suits DQN; return its spec. Raises ConfigError.

    Makes one env in this process (no subprocess), so bad input is refused
    before any worker starts.
    """
    if cfg.kind == "atari":
        from dqn_cli.envs import atari

        return atari.describe(cfg)
    if cfg.kind == "minatar":
        from dqn_cli.envs import minatar

        return minatar.describe(cfg)
    try:
        env = make_classic_env(cfg.id, cfg.max_episode_steps, imports=tuple(cfg.imports))
    except gym.error.Error as err:
        raise ConfigError(
            f"env.id={cfg.id!r} is not a registered Gymnasium env ({err}); e.g. env.id=Acrobot-v1, "
            "or env.imports=[my_package] for a package that registers it on import"
        ) from None
    except ImportError as err:  # env.id=module:Id, whose module Gymnasium imports to register the id
        raise ConfigError(
            f"env.id={cfg.id!r}: cannot import module {cfg.id.split(':')[0]!r} ({type(err).__name__}); "
            "env.id=module:Id needs an importable module, e.g. installed with pip install -e ."
        ) from None
    try:
        obs_space, act_space = env.observation_space, env.action_space
        if not isinstance(act_space, gym.spaces.Discrete):
            raise ConfigError(
                f"env.id={cfg.id!r} has a {type(act_space).__name__} action space; "
                "DQN needs Discrete actions (e.g. CartPole-v1, Acrobot-v1, MountainCar-v0)"
            )
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise ConfigError(
                f"env.id={cfg.id!r} has observation space {obs_space}; env=classic needs a flat Box "
                "(for Atari use env=atari env.game=NAME)"
            )
        return EnvSpec((obs_space.shape[0],), np.dtype(np.float32), cfg.frame_stack, int(act_space.n), label=cfg.id)
    finally:
        env.close()


def make_vector_env(cfg: EnvConfig, num_envs: int, seed: int, training: bool = True) -> VectorEnv:
    """``num_envs`` envs stepped together, autoreset SAME_STEP; not yet reset.

    ``training=False`` builds the evaluation protocol: for Atari the full game
    (no episodic life) with raw rewards.
    """
    if cfg.kind == "atari":
        from dqn_cli.envs import atari

        envs = atari.make_vector_env(cfg, num_envs, seed, training)
    elif cfg.vectorization == "envpool" and cfg.kind == "classic":
        from dqn_cli.envs.envpool_backend import classic_vector_env

        envs = classic_vector_env(cfg, num_envs)
    else:
        fns = [env_factory(cfg, training) for _ in range(num_envs)]
        if cfg.vectorization == "async":
            envs = AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn")
        else:
            envs = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
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
