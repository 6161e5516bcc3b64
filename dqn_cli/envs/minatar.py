"""MinAtar (Young & Tian 2019): five miniature Atari games with 10x10 binary images.

The ``minatar`` package (GPL-3, the optional extra ``pip install 'dqn-cli[minatar]'``)
registers Gymnasium ids ``MinAtar/<Game>-v0`` (all six actions, as in the paper's
results) and ``-v1`` (the game's minimal action set) with
``minatar.gym.register_envs()``. Here:

* observations become channels-first uint8 frames ``(C, 10, 10)`` with values
  0/1 (C = 4 for Breakout and Asterix, 6 SpaceInvaders, 7 Freeway,
  10 Seaquest), so replay stores 100 * C bytes per frame, never float32;
* ``env.full_action_space=true`` (the preset's default) picks ``-v0``, false ``-v1``;
* sticky actions are MinAtar's own (``env.sticky_action_prob``, 0.1 by default
  in the paper and the preset); there is no frame skip, stacking or clipping;
* ``render()`` draws the channels as a colour-mapped picture, ``CELL`` pixels
  per cell (MinAtar's own rgb render is a 10x10 image drawn through seaborn).

Nothing runs at import time: ``minatar`` is imported inside the functions, so a
missing extra is a one-line ConfigError naming it, and env factories stay
picklable top-level callables for ``spawn`` subprocesses.
"""

from __future__ import annotations

import difflib
import functools
import re
import warnings

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from dqn_cli.config import ConfigError, EnvConfig
from dqn_cli.envs.workers import gymnasium_vector_env

GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")
CELL = 16  # pixels per cell side in rendered frames: 160x160 pictures
MISSING = "env=minatar needs the minatar package (GPL-3): pip install 'dqn-cli[minatar]'"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def resolve_game(game: str) -> str:
    """The CamelCase name of ``game`` (any case, ``space_invaders``, ``space-invaders``).

    Raises ConfigError naming the five games (and the closest) otherwise.
    """
    games = {_key(g): g for g in GAMES}
    hit = games.get(_key(game))
    if hit is not None:
        return hit
    close = [games[k] for k in difflib.get_close_matches(_key(game), list(games), n=2, cutoff=0.5)]
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ConfigError(f"env.game={game!r} is not a MinAtar game; {hint}the games are {', '.join(GAMES)}")


def _register() -> None:
    try:
        import minatar.gym
    except ImportError:
        raise ConfigError(MISSING) from None
    if "MinAtar/Breakout-v0" not in gym.registry:
        minatar.gym.register_envs()


def gym_id(cfg: EnvConfig) -> str:
    return f"MinAtar/{resolve_game(cfg.game)}-v{0 if cfg.full_action_space else 1}"


class ChannelsFirst(gym.ObservationWrapper):
    """(10, 10, C) bool -> (C, 10, 10) uint8; ``render()`` gives an rgb picture of the channels."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, env: gym.Env, render_mode: str | None = None):
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 1, (c, h, w), np.uint8)
        self._render_mode = render_mode
        self._palette = palette(c)

    @property
    def render_mode(self):
        return self._render_mode

    def reset(self, *, seed: int | None = None, options=None):
        """MinAtar seeds a legacy numpy RandomState (32 bits): a 63-bit run seed is folded down."""
        from dqn_cli.runtime import fold_seed

        return super().reset(seed=None if seed is None else fold_seed(seed, 32), options=options)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(np.asarray(observation, dtype=np.uint8), -1, 0))

    def render(self) -> np.ndarray:
        """(10 * CELL, 10 * CELL, 3) uint8: each cell coloured by its highest set channel, black if none."""
        return draw(self.observation(self.env.unwrapped.game.state()), self._palette)


def palette(channels: int) -> np.ndarray:
    """(channels + 1, 3) uint8 colours: black for an empty cell, then one colour per channel.

    The colours are matplotlib's cubehelix map (MinAtar's own display uses
    seaborn's cubehelix palette), evenly spaced and kept away from black.
    """
    from matplotlib import colormaps

    cmap = colormaps["cubehelix"]
    colours = [cmap(0.25 + 0.65 * i / max(channels - 1, 1))[:3] for i in range(channels)]
    return (np.array([(0.0, 0.0, 0.0), *colours]) * 255).round().astype(np.uint8)


def draw(frame: np.ndarray, colours: np.ndarray, cell: int = CELL) -> np.ndarray:
    """frame: (C, H, W) 0/1 -> (H * cell, W * cell, 3) uint8, one colour per cell."""
    c = frame.shape[0]
    index = np.max(frame.astype(np.int64) * np.arange(1, c + 1)[:, None, None], axis=0)  # (H, W), 0 = empty
    picture = colours[index]
    return np.repeat(np.repeat(picture, cell, axis=0), cell, axis=1)


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One MinAtar env emitting (C, 10, 10) uint8 frames; top level and picklable."""
    from dqn_cli.envs.workers import ignore_sigint_in_vector_worker

    ignore_sigint_in_vector_worker()
    _register()
    kwargs = {"sticky_action_prob": float(cfg.sticky_action_prob)}
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(cfg.max_episode_steps)
    with warnings.catch_warnings():  # "-v0 is out of date": v0 is the paper's six-action set, on purpose
        warnings.simplefilter("ignore")
        env = gym.make(gym_id(cfg), disable_env_checker=True, **kwargs)
    return ChannelsFirst(env, render_mode)


def describe(cfg: EnvConfig):
    """The EnvSpec of ``cfg``'s game from one env made in this process. Raises ConfigError."""
    from dqn_cli.envs.spec import EnvSpec

    game = resolve_game(cfg.game)
    env = make_env(cfg)
    try:
        return EnvSpec(
            frame_shape=tuple(int(d) for d in env.observation_space.shape),
            frame_dtype=np.dtype(np.uint8),
            frame_stack=int(cfg.frame_stack),
            n_actions=int(env.action_space.n),
            label=f"MinAtar/{game}",
        )
    finally:
        env.close()


def make_vector_env(cfg: EnvConfig, num_envs: int, seed: int, training: bool = True) -> VectorEnv:
    """``num_envs`` MinAtar envs, ``sync`` or ``async``, autoreset SAME_STEP; not yet reset.
    Training and evaluation envs are alike but for the latter's :class:`~dqn_cli.envs.workers.Pausable`
    (``seed`` is not used here)."""
    resolve_game(cfg.game)  # a clear error before any process starts
    return gymnasium_vector_env(
        [functools.partial(make_env, cfg) for _ in range(num_envs)], cfg.vectorization, pausable=not training
    )
