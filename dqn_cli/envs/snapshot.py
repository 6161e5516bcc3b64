"""The training envs' state, for a checkpoint: captured between steps and restored on resume.

Classic-control envs (Gymnasium's ``classic_control``: CartPole, Acrobot, MountainCar, Pendulum's
kin) hold their whole simulator in a few attributes, and Atari envs on the ``sync`` and ``async``
backends expose theirs as ``resume_state`` (the emulator's serialized state and the wrapper's;
:class:`dqn_cli.envs.atari._Preprocessing`), so their episodes continue exactly across a resume.
Other envs (MinAtar, the C++ threads of the ``ale`` and ``envpool`` backends, whose state Python
cannot read) return None here and start fresh episodes (docs/resume.md says what continues, and
when a resume is exact).
"""

from __future__ import annotations

import numpy as np
import torch

from dqn_cli.config import EnvConfig

_EXACT_MODULE = "gymnasium.envs.classic_control."
_SIM_ATTRS = ("state", "steps_beyond_terminated")  # a classic-control simulator's whole mutable state


def capture_envs(envs, stacker, env_cfg: EnvConfig) -> dict | None:
    """The training envs' simulator state and the agent's stacked observations, as
    tensors, lists and numbers; None where the envs cannot be restored exactly
    (see the module docstring). Call between steps (the vector env idle)."""
    if env_cfg.kind == "atari" and env_cfg.vectorization in ("sync", "async"):
        return _capture_atari(envs, stacker)
    if env_cfg.kind != "classic" or env_cfg.vectorization == "envpool":
        return None
    units = envs.get_attr("unwrapped")  # async: the small env objects pickled back from the workers
    if not all(type(u).__module__.startswith(_EXACT_MODULE) for u in units):
        return None
    sim = {}
    for attr in _SIM_ATTRS:
        if all(hasattr(u, attr) for u in units):
            sim[attr] = [_plain_value(getattr(u, attr)) for u in units]
    limited = all(envs.call("has_wrapper_attr", "_elapsed_steps"))
    return {
        "kind": "classic_control",
        "env_type": type(units[0]).__name__,
        "sim": sim,
        "np_random": [u.np_random.bit_generator.state for u in units],
        "elapsed_steps": [int(s) for s in envs.get_attr("_elapsed_steps")] if limited else None,
        "obs": torch.from_numpy(np.array(stacker.obs, copy=True)),
    }


def restore_envs(envs, stacker, saved: dict | None) -> bool:
    """Put the envs (already reset) and the frame stacks back where :func:`capture_envs`
    found them; False (nothing changed) when there is nothing to restore."""
    if saved and saved.get("kind") == "atari":
        return _restore_atari(envs, stacker, saved)
    if not saved or saved.get("kind") != "classic_control":
        return False
    units = envs.get_attr("unwrapped")
    if type(units[0]).__name__ != saved["env_type"] or len(units) != len(saved["np_random"]):
        return False
    if tuple(saved["obs"].shape) != stacker.obs.shape:
        return False
    for attr, values in saved["sim"].items():
        envs.set_attr(attr, [_array_value(v) for v in values])
    generators = []
    for state in saved["np_random"]:
        g = np.random.Generator(getattr(np.random, state["bit_generator"])())
        g.bit_generator.state = state
        generators.append(g)
    envs.set_attr("np_random", generators)
    if saved["elapsed_steps"] is not None:
        envs.set_attr("_elapsed_steps", list(saved["elapsed_steps"]))
    stacker.obs[...] = saved["obs"].numpy()
    return True


def _capture_atari(envs, stacker) -> dict:
    """Each env's ``resume_state`` (its game's emulator and wrapper), the protocol's lives and the
    stacked observations, as tensors, strings and numbers."""
    base = envs.unwrapped  # the Sync/AsyncVectorEnv under the protocol's wrapper
    states = []
    for state in base.get_attr("resume_state"):
        states.append({k: _plain_value(v) if isinstance(v, np.ndarray) else v for k, v in state.items()})
    return {
        "kind": "atari",
        "games": list(base.get_attr("game_id")),
        "states": states,
        "lives": torch.from_numpy(np.array(envs.lives, copy=True)),
        "obs": torch.from_numpy(np.array(stacker.obs, copy=True)),
    }


def _restore_atari(envs, stacker, saved: dict) -> bool:
    base = envs.unwrapped
    if list(base.get_attr("game_id")) != saved["games"] or tuple(saved["obs"].shape) != stacker.obs.shape:
        return False
    base.set_attr("resume_state", [{k: _array_value(v) for k, v in state.items()} for state in saved["states"]])
    envs.lives[...] = saved["lives"].numpy()
    stacker.obs[...] = saved["obs"].numpy()
    return True


def _plain_value(value):
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, (tuple, list)):
        return torch.from_numpy(np.asarray(value).copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _array_value(value):
    return value.numpy().copy() if isinstance(value, torch.Tensor) else value
