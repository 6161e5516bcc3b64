"""PQN (Gallici et al. 2025, "Simplifying Deep Temporal Difference Learning"): Q-learning with
no replay buffer and no target network. A LayerNorm Q-network regresses Q(s, a) onto Q(lambda)
returns of the rollout it just collected, bootstrapped from its own max Q.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dqn_cli.config import OptimizerConfig
from dqn_cli.core.agent import QAgent, compiled, gradient_step


def q_lambda_returns(
    rewards: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    ended: np.ndarray,
    gamma: float,
    lam: float,
) -> np.ndarray:
    """Peng's Q(lambda) returns of a rollout, as PQN computes them; float32 (T, E).

    rewards: (T, E) r_t; terminated, ended: (T, E) bool, the episode ended at t by termination,
    or by termination or truncation; next_values: (T, E) max_a Q(s'_t, a) of the true next state
    s'_t (for an episode cut at t by a time limit, its final observation; ignored after a
    termination). Backwards from t = T - 1:

        G_t = r_t                                                    if terminated at t
        G_t = r_t + gamma * next_values_t                            if truncated at t, or t = T - 1
        G_t = r_t + gamma * (lam * G_t+1 + (1 - lam) * next_values_t)   otherwise

    so no return crosses an episode boundary; lam = 0 gives the one-step target.
    """
    T = rewards.shape[0]
    returns = np.zeros(rewards.shape, dtype=np.float64)
    for t in reversed(range(T)):
        if t == T - 1:
            continuation = next_values[t]
        else:
            continuation = np.where(ended[t], next_values[t], lam * returns[t + 1] + (1.0 - lam) * next_values[t])
        returns[t] = rewards[t] + gamma * np.where(terminated[t], 0.0, continuation)
    return returns.astype(np.float32)


class PQNInfo(NamedTuple):
    td_loss: float  # mean squared error of the last minibatch
    q_values: float  # its mean Q(s, a)
    grad_norm: float  # its global gradient norm before clipping
    loss_name: str = "td_loss"


class PQNAgent(QAgent):
    """One Q-network, its optimizer and epsilon-greedy acting; no target network.

    Args:
        q_network: the network, on ``device`` (network.norm=layer is PQN's).
        optimizer_cfg: the optimizer group (PQN: RAdam, gradient clipping at 10).
        n_actions: size of the Discrete action space.
        device: where the network and the update live.
        seed: seeds the exploration generator (also the minibatch shuffles).
        compile: torch.compile the minibatch loss and the acting forward pass (as DQNAgent).
    """

    def __init__(
        self,
        q_network: nn.Module,
        optimizer_cfg: OptimizerConfig,
        n_actions: int,
        device,
        seed: int = 0,
        compile: bool = False,
    ):
        super().__init__(q_network, optimizer_cfg, n_actions, device, seed)
        self.loss, self.acting_network = self._loss, q_network
        if compile:
            self.loss, self.acting_network = compiled(self._loss, device), compiled(q_network, device)

    @torch.no_grad()
    def act(self, obs: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
        """Epsilon-greedy actions, int64 (E,), and max_a Q(obs, a), float32 (E,), the value the
        previous step's return bootstraps from; obs: (E, S, *frame_shape)."""
        q = self.acting_network(self.to_device(obs))
        return self.policy(lambda: q, obs.shape[0], epsilon), q.max(dim=1).values.float().cpu().numpy()

    @torch.no_grad()
    def max_q(self, obs: np.ndarray) -> np.ndarray:
        """max_a Q(obs, a), float32 (B,)."""
        return self.q_network(self.to_device(obs)).max(dim=1).values.float().cpu().numpy()

    def learn(self, obs: np.ndarray, actions: np.ndarray, returns: np.ndarray, epochs: int, minibatches: int):
        """``epochs`` passes over the rollout (N = T * E transitions: obs (N, S, *frame_shape),
        actions int64 (N,), returns float32 (N,)), each in ``minibatches`` shuffled minibatches,
        one gradient step on the mean squared error (Q(s, a) - G)^2 per minibatch.
        Returns (updates run, the last minibatch's PQNInfo)."""
        obs_t, actions_t, returns_t = self.to_device(obs), self.to_device(actions), self.to_device(returns)
        n = obs_t.shape[0]
        info, updates = None, 0
        for _ in range(epochs):
            order = torch.from_numpy(self.policy.rng.permutation(n)).to(self.device)
            for chunk in torch.tensor_split(order, minibatches):
                loss, q = self.loss(obs_t[chunk], actions_t[chunk], returns_t[chunk])
                grad_norm = gradient_step(self.optimizer, self.params, loss, self.max_grad_norm)
                updates += 1
                info = (loss, q, grad_norm)
        loss, q, grad_norm = info
        return updates, PQNInfo(float(loss.detach()), float(q.detach().mean()), float(grad_norm))

    def _loss(self, obs: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor):
        """(Q(s, a) - G)^2 over the minibatch, and Q(s, a) (B,)."""
        q = self.q_network(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
        return F.mse_loss(q, returns), q
