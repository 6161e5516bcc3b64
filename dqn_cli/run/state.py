"""Run state: the counters a run keeps, and what a checkpoint holds to continue it exactly
(networks, optimizer, counters, episode statistics, every generator, the envs where they can be
captured). :func:`dqn_cli.run.resume.continue_run` reads it back."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from dqn_cli.config import TrainConfig, to_dict
from dqn_cli.envs.spec import EnvSpec
from dqn_cli.envs.vector import EpisodeStats


@dataclass
class Counters:
    """Where the run is: everything a schedule or a cadence needs (units in the names)."""

    env_steps: int = 0  # summed over envs
    updates: int = 0  # gradient steps
    updates_dropped: int = 0  # gradient steps owed while the buffer could not fill a batch (never run)
    target_updates: int = 0  # target periods passed once learning began (each applied to the target)
    evaluations: int = 0
    best_eval_return: float = float("-inf")
    best_eval_step: int = -1  # env step of the network in checkpoints/best.pt (-1: none yet)
    last_eval_mean: float = float("nan")
    last_eval_std: float = float("nan")
    last_eval_cut: int = 0  # episodes of the last evaluation cut by eval.max_episode_steps
    wall_seconds: float = 0.0  # over all lives of the run
    eval_seconds: float = 0.0  # of wall_seconds, the time spent evaluating (and filming)
    update_seconds: float = 0.0  # of wall_seconds, in DQN gradient steps (sampling, update, priorities); pqn: 0
    env_restarts: int = 0  # times the training env workers were restarted after one died (env.worker_restarts)
    finished: bool = False  # the final evaluation is done


def capture(cfg: TrainConfig, spec: EnvSpec, n: Counters, agent, stats: EpisodeStats, envs: dict | None) -> dict:
    """Everything needed to continue the run: tensors, plain containers and numbers only."""
    np_state = np.random.get_state()
    rng = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and agent.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "config": to_dict(cfg),
        "spec": {
            "frame_shape": list(spec.frame_shape),
            "frame_stack": spec.frame_stack,
            "n_actions": spec.n_actions,
            "frame_dtype": str(spec.frame_dtype),
        },
        "counters": dict(vars(n)),
        "agent": agent.state_dict(),
        "episode_stats": stats.state_dict(),
        "rng": rng,
        "envs": envs,  # the envs' simulator state where it can be restored exactly (envs.snapshot)
    }
