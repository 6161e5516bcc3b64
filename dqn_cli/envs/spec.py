"""What the rest of the program needs to know about an env, read without starting processes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EnvSpec:
    """What the rest of the program needs to know about an env, read without starting processes.

    frame_shape: shape of one observation frame: (obs_dim,) classic, (84, 84) Atari, (C, 10, 10) MinAtar;
    obs_shape: (frame_stack, *frame_shape)
    frame_dtype: numpy dtype of frames; n_actions: size of the Discrete action space.
    label: the env's canonical name, for summaries and plots.
    """

    frame_shape: tuple
    frame_dtype: np.dtype
    frame_stack: int
    n_actions: int
    action_meanings: list = field(default_factory=list)
    label: str = ""  # the env as users name it, spelled canonically: CartPole-v1, Breakout, MinAtar/SpaceInvaders

    @property
    def obs_shape(self) -> tuple:
        return (self.frame_stack, *self.frame_shape)
