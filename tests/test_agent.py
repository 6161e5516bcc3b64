"""TD targets and the agent's update, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import compose
from torch import nn

from dqn_cli.config import OptimizerConfig
from dqn_cli.core.agent import DQNAgent, td_target
from dqn_cli.replay.storage import Batch


def test_dqn_target_takes_the_target_networks_max():
    returns = torch.tensor([1.0, 0.5, -1.0])
    discounts = torch.tensor([0.99, 0.0, 0.99**3])
    next_q_target = torch.tensor([[2.0, 3.0], [10.0, -4.0], [-1.0, -2.0]])
    y = td_target(returns, discounts, next_q_target)
    # 1 + .99*3 ; terminal: 0.5 ; -1 + .99^3 * -1
    torch.testing.assert_close(y, torch.tensor([1 + 0.99 * 3, 0.5, -1 - 0.99**3]))


def test_double_q_target_uses_online_argmax_valued_by_target():
    returns = torch.tensor([1.0, 2.0])
    discounts = torch.tensor([0.5, 0.5])
    next_q_target = torch.tensor([[2.0, 3.0], [7.0, 1.0]])
    next_q_online = torch.tensor([[9.0, 0.0], [0.0, 9.0]])  # picks action 0, then action 1
    y = td_target(returns, discounts, next_q_target, next_q_online)
    torch.testing.assert_close(y, torch.tensor([1 + 0.5 * 2.0, 2 + 0.5 * 1.0]))
    # the plain DQN target would have taken the max: 1 + .5*3, 2 + .5*7
    torch.testing.assert_close(td_target(returns, discounts, next_q_target), torch.tensor([2.5, 5.5]))


class TableQ(nn.Module):
    """Q(s, .) = table[s]: observations are (B, 1, 1) integer states."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, obs):
        return self.table[obs.reshape(-1).long()]


def make_agent(double_q, loss="mse", lr=0.1, max_grad_norm=None):
    net = TableQ([[0.0, 1.0], [2.0, 4.0], [3.0, -1.0]])
    opt = OptimizerConfig(name="adam", lr=lr, max_grad_norm=max_grad_norm)
    agent = DQNAgent(net, opt, 2, double_q, loss, torch.device("cpu"))
    with torch.no_grad():  # make the target differ from the online net
        agent.target_network.table.copy_(torch.tensor([[0.0, 0.0], [5.0, 1.0], [0.0, 0.0]]))
    return agent


def one_transition(discount=0.9):
    obs = np.array([[[0.0]]], dtype=np.float32)  # state 0
    next_obs = np.array([[[1.0]]], dtype=np.float32)  # state 1
    return Batch(
        obs,
        np.array([1]),
        np.array([1.0], np.float32),
        next_obs,
        np.array([discount], np.float32),
        np.array([0]),
        np.array([1.0], np.float32),
    )


@pytest.mark.parametrize("double_q,bootstrap", [(False, 5.0), (True, 1.0)])
def test_update_reports_hand_computed_td_error(double_q, bootstrap):
    agent = make_agent(double_q)
    info = agent.update(one_transition())
    # Q(s=0, a=1) = 1; target net max at s'=1 is 5 (a=0); online argmax at s'=1 is a=1 -> target value 1
    y = 1.0 + 0.9 * bootstrap
    assert info.td_errors[0] == pytest.approx(y - 1.0)
    assert info.q_values == pytest.approx(1.0)
    assert info.td_loss == pytest.approx((y - 1.0) ** 2)
    # gradient descent moved Q(0, 1) towards y and left the other entries alone
    table = agent.q_network.table.detach()
    assert table[0, 1] > 1.0
    assert table[0, 0] == 0.0 and table[1, 0] == 2.0


def test_huber_loss_and_importance_weights():
    agent = make_agent(False, loss="huber")
    batch = one_transition()._replace(weights=np.array([0.5], np.float32))
    info = agent.update(batch)
    delta = 1.0 + 0.9 * 5.0 - 1.0  # 4.5 > 1: linear part of the Huber loss
    assert info.td_loss == pytest.approx(0.5 * (delta - 0.5))


def test_target_update_hard_and_polyak():
    agent = make_agent(False)
    online = agent.q_network.table.detach().clone()
    target = agent.target_network.table.detach().clone()
    agent.update_target(0.25)
    torch.testing.assert_close(agent.target_network.table.detach(), 0.25 * online + 0.75 * target)
    agent.update_target(1.0)
    torch.testing.assert_close(agent.target_network.table.detach(), online)


def test_epsilon_greedy_is_batched_and_respects_epsilon():
    agent = make_agent(False)
    obs = np.zeros((1000, 1, 1), dtype=np.float32)  # state 0: greedy action 1
    assert (agent.act(obs, 0.0) == 1).all()
    random_actions = agent.act(obs, 1.0)
    assert set(np.unique(random_actions)) == {0, 1}
    mixed = agent.act(obs, 0.5)
    assert 0.15 < (mixed == 0).mean() < 0.35  # half explore, half of those pick action 0


def test_gradient_clipping_bounds_the_gradient_the_optimizer_steps_with():
    agent = make_agent(False, loss="mse", lr=1.0, max_grad_norm=1e-3)
    info = agent.update(one_transition())
    stepped = torch.linalg.vector_norm(agent.q_network.table.grad)  # what optimizer.step() read
    assert info.grad_norm > 0.1  # the raw gradient, logged, was far larger than the clip
    assert float(stepped) == pytest.approx(1e-3, rel=1e-4)  # rescaled onto the clip
    unclipped = make_agent(False, loss="mse", lr=1.0)
    unclipped.update(one_transition())
    assert float(torch.linalg.vector_norm(unclipped.q_network.table.grad)) == pytest.approx(info.grad_norm)


def test_state_restores_exploration_exactly():
    """The epsilon-greedy generator is a host numpy generator: its state continues exactly on any device."""
    obs = np.zeros((64, 1, 1), dtype=np.float32)
    saved = make_agent(False)
    saved.act(obs, 0.5)
    state = saved.state_dict()
    expected = saved.act(obs, 0.5)
    same = make_agent(False)
    same.load_state_dict(state)
    assert np.array_equal(same.act(obs, 0.5), expected)  # exact continuation
    other = make_agent(False)
    other.act(obs, 0.5)
    other.act(obs, 0.5)  # a generator elsewhere in its stream acts otherwise
    assert not np.array_equal(other.act(obs, 0.5), expected)


def test_several_polyak_periods_at_once_equal_as_many_updates():
    agent, twice = make_agent(False), make_agent(False)
    for a in (agent, twice):
        with torch.no_grad():
            a.q_network.table.add_(1.0)
    agent.update_target(0.1, times=3)
    for _ in range(3):
        twice.update_target(0.1)
    torch.testing.assert_close(agent.target_network.table, twice.target_network.table)
    agent.update_target(1.0, times=5)  # hard copies stay copies
    torch.testing.assert_close(agent.target_network.table, agent.q_network.table)


def test_a_vector_step_passing_several_target_periods_applies_each(tmp_path, monkeypatch):
    """8 envs with target_update_period=2: every vector step passes 4 periods, and the trainer
    applies all 4 Polyak updates (not one), so tau means the same whatever num_envs is."""
    from dqn_cli.run.trainer import train

    calls = []
    original = DQNAgent.update_target
    monkeypatch.setattr(
        DQNAgent, "update_target", lambda self, tau, times=1: (calls.append(times), original(self, tau, times))[1]
    )
    cfg = compose(
        "env.num_envs=8",
        "network.hidden_sizes=[8]",
        "eval.every=0",
        "eval.episodes=1",
        "checkpoint.every=0",
        "total_steps=160",
        "learning_starts=40",
        "batch_size=8",
        "train_every=1",
        "target_update_period=2",
        "tau=0.5",
        "device=cpu",
        "progress=off",
        "torch_threads=1",
    )
    (tmp_path / ".hydra").mkdir()
    train(cfg, tmp_path)
    assert calls[1:] == [4] * (len(calls) - 1)  # after the first, which catches up on the periods before learning
    assert sum(calls) == 160 // 2
