"""The Python API: load a trained agent and run it, in Stable-Baselines3's convention.

import dqn_cli
agent = dqn_cli.load("outputs/DATE/TIME_cartpole")      # a run dir (its last.pt) or a .pt file
env = agent.make_env()                                  # the env, preprocessed as in evaluation
obs, _ = env.reset(seed=0)
action, _ = agent.predict(obs, deterministic=True)
"""

from __future__ import annotations

import os
from typing import Sequence

import gymnasium as gym
import numpy as np
import torch

from dqn_cli.config import TrainConfig, check_which
from dqn_cli.core.agent import EpsilonGreedy
from dqn_cli.envs.spec import EnvSpec
from dqn_cli.envs.vector import env_factory
from dqn_cli.errors import CheckpointError
from dqn_cli.run.checkpoint import checkpoint_path, load_checkpoint
from dqn_cli.run.evaluate import capped, load_agent_network


class Agent:
    """A trained Q-network with what it was trained on.

    Attributes:
        config: the run's TrainConfig (its ``env`` group says how observations are made).
        spec: the env's EnvSpec; observations are (frame_stack, *frame_shape) of ``spec.frame_dtype``.
        q_network: the torch module, in eval mode on ``device``.
        env_steps: the env step the weights were saved at.
    """

    def __init__(
        self,
        q_network: torch.nn.Module,
        config: TrainConfig,
        spec: EnvSpec,
        device: torch.device,
        env_steps: int,
        seed: int = 0,
    ):
        self.q_network = q_network.eval()
        self.config = config
        self.spec = spec
        self.device = device
        self.env_steps = env_steps
        self.policy = EpsilonGreedy(spec.n_actions, seed)

    def make_env(self, render_mode: str | None = None) -> gym.Env:
        """One env with the evaluation protocol the agent was evaluated on (Atari: the full game,
        raw rewards; the run's evaluation step cap), its frames stacked as the agent saw them."""
        env = env_factory(capped(self.config.env, self.config.eval.max_episode_steps), render_mode)()
        if self.spec.frame_stack > 1:
            env = gym.wrappers.FrameStackObservation(env, self.spec.frame_stack)  # padded with the reset frame
        return env

    @torch.no_grad()
    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        """``(action, state)`` as Stable-Baselines3's ``predict``: the greedy action for one
        observation (an int) or for a batch (int64 (B,)); ``state`` is passed through (no recurrence).
        ``deterministic=False`` acts epsilon-greedily with the run's final exploration rate."""
        obs = np.asarray(observation, dtype=self.spec.frame_dtype)
        frame = tuple(self.spec.frame_shape)
        stacked = (self.spec.frame_stack, *frame)
        # one observation is what make_env's env returns: a frame, or a stack of them; one more
        # leading axis is a batch, also of one (as Stable-Baselines3: (1, 4) gives actions of shape (1,))
        one = frame if self.spec.frame_stack == 1 else stacked
        if obs.shape == one:
            single, batch = True, obs.reshape(1, *stacked)
        elif obs.shape[1:] == one:
            single, batch = False, obs.reshape(len(obs), *stacked)
        else:
            raise ValueError(f"observation of shape {obs.shape}; this agent takes {one} or a batch of them")
        epsilon = 0.0 if deterministic else self.config.schedule.epsilon_end
        tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        actions = self.policy(lambda: self.q_network(tensor), len(batch), epsilon)
        return (int(actions[0]) if single else actions), state


def load(path: str | os.PathLike, device: str = "cpu", which: str = "last", imports: Sequence[str] = ()) -> Agent:
    """The agent of a checkpoint (``.pt``) or of a run dir (its ``checkpoints/last.pt``, or
    ``best.pt`` with ``which="best"``; a ``.pt`` file takes only ``which="last"``). Raises
    CheckpointError for a file that is not a checkpoint, ConfigError for another ``which``.

    Loading runs nothing the files name: a run whose env needs a module imported (``env.imports``,
    an ``env.id`` of the form ``module:EnvId``) is refused (ConfigError) unless that module is in
    ``imports``, given here by a caller who trusts the run."""
    check_which(which)
    path = checkpoint_path(path, which)
    state = load_checkpoint(path)
    torch_device = torch.device(device)
    net, cfg, spec = load_agent_network(state, torch_device, str(path), tuple(imports))
    if "counters" not in state:
        raise CheckpointError(f"{path} has no counters; it was not written by dqn train")
    return Agent(net, cfg, spec, torch_device, int(state["counters"]["env_steps"]), seed=cfg.seed)
