"""Atari (ALE) environments: the DQN preprocessing, four vectorisation backends, one protocol.

Every backend produces the same thing (the protocol of Machado et al. 2018, "Revisiting the ALE", and Mnih et al. 2015):

* single uint8 grayscale frames, ``(screen_size, screen_size)``: the trainer
  stacks frames itself (:class:`dqn_cli.envs.vector.FrameStacker`), so a frame
  crosses a process boundary once, not ``frame_stack`` times;
* ``frame_skip`` emulator frames per agent step, max-pooled over the last
  two; up to ``noop_max`` no-ops after reset; FIRE after reset in games that
  need it (``fire_reset``); sticky actions with ``sticky_action_prob``
  (0 = Mnih et al. 2015, 0.25 = Machado et al. 2018); truncation after
  ``max_episode_frames`` emulator frames of play;
* autoreset ``SAME_STEP``: when an env ends, ``info["final_obs"][i]`` holds
  its true final frame and the returned frame is the reset one.

Backends (``env.vectorization``):

``sync``
    :class:`~gymnasium.vector.SyncVectorEnv` of :func:`make_env` envs,
    all in this process.
``async``
    :class:`~gymnasium.vector.AsyncVectorEnv` of the same envs, one
    subprocess each (``spawn`` context).
``ale``
    ale-py's threaded C++ :class:`~ale_py.vector_env.AtariVectorEnv`, with its
    built-in preprocessing configured identically (no stacking, no episodic
    life, no clipping: those are done below, once for all backends).
``envpool``
    EnvPool's threaded C++ pool (the optional extra ``dqn-cli[envpool]``), configured the same
    way, its next-step autoreset turned into SAME_STEP (:mod:`dqn_cli.envs.envpool_backend`).

On top of any backend, :class:`AtariProtocol` applies the training protocol
(``training=True``): episodic life (a lost life that is not game over
terminates the agent's episode, with the current frame as its final
observation, but the game goes on) and reward clipping to the sign, each when
configured. ``training=False`` is the evaluation protocol: the full game with
raw rewards. Either way ``info["raw_reward"]`` (unclipped) and
``info["game_over"]`` (the real episode ended: game over or truncation) are
full per-env arrays, so episode returns are always counted in game score.

The protocol a run used is recorded by its ``env`` config (frame_skip,
sticky_action_prob, noop_max, episodic_life, fire_reset, clip_rewards,
screen_size, max_episode_frames, full_action_space).

Nothing here runs at import time: ``ale_py`` is imported and registered with
Gymnasium inside the functions (ale-py's docs: ``gym.register_envs(ale_py)``), so env factories stay
picklable top-level callables for ``spawn``/``forkserver`` subprocesses.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.wrappers import AtariPreprocessing

from dqn_cli.config import ConfigError, EnvConfig
from dqn_cli.envs.autoreset import final_observations
from dqn_cli.envs.snapshot import array_value, generator, plain_value
from dqn_cli.envs.workers import gymnasium_vector_env
from dqn_cli.runtime import available_cpus

# Shown when a game name is unknown and nothing close matches.
_POPULAR = ("Breakout", "Pong", "SpaceInvaders", "Seaquest", "Qbert", "BeamRider", "Enduro", "MsPacman")


# ------------------------------------------------------------------ games
def _register_ale():
    import ale_py

    gym.register_envs(ale_py)
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner per env process
    return ale_py


def _key(name: str) -> str:
    """Case, underscore and dash insensitive: "SpaceInvaders" == "space_invaders" == "spaceinvaders"."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@functools.lru_cache(maxsize=1)
def _games() -> dict[str, tuple[str, str]]:
    """key -> (rom id, CamelCase name) for every ROM that ships with ale-py."""
    _register_ale()
    from ale_py import roms
    from ale_py.registration import rom_id_to_name

    return {_key(rom): (rom, rom_id_to_name(rom)) for rom in roms.get_all_rom_ids()}


def resolve_game(game: str) -> tuple[str, str]:
    """(rom id, CamelCase name) of ``game`` ("Breakout", "breakout", "space_invaders", ...).

    Raises ConfigError naming a few valid games when ``game`` is not an ALE ROM.
    """
    games = _games()
    hit = games.get(_key(str(game)))
    if hit is not None:
        return hit
    close = [games[k][1] for k in difflib.get_close_matches(_key(str(game)), list(games), n=3, cutoff=0.6)]
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise ConfigError(
        f"env.game={game!r} is not an ALE game; {hint}valid names include {', '.join(_POPULAR)} "
        f'({len(games)} games: python -c "import ale_py.roms as r; print(r.get_all_rom_ids())")'
    )


def max_frames(cfg: EnvConfig) -> int:
    """Emulator frames before truncation; ``env.max_episode_steps`` (agent steps), when set, caps it too."""
    frames = int(cfg.max_episode_frames)
    if cfg.max_episode_steps is not None:
        frames = min(frames, int(cfg.max_episode_steps) * int(cfg.frame_skip))
    return frames


# ------------------------------------------------------------ single envs
class _Preprocessing(AtariPreprocessing):
    """Gymnasium's ``AtariPreprocessing`` (no-op reset, frame skip with max-pooling of the last two
    frames, 84x84 grayscale), with reset and step made to match ale-py's ``AtariVectorEnv``
    frame for frame, so every backend plays the same game:

    * fire reset: FIRE is pressed for one emulator frame right after the
      game resets, before the no-ops, when ``fire_action`` is given;
    * no-op reset: uniform in ``[0, noop_max)`` emulator frames, the FIRE
      frame included (the stock wrapper draws ``[1, noop_max]``);
    * truncation after ``max_frames`` emulator frames of play since the reset
      (reset no-ops not counted), possibly in the middle of a frame skip;
      truncation and termination are exclusive, as in ale-py.

    One deliberate difference: when an episode ends in the middle of a frame
    skip, both the stock wrapper and ale-py return a frame pooled with a stale
    screen; here the final observation is the true final screen, so a
    truncated transition bootstraps from the frame the game really ended on
    (a truncated episode bootstraps from it).
    """

    def __init__(self, env: gym.Env, fire_action: int | None = None, max_frames: int = 108_000, **kwargs):
        super().__init__(env, **kwargs)
        self.fire_action = fire_action
        self.max_frames = int(max_frames)
        self.elapsed = 0  # emulator frames played since the reset

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        _, info = self.env.reset(seed=seed, options=options)
        if self.fire_action is not None:
            _, _, _, _, step_info = self.env.step(self.fire_action)  # one frame
            info.update(step_info)
        noops = int(self.env.unwrapped.np_random.integers(0, self.noop_max)) if self.noop_max > 0 else 0
        noops -= int(self.fire_action is not None)
        for _ in range(noops):
            _, _, terminated, truncated, step_info = self.env.step(0)
            info.update(step_info)
            if terminated or truncated:
                _, info = self.env.reset(options=options)
        self.lives = self.ale.lives()
        self.elapsed = 0
        self.game_over = False
        self._grab(self.obs_buffer[0])
        self.obs_buffer[1].fill(0)
        return self._get_obs(), info

    def step(self, action):
        total_reward, terminated, truncated, info = 0.0, False, False, {}
        last = self.frame_skip - 1
        for t in range(self.frame_skip):
            _, reward, terminated, truncated, info = self.env.step(action)
            total_reward += reward
            self.elapsed += 1
            truncated = (truncated or self.elapsed >= self.max_frames) and not terminated
            if terminated or truncated:
                self._grab(self.obs_buffer[0])  # the true final screen
                if t != last:
                    self.obs_buffer[1].fill(0)  # no stale screen to pool with
                break
            if t == last - 1:
                self._grab(self.obs_buffer[1])
            elif t == last:
                self._grab(self.obs_buffer[0])
        self.game_over = terminated
        return self._get_obs(), total_reward, terminated, truncated, info

    @property
    def game_id(self) -> str:
        """The base env's id, e.g. "ALE/Breakout-v5"."""
        return self.env.spec.id if self.env.spec is not None else type(self.env.unwrapped).__name__

    @property
    def resume_state(self) -> dict:
        """The env's whole state between steps, as plain data for a checkpoint: the emulator's
        (ALE's serialized state with its random generator), the no-op draws' generator, the two
        screens the next frame is max-pooled with, the lives and the frames played. Setting it
        puts an env of the same game back there, exactly where :func:`restores_exactly` says so."""
        return {
            "ale": np.frombuffer(self.ale.cloneState(include_rng=True).serialize(), dtype=np.uint8).copy(),
            "np_random": self.env.unwrapped.np_random.bit_generator.state,
            "obs_buffer": np.stack(self.obs_buffer),
            "lives": int(self.lives),
            "elapsed": int(self.elapsed),
            "game_over": bool(self.game_over),
        }

    @resume_state.setter
    def resume_state(self, state: dict) -> None:
        import ale_py

        self.ale.restoreState(ale_py.ALEState(np.asarray(state["ale"], dtype=np.uint8).tobytes()))
        self.env.unwrapped.np_random = generator(state["np_random"])
        for buffer, saved in zip(self.obs_buffer, np.asarray(state["obs_buffer"])):
            buffer[...] = saved
        self.lives, self.elapsed, self.game_over = int(state["lives"]), int(state["elapsed"]), bool(state["game_over"])

    def _grab(self, buffer: np.ndarray) -> None:
        if self.grayscale_obs:
            self.ale.getScreenGrayscale(buffer)
        else:
            self.ale.getScreenRGB(buffer)


def make_env(cfg: EnvConfig, render_mode: str | None = None) -> gym.Env:
    """One preprocessed Atari env emitting single uint8 frames; no stacking, no episodic life, no clipping.

    Top level and picklable: AsyncVectorEnv workers call ``functools.partial(make_env, cfg)``.
    In an AsyncVectorEnv worker SIGINT is ignored, so Ctrl-C (sent to the whole
    process group) reaches only the trainer, which saves a checkpoint and
    closes the workers itself.
    """
    from dqn_cli.envs.workers import ignore_sigint_in_vector_worker

    ignore_sigint_in_vector_worker()
    _register_ale()
    _, name = resolve_game(cfg.game)
    kwargs: dict[str, Any] = dict(
        frameskip=1,  # AtariPreprocessing skips (it needs a frameskip-1 base env)
        repeat_action_probability=float(cfg.sticky_action_prob),
        full_action_space=bool(cfg.full_action_space),
        max_num_frames_per_episode=0,  # no limit in the emulator: the wrapper truncates (as ale-py)
    )
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    env = gym.make(f"ALE/{name}-v5", disable_env_checker=True, **kwargs)
    meanings = env.unwrapped.get_action_meanings()
    fire = meanings.index("FIRE") if cfg.fire_reset and "FIRE" in meanings else None
    env = _Preprocessing(
        env,
        fire_action=fire,
        max_frames=max_frames(cfg),
        noop_max=int(cfg.noop_max),
        frame_skip=int(cfg.frame_skip),
        screen_size=int(cfg.screen_size),
        terminal_on_life_loss=False,
        grayscale_obs=True,
    )
    # one rendered frame per agent step: real time is the emulator's 60 frames/s over frame_skip
    env.metadata = {**env.metadata, "render_fps": 60.0 / max(int(cfg.frame_skip), 1)}
    return env


def describe(cfg: EnvConfig):
    """The EnvSpec of ``cfg``'s game, from one env made in this process (no subprocess).

    Raises ConfigError for an unknown game or an unusable configuration.
    """
    from dqn_cli.envs.spec import EnvSpec

    _register_ale()
    _, name = resolve_game(cfg.game)
    try:
        env = make_env(cfg)
    except (gym.error.Error, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"env.game={cfg.game!r}: cannot make the env ({str(err).strip().splitlines()[0]})") from None
    try:
        if not isinstance(env.action_space, gym.spaces.Discrete):
            kind = type(env.action_space).__name__
            raise ConfigError(f"env.game={cfg.game!r} has a {kind} action space; DQN needs Discrete actions")
        shape = tuple(int(d) for d in env.observation_space.shape)
        return EnvSpec(
            frame_shape=shape,
            frame_dtype=np.dtype(np.uint8),
            frame_stack=int(cfg.frame_stack),
            n_actions=int(env.action_space.n),
            action_meanings=list(env.unwrapped.get_action_meanings()),
            label=name,
        )
    finally:
        env.close()


# ------------------------------------------------------------ vector envs
class ALEVectorAdapter(VectorWrapper):
    """ale-py's AtariVectorEnv made to look like the Gymnasium backends.

    Frames (N, 1, H, W) -> (N, H, W); ``info["final_obs"]`` likewise; float64
    rewards; ``reset(seed=[...])`` with a list of seeds.
    """

    def __init__(self, env: VectorEnv):
        super().__init__(env)
        _, h, w = env.single_observation_space.shape
        self.single_observation_space = gym.spaces.Box(0, 255, (h, w), np.uint8)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def reset(self, *, seed=None, options=None):
        if seed is not None:  # one seed per env; ale-py seeds with 31 bits: 63-bit run seeds are folded down
            from dqn_cli.runtime import fold_seed

            listed = [seed + i for i in range(self.num_envs)] if np.isscalar(seed) else list(seed)
            seed = np.asarray([fold_seed(int(s), 31) for s in listed], dtype=np.int64)
        obs, info = self.env.reset(seed=seed, options=options)
        return obs[:, 0], info

    def step_async(self, actions) -> None:
        """Hand the actions to ale-py's threads and return at once."""
        self.env.send(np.asarray(actions, dtype=np.int64))

    def step_wait(self):
        obs, rewards, terminated, truncated, info = self.env.recv()
        if "final_obs" in info:
            info["final_obs"] = np.asarray(info["final_obs"])[:, 0]
            info["_final_obs"] = np.logical_or(terminated, truncated)
        return obs[:, 0], np.asarray(rewards, dtype=np.float64), terminated, truncated, info

    def step(self, actions):
        self.step_async(actions)
        return self.step_wait()


class AtariProtocol(VectorWrapper):
    """The training or evaluation protocol on top of any Atari vector env (see the module docstring).

    Args:
        env: a SAME_STEP vector env of single Atari frames.
        training: True applies ``episodic_life`` and ``clip_rewards``; False plays full games, raw rewards.
        episodic_life: a lost life (not game over) ends the agent's episode; the game continues.
        clip_rewards: rewards become their sign.
    """

    def __init__(self, env: VectorEnv, training: bool, episodic_life: bool, clip_rewards: bool):
        super().__init__(env)
        self.training = bool(training)
        self.episodic_life = bool(training and episodic_life)
        self.clip_rewards = bool(training and clip_rewards)
        self.lives = np.zeros(env.num_envs, dtype=np.int64)
        self._pending = None  # sync backends: actions held from step_async to step_wait

    def _lives(self, infos: dict) -> np.ndarray:
        """Lives of every env now (for envs reset this step: of the new game)."""
        lives = self.lives.copy()
        if "lives" in infos:
            mask = infos.get("_lives", np.ones(self.num_envs, dtype=bool))
            lives[mask] = np.asarray(infos["lives"])[mask]
        return lives

    def reset(self, *, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self.lives = self._lives(infos)
        return obs, infos

    def step_async(self, actions) -> None:
        """Start stepping (``async`` and ``ale`` backends return at once; ``sync`` steps in step_wait)."""
        if hasattr(self.env, "step_async"):
            self.env.step_async(actions)
        else:
            self._pending = actions

    def step_wait(self):
        """The results of the last ``step_async``, with the training or evaluation protocol applied."""
        if hasattr(self.env, "step_async"):
            obs, rewards, terminated, truncated, infos = self.env.step_wait()
        else:
            actions, self._pending = self._pending, None
            obs, rewards, terminated, truncated, infos = self.env.step(actions)
        infos = dict(infos)
        raw = np.asarray(rewards, dtype=np.float64)
        terminated = np.array(terminated, dtype=bool)
        truncated = np.array(truncated, dtype=bool)
        game_over = terminated | truncated
        finals = final_observations(infos, game_over, obs)
        lives = self._lives(infos)
        if self.episodic_life:
            lost = (lives < self.lives) & ~game_over
            if lost.any():
                terminated |= lost
                if finals is None:
                    finals = np.zeros_like(obs)
                finals[lost] = obs[lost]  # the game goes on: this frame ends the life and starts the next
        self.lives = lives
        if finals is not None:
            infos["final_obs"] = finals
            infos["_final_obs"] = terminated | truncated
        everyone = np.ones(self.num_envs, dtype=bool)
        infos["raw_reward"], infos["_raw_reward"] = raw, everyone
        infos["game_over"], infos["_game_over"] = game_over, everyone.copy()
        out_rewards = np.sign(raw) if self.clip_rewards else raw
        return obs, out_rewards, terminated, truncated, infos

    def step(self, actions):
        self.step_async(actions)
        return self.step_wait()


def _ale_num_threads(num_envs: int) -> int:
    return max(1, min(num_envs, available_cpus()))


def make_ale_vector_env(cfg: EnvConfig, num_envs: int) -> VectorEnv:
    """ale-py's native threaded vector env with the preprocessing of :func:`make_env`."""
    _register_ale()
    from ale_py.vector_env import AtariVectorEnv

    rom, _ = resolve_game(cfg.game)
    env = AtariVectorEnv(
        rom,
        num_envs,
        num_threads=_ale_num_threads(num_envs),
        max_num_frames_per_episode=max_frames(cfg),
        repeat_action_probability=float(cfg.sticky_action_prob),
        full_action_space=bool(cfg.full_action_space),
        autoreset_mode=AutoresetMode.SAME_STEP,
        img_height=int(cfg.screen_size),
        img_width=int(cfg.screen_size),
        grayscale=True,
        stack_num=1,
        frameskip=int(cfg.frame_skip),
        maxpool=True,
        noop_max=int(cfg.noop_max),
        episodic_life=False,
        life_loss_info=False,
        reward_clipping=False,
        use_fire_reset=bool(cfg.fire_reset),
    )
    return ALEVectorAdapter(env)


def make_vector_env(cfg: EnvConfig, num_envs: int, seed: int, training: bool = True) -> VectorEnv:
    """``num_envs`` Atari envs on ``cfg.vectorization``'s backend, autoreset SAME_STEP, with the
    training (``training=True``) or evaluation protocol; not yet reset.

    ``seed`` is not used here: the caller seeds each env at its first reset
    (``reset(seed=[seed + i ...])``) and the action space.
    """
    resolve_game(cfg.game)  # a clear error before any process starts
    if cfg.vectorization == "ale":
        envs: VectorEnv = make_ale_vector_env(cfg, num_envs)
    elif cfg.vectorization == "envpool":
        from dqn_cli.envs.envpool_backend import atari_vector_env

        envs = atari_vector_env(cfg, num_envs, resolve_game(cfg.game)[0], max_frames(cfg))
    else:  # sync or async (config.py allows only the four)
        envs = gymnasium_vector_env(
            [functools.partial(make_env, cfg) for _ in range(num_envs)], cfg.vectorization, pausable=not training
        )
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    return AtariProtocol(envs, training=training, episodic_life=cfg.episodic_life, clip_rewards=cfg.clip_rewards)


# ------------------------------------------------------------ the envs' state, for a checkpoint
# ALE 0.12's saved state leaves out the TIA's partial-frame flag, which these games' restores
# need (fixed upstream after that release: Arcade-Learning-Environment pull request 732, "Fix
# QBert and Tetris clone-restore roundtripping").
_INEXACT_RESTORE = ("qbert", "tetris")


def restores_exactly(cfg: EnvConfig) -> bool:
    """Whether the envs' state round-trips exactly through a checkpoint: the ``sync`` and
    ``async`` backends (the others' emulators live in C++ threads), no sticky actions (ALE keeps
    the action a sticky step repeats outside its saved state), a game whose restore is exact."""
    return (
        cfg.vectorization in ("sync", "async")
        and float(cfg.sticky_action_prob) == 0.0
        and _key(cfg.game) not in _INEXACT_RESTORE
    )


def capture_envs(envs, stacker, cfg: EnvConfig) -> dict | None:
    """Each env's ``resume_state`` (its emulator and preprocessing), the protocol's lives and
    the stacked observations, as tensors, strings and numbers; None unless :func:`restores_exactly`."""
    if not restores_exactly(cfg):
        return None
    base = envs.unwrapped  # the Sync/AsyncVectorEnv under the protocol's wrapper
    return {
        "kind": "atari",
        "games": list(base.get_attr("game_id")),
        "states": [{k: plain_value(v) for k, v in state.items()} for state in base.get_attr("resume_state")],
        "lives": torch.from_numpy(np.array(envs.lives, copy=True)),
        "obs": torch.from_numpy(np.array(stacker.obs, copy=True)),
    }


def restore_envs(envs, stacker, saved: dict) -> bool:
    """:func:`capture_envs`'s state back into envs of the same games (already reset)."""
    base = envs.unwrapped
    if saved.get("kind") != "atari" or list(base.get_attr("game_id")) != saved["games"]:
        return False
    if tuple(saved["obs"].shape) != stacker.obs.shape:
        return False
    base.set_attr("resume_state", [{k: array_value(v) for k, v in state.items()} for state in saved["states"]])
    envs.lives[...] = saved["lives"].numpy()
    stacker.obs[...] = saved["obs"].numpy()
    return True
