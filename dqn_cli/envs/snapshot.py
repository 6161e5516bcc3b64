"""The training envs' state, for a checkpoint: plain data (tensors, lists, numbers) only.

Classic-control envs (Gymnasium's ``classic_control``: CartPole, Acrobot, MountainCar, Pendulum's
kin) hold their whole simulator in a few attributes, and Atari envs on the ``sync`` and ``async``
backends expose theirs as ``resume_state`` (the emulator's serialized state and the wrapper's;
:class:`dqn_cli.envs.atari._Preprocessing`), so their episodes continue exactly across a resume
(Atari: without sticky actions, see :func:`dqn_cli.envs.atari.restores_exactly`). Each env kind's
module captures and restores its own (``capture_envs`` / ``restore_envs``, called through
:func:`dqn_cli.envs.vector.capture_envs`); the conversions they share are here. Other envs
(MinAtar, whose state is not known to be plain data; the C++ threads of the ``ale`` and
``envpool`` backends) are not captured and start fresh episodes (docs/resume.md says what
continues, and when a resume is exact).
"""

from __future__ import annotations

import numpy as np
import torch


def generator(state: dict) -> np.random.Generator:
    """A numpy Generator in ``state`` (a ``bit_generator.state`` dict, as saved)."""
    g = np.random.Generator(getattr(np.random, state["bit_generator"])())
    g.bit_generator.state = state
    return g


def plain_value(value):
    """A numpy array or sequence as a tensor, a numpy scalar as a number: checkpoint data."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, (tuple, list)):
        return torch.from_numpy(np.asarray(value).copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def array_value(value):
    """Back from :func:`plain_value`: a tensor as a numpy array."""
    return value.numpy().copy() if isinstance(value, torch.Tensor) else value
