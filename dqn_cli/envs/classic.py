"""Classic control, and any Gymnasium env with a flat Box observation and Discrete actions
(``env=classic``, ``env.id=...``): ``gym.make`` by id, after importing ``env.imports``.

One env kind of :data:`dqn_cli.envs.vector.KINDS`: :func:`describe`, :func:`make_env`,
:func:`make_vector_env` (``sync``/``async`` Gymnasium vector envs, or EnvPool's), and
:func:`capture_envs` / :func:`restore_envs` of Gymnasium's classic-control simulators for an exact
resume.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from dqn_cli.config import ConfigError, EnvConfig
from dqn_cli.envs.snapshot import array_value, generator, plain_value
from dqn_cli.envs.spec import EnvSpec
from dqn_cli.envs.workers import gymnasium_vector_env


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


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One env of ``cfg.id``; top level so AsyncVectorEnv can pickle a partial of it (its worker
    imports ``cfg.imports`` first, so ids registered on import exist there too)."""
    import_env_modules(cfg.imports)
    kwargs: dict[str, Any] = {}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    return gym.make(cfg.id, **kwargs)


def describe(cfg: EnvConfig) -> EnvSpec:
    """Check the env exists and suits DQN; return its spec. Raises ConfigError.

    Makes one env in this process (no subprocess), so bad input is refused
    before any worker starts.
    """
    try:
        env = make_env(cfg)
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
    """``num_envs`` envs on ``cfg.vectorization``'s backend, autoreset SAME_STEP; not yet reset.
    Training and evaluation envs are alike here but for the latter's :class:`~dqn_cli.envs.workers.Pausable`
    (``seed`` is not used)."""
    if cfg.vectorization == "envpool":
        from dqn_cli.envs.envpool_backend import classic_vector_env

        return classic_vector_env(cfg, num_envs)
    return gymnasium_vector_env(
        [functools.partial(make_env, cfg) for _ in range(num_envs)], cfg.vectorization, pausable=not training
    )


# ------------------------------------------------------------ the envs' state, for a checkpoint
_EXACT_MODULE = "gymnasium.envs.classic_control."
_SIM_ATTRS = ("state", "steps_beyond_terminated")  # a classic-control simulator's whole mutable state


def capture_envs(envs, stacker, cfg: EnvConfig) -> dict | None:
    """Gymnasium classic-control simulators (their whole state is a few plain attributes), their
    generators and time limits, and the stacked observations; None for other envs and EnvPool's."""
    if cfg.vectorization == "envpool":
        return None
    units = envs.get_attr("unwrapped")  # async: the small env objects pickled back from the workers
    if not all(type(u).__module__.startswith(_EXACT_MODULE) for u in units):
        return None
    sim = {}
    for attr in _SIM_ATTRS:
        if all(hasattr(u, attr) for u in units):
            sim[attr] = [plain_value(getattr(u, attr)) for u in units]
    limited = all(envs.call("has_wrapper_attr", "_elapsed_steps"))
    return {
        "kind": "classic_control",
        "env_type": type(units[0]).__name__,
        "sim": sim,
        "np_random": [u.np_random.bit_generator.state for u in units],
        "elapsed_steps": [int(s) for s in envs.get_attr("_elapsed_steps")] if limited else None,
        "obs": torch.from_numpy(np.array(stacker.obs, copy=True)),
    }


def restore_envs(envs, stacker, saved: dict) -> bool:
    """:func:`capture_envs`'s state back into envs of the same type (already reset)."""
    if saved.get("kind") != "classic_control":
        return False
    units = envs.get_attr("unwrapped")
    if type(units[0]).__name__ != saved["env_type"] or len(units) != len(saved["np_random"]):
        return False
    if tuple(saved["obs"].shape) != stacker.obs.shape:
        return False
    for attr, values in saved["sim"].items():
        envs.set_attr(attr, [array_value(v) for v in values])
    envs.set_attr("np_random", [generator(state) for state in saved["np_random"]])
    if saved["elapsed_steps"] is not None:
        envs.set_attr("_elapsed_steps", list(saved["elapsed_steps"]))
    stacker.obs[...] = saved["obs"].numpy()
    return True
