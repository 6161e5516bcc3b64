"""EnvPool as a vector-env backend: ``env.vectorization=envpool`` (Atari, and the classic envs EnvPool has).

EnvPool (Weng et al. 2022, "EnvPool: A Highly Parallel Reinforcement Learning Environment Execution
Engine") steps its envs on a C++ thread pool. It is the optional extra ``pip install 'dqn-cli[envpool]'``.

Its autoreset differs from the one the trainer is written for. EnvPool resets an env that ended on
the env's *next* step, whose action it ignores, returning the reset observation with reward 0
(EnvPool's docs, "Auto-reset"; sail-sg/envpool issues 33 and 194). The trainer expects Gymnasium's
``AutoresetMode.SAME_STEP``: the step that ends an episode returns the reset observation, and the
true final observation is in ``info["final_obs"]``. :class:`EnvPoolVectorEnv` gives it that: after
a step in which envs ended it resets exactly those envs (EnvPool's ``reset(env_id)``), in the same
call, so no action is dropped and no transition spans two episodes.

Episode caps: EnvPool reports an episode that ends by itself on its last allowed step as truncated
only; Gymnasium's TimeLimit (and the other backends) call it terminated, and the difference
matters, since a truncated transition is bootstrapped. So the adapter counts the steps and
truncates itself (``max_episode_steps``), with EnvPool's own cap one step further out.

Seeds: EnvPool seeds its envs when the pool is made (``env_seed``, one per env), not at reset, so
``reset(seed=[...])`` with new seeds makes a new pool; evaluations, which play fresh seeds each
time, therefore build theirs at every evaluation (a fraction of a second).

Nothing runs at import time; ``envpool`` is imported inside the functions.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from dqn_cli.config import ConfigError, EnvConfig
from dqn_cli.runtime import available_cpus

EXTRA = "env.vectorization=envpool needs the optional extra: pip install 'dqn-cli[envpool]'"


def _envpool():
    try:
        import envpool
    except ImportError:
        raise ConfigError(EXTRA) from None
    return envpool


def _seed31(seed: int) -> int:
    from dqn_cli.runtime import fold_seed

    return fold_seed(int(seed), 31)  # EnvPool's seeds are C++ ints


class EnvPoolVectorEnv(VectorEnv):
    """An EnvPool pool of ``num_envs`` envs as a Gymnasium SAME_STEP vector env (see the module docstring).

    Args:
        task_id: EnvPool's id ("Breakout-v5", "CartPole-v1").
        num_envs: envs in the pool, stepped together (EnvPool's sync mode, batch_size = num_envs).
        options: EnvPool's make options for the task (preprocessing).
        max_episode_steps: agent steps after which an episode is truncated (unless it terminates
            on that step).
        single_observation_space: what one env's observation becomes here: Atari frames lose
            EnvPool's stack axis ((1, H, W) -> (H, W)), classic observations become float32.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        task_id: str,
        num_envs: int,
        options: dict[str, Any],
        single_observation_space: gym.Space,
        max_episode_steps: int,
    ):
        self.task_id = task_id
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(max_episode_steps)
        self.options = {**options, "max_episode_steps": self.max_episode_steps + 1}  # never EnvPool's cap first
        self.elapsed = np.zeros(self.num_envs, dtype=np.int64)  # agent steps in each env's episode
        self.single_observation_space = single_observation_space
        self.observation_space = gym.vector.utils.batch_space(single_observation_space, self.num_envs)
        self._pool = None  # made at the first reset, with its seeds
        self._seeds: list[int] | None = None
        n_actions = int(_envpool().make_spec(task_id, **self.options).action_space.n)
        self.single_action_space = gym.spaces.Discrete(n_actions)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

    def _make(self, seeds: list[int]) -> None:
        if self._pool is not None and seeds == self._seeds:
            return
        self._pool = None  # EnvPool stops the old pool's threads when it is collected
        self._pool = _envpool().make(
            self.task_id,
            env_type="gymnasium",
            num_envs=self.num_envs,
            batch_size=self.num_envs,
            num_threads=max(1, min(self.num_envs, available_cpus())),
            env_seed=seeds,
            **self.options,
        )
        self._seeds = seeds

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        if obs.ndim == len(self.single_observation_space.shape) + 2:  # Atari: (N, 1, H, W), stack_num 1
            obs = obs[:, 0]
        return np.array(obs, dtype=self.single_observation_space.dtype)

    @staticmethod
    def _in_env_order(info: dict, *arrays: np.ndarray):
        """EnvPool returns results tagged with ``info["env_id"]``; put them in env order."""
        order = np.argsort(np.asarray(info["env_id"]), kind="stable")
        return [np.asarray(a)[order] for a in arrays], order

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            listed = [seed + i for i in range(self.num_envs)] if np.isscalar(seed) else list(seed)
            self._make([_seed31(s) for s in listed])
        elif self._pool is None:
            self._make(list(range(self.num_envs)))
        obs, info = self._pool.reset()
        self.elapsed[:] = 0
        (obs,), order = self._in_env_order(info, obs)
        return self._obs(obs), self._infos(info, order)

    def _infos(self, info: dict, order: np.ndarray) -> dict:
        out = {}
        if "lives" in info:
            out["lives"] = np.asarray(info["lives"])[order].astype(np.int64)
            out["_lives"] = np.ones(self.num_envs, dtype=bool)
        return out

    def step_async(self, actions) -> None:
        """Hand the actions to EnvPool's threads and return at once."""
        self._pool.send(np.asarray(actions, dtype=np.int32))

    def step_wait(self):
        obs, rewards, terminated, truncated, info = self._pool.recv(reset=False, return_info=True)
        (obs, rewards, terminated, truncated), order = self._in_env_order(info, obs, rewards, terminated, truncated)
        obs = self._obs(obs)
        terminated = np.array(terminated, dtype=bool)
        self.elapsed += 1
        truncated = (np.array(truncated, dtype=bool) | (self.elapsed >= self.max_episode_steps)) & ~terminated
        infos = self._infos(info, order)
        ended = terminated | truncated
        if ended.any():
            ids = np.flatnonzero(ended)
            finals = np.empty(self.num_envs, dtype=object)
            for i in ids:
                finals[i] = obs[i].copy()
            if "lives" in infos:  # the ended episodes' last values; the new games' values below
                infos["final_info"] = {"lives": infos["lives"].copy(), "_lives": ended.copy()}
            reset_obs, reset_info = self._pool.reset(ids.astype(np.int32))
            self.elapsed[ids] = 0
            order = np.argsort(np.asarray(reset_info["env_id"]), kind="stable")
            obs[ids] = self._obs(np.asarray(reset_obs)[order])
            if "lives" in infos:
                infos["lives"][ids] = np.asarray(reset_info["lives"])[order]
            infos["final_obs"], infos["_final_obs"] = finals, ended
        return obs, np.asarray(rewards, dtype=np.float64), terminated, truncated, infos

    def step(self, actions):
        self.step_async(actions)
        return self.step_wait()

    def close_extras(self, **kwargs) -> None:
        self._pool = None  # EnvPool stops its threads when the pool is collected


# ---------------------------------------------------------------- the two kinds
def _check_task(task_id: str, what: str) -> None:
    if task_id not in _envpool().list_all_envs():
        raise ConfigError(f"EnvPool has no {task_id!r} for {what}; use env.vectorization=sync or async")


def atari_vector_env(cfg: EnvConfig, num_envs: int, rom: str, max_frames: int) -> EnvPoolVectorEnv:
    """EnvPool's Atari pool with the preprocessing of :func:`dqn_cli.envs.atari.make_env`:
    single grayscale frames, frame skip with max-pooling, no-ops, FIRE reset, sticky actions and
    truncation after ``max_frames`` emulator frames, and no episodic life or reward clipping (the
    protocol on top adds those)."""
    task_id = "".join(part.capitalize() for part in rom.split("_")) + "-v5"
    _check_task(task_id, f"env.game={cfg.game!r}")
    options = dict(
        stack_num=1,
        frame_skip=int(cfg.frame_skip),
        noop_max=max(1, int(cfg.noop_max)),  # draws [0, noop_max) no-ops as ale-py does; 0 crashes it, 1 is none
        use_fire_reset=bool(cfg.fire_reset),
        episodic_life=False,
        reward_clip=False,
        img_height=int(cfg.screen_size),
        img_width=int(cfg.screen_size),
        gray_scale=True,
        repeat_action_probability=float(cfg.sticky_action_prob),
        full_action_space=bool(cfg.full_action_space),
    )
    space = gym.spaces.Box(0, 255, (int(cfg.screen_size), int(cfg.screen_size)), np.uint8)
    cap = math.ceil(max_frames / int(cfg.frame_skip))  # in agent steps, as EnvPool counts
    return EnvPoolVectorEnv(task_id, num_envs, options, space, cap)


def classic_vector_env(cfg: EnvConfig, num_envs: int) -> EnvPoolVectorEnv:
    """EnvPool's pool of ``env.id`` (CartPole-v1, Acrobot-v1, MountainCar-v0, ...), float32 observations;
    ``env.max_episode_steps`` caps episodes when set, else the task's own limit (as Gymnasium's)."""
    _check_task(cfg.id, f"env.id={cfg.id!r}")
    spec = _envpool().make_spec(cfg.id)
    cap = spec.config.max_episode_steps if cfg.max_episode_steps is None else int(cfg.max_episode_steps)
    space = spec.observation_space
    space = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), space.shape, np.float32)
    return EnvPoolVectorEnv(cfg.id, num_envs, {}, space, cap)
