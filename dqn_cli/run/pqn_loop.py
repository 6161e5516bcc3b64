"""The PQN loop (Gallici et al. 2025, "Simplifying Deep Temporal Difference Learning", Algorithm 1):

    for each rollout:
        1. collect: rollout_steps vector steps of epsilon-greedy acting in num_envs envs,
                    keeping s_t, a_t, r_t, the episode ends, and max_a Q(s'_t, a) of every
                    true next state (an episode cut by a time limit: its final observation)
        2. returns: Q(lambda) returns G_t of the rollout's rewards (times pqn.reward_scale),
                    bootstrapped from those values                  q_lambda_returns
        3. learn:   `epochs` passes of `minibatches` shuffled minibatches, one gradient
                    step on (Q(s_t, a_t) - G_t)^2 each                agent.learn
        4. evaluate greedily, log, checkpoint, each on its cadence

No replay buffer and no target network; the parts are the DQN loop's (build_run). A stop
signal ends the loop after the rollout in flight, so every checkpoint is at a rollout's end.
"""

from __future__ import annotations

import numpy as np

from dqn_cli.core.pqn import q_lambda_returns
from dqn_cli.envs.autoreset import final_observations
from dqn_cli.errors import NonFiniteLoss
from dqn_cli.run.build import Run
from dqn_cli.run.phases import log_episodes, on_cadence
from dqn_cli.run.signals import StopRequest


class Rollout:
    """One rollout's arrays: obs (T, E, S, *frame_shape) in the frames' dtype; actions int64,
    rewards float32, terminated and ended bool, next_values float32, each (T, E)."""

    def __init__(self, steps: int, obs: np.ndarray):
        T, E = steps, obs.shape[0]
        self.obs = np.zeros((T, *obs.shape), dtype=obs.dtype)
        self.actions = np.zeros((T, E), dtype=np.int64)
        self.rewards = np.zeros((T, E), dtype=np.float32)
        self.terminated = np.zeros((T, E), dtype=bool)
        self.ended = np.zeros((T, E), dtype=bool)
        self.next_values = np.zeros((T, E), dtype=np.float32)

    def first(self, steps: int) -> "Rollout":
        """The first ``steps`` vector steps (views of the same arrays), for a shorter last rollout."""
        part = object.__new__(Rollout)
        for name, array in vars(self).items():
            setattr(part, name, array[:steps])
        return part


def pqn_loop(run: Run, stop: StopRequest) -> None:
    """PQN's Algorithm 1, until total_steps or a stop signal (the last rollout may be shorter)."""
    cfg, agent, n, logger = run.cfg, run.agent, run.n, run.logger
    E, p = cfg.env.num_envs, cfg.pqn
    full = Rollout(p.rollout_steps, run.obs)
    run.logged_step, info = n.env_steps, None
    while n.env_steps < cfg.total_steps and not stop:
        T = min(p.rollout_steps, -(-(cfg.total_steps - n.env_steps) // E))  # vector steps still owed
        rollout = full if T == p.rollout_steps else full.first(T)
        # 1. Collect a rollout.
        for t in range(T):
            eps = run.epsilon(n.env_steps)
            actions, values = agent.act(run.obs, eps)
            if t > 0:  # max Q(s_t) is what step t-1 bootstraps from, unless its episode ended
                carried = ~rollout.ended[t - 1]
                rollout.next_values[t - 1, carried] = values[carried]
            rollout.obs[t] = run.obs
            frames, rewards, terminated, truncated, infos = run.envs.step(actions)
            ended = terminated | truncated
            rollout.actions[t], rollout.rewards[t] = actions, rewards
            rollout.terminated[t], rollout.ended[t] = terminated, ended
            cut = truncated & ~terminated  # a time limit: bootstrap from the true final observation
            if cut.any():
                finals = final_observations(infos, cut, frames)[cut]
                stacks = np.concatenate([run.obs[cut, 1:], finals[:, None]], axis=1)
                rollout.next_values[t, cut] = agent.max_q(stacks)
            log_episodes(run, infos, rewards, ended)
            run.obs = run.stacker.step(frames, ended)
            n.env_steps += E
            logger.advance(n.env_steps, eps)
        last = ~rollout.ended[T - 1]
        rollout.next_values[T - 1, last] = agent.max_q(run.obs)[last]
        # 2. Q(lambda) returns.
        returns = q_lambda_returns(
            rollout.rewards * p.reward_scale,
            rollout.next_values,
            rollout.terminated,
            rollout.ended,
            cfg.gamma,
            p.q_lambda,
        )
        # 3. Learn from the rollout, then forget it.
        agent.set_learning_rate(run.learning_rate(n.env_steps))
        updates, info = agent.learn(
            rollout.obs.reshape(T * E, *run.obs.shape[1:]),
            rollout.actions.reshape(-1),
            returns.reshape(-1),
            p.epochs,
            min(p.minibatches, T * E),
        )
        n.updates += updates
        if not np.isfinite(info.td_loss):
            raise NonFiniteLoss(n.env_steps, info.td_loss)
        # 4. Evaluate, log and checkpoint, each on its cadence.
        on_cadence(run, stop, T * E, eps, info)
