"""Distributional heads. C51 (Bellemare et al. 2017): the categorical projection by hand and against a
per-atom loop, the double-Q choice of a*, cross-entropy and KL priorities. QR-DQN (Dabney et al. 2018):
the quantile Huber loss by hand, its target. Both through the real entrypoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import TINY, last_json_line, run_dqn
from torch import nn

from dqn_cli.config import NetworkConfig, OptimizerConfig
from dqn_cli.core.agent import DQNAgent, categorical_projection, quantile_huber_loss
from dqn_cli.core.networks import DistributionalQNetwork, QuantileQNetwork, build_network
from dqn_cli.replay.storage import Batch

SUPPORT = torch.tensor([-1.0, 0.0, 1.0])


def test_projection_by_hand():
    p = torch.tensor([[0.2, 0.5, 0.3]] * 4)
    returns = torch.tensor([0.5, 0.5, 5.0, -0.25])
    discounts = torch.tensor([0.5, 0.0, 0.9, 0.5])
    m = categorical_projection(p, returns, discounts, SUPPORT)
    # row 0: atoms 0.5 + 0.5 * (-1, 0, 1) = (0, 0.5, 1): 0.2 -> atom 0; 0.5 split 0/1 half each; 0.3 -> atom 1
    # row 1: terminal (discount 0): every atom is R = 0.5, halfway between 0 and 1
    # row 2: 5 + 0.9 z is beyond v_max = 1 for every z: all the mass on the top atom
    # row 3: -0.25 + 0.5 z = (-0.75, -0.25, 0.25): 0.2 -> 3/4 on -1, 1/4 on 0; 0.5 -> 1/4, 3/4; 0.3 -> 3/4 on 0, 1/4 on 1
    expected = torch.tensor(
        [
            [0.0, 0.2 + 0.25, 0.25 + 0.3],
            [0.0, 0.5, 0.5],
            [0.0, 0.0, 1.0],
            [0.2 * 0.75 + 0.5 * 0.25, 0.2 * 0.25 + 0.5 * 0.75 + 0.3 * 0.75, 0.3 * 0.25],
        ]
    )
    torch.testing.assert_close(m, expected)


def reference_projection(p, returns, discounts, support):
    """One atom at a time, as Algorithm 1 of Bellemare et al. 2017 reads."""
    n, v_min, v_max = len(support), support[0], support[-1]
    dz = (v_max - v_min) / (n - 1)
    out = np.zeros_like(p)
    for i in range(len(p)):
        for j in range(n):
            tz = min(max(returns[i] + discounts[i] * support[j], v_min), v_max)
            b = (tz - v_min) / dz
            lo, hi = int(np.floor(b)), int(np.ceil(b))
            if lo == hi:
                out[i, lo] += p[i, j]
            else:
                out[i, lo] += p[i, j] * (hi - b)
                out[i, hi] += p[i, j] * (b - lo)
    return out


def test_projection_matches_the_per_atom_algorithm_and_keeps_the_mass():
    rng = np.random.default_rng(0)
    support = np.linspace(-10, 10, 51)
    p = rng.dirichlet(np.ones(51), size=64)
    returns = rng.normal(0, 5, size=64)
    discounts = np.where(rng.random(64) < 0.2, 0.0, 0.99 ** rng.integers(1, 4, size=64))
    m = categorical_projection(*(torch.tensor(x, dtype=torch.float64) for x in (p, returns, discounts, support)))
    np.testing.assert_allclose(m.numpy(), reference_projection(p, returns, discounts, support), atol=1e-12)
    np.testing.assert_allclose(m.sum(dim=1).numpy(), 1.0, atol=1e-12)


class OneHot(nn.Module):
    """States 0..S-1 as one-hot features: a linear head then sets each (state, action) logit by hand."""

    def __init__(self, states: int):
        super().__init__()
        self.states, self.out_dim = states, states

    def forward(self, obs):
        return nn.functional.one_hot(obs.reshape(-1).long(), self.states).float()


def table_net(logits: torch.Tensor) -> DistributionalQNetwork:
    """logits: (S, A, N): the distribution of state s, action a."""
    s, a, n = logits.shape
    head = nn.Linear(s, a * n, bias=False)
    with torch.no_grad():
        head.weight.copy_(logits.reshape(s, a * n).T)
    return DistributionalQNetwork(OneHot(s), head, a, SUPPORT.clone())


def test_c51_update_uses_the_online_mean_to_pick_and_the_target_distribution_to_value(monkeypatch):
    # state 1 is s': the online net prefers action 0 there (mean 0.6 > -0.6), the target net action 1
    online = torch.zeros(2, 2, 3)
    online[1, 0] = torch.tensor([-5.0, 0.0, 1.0])
    online[1, 1] = torch.tensor([1.0, 0.0, -5.0])
    target = torch.zeros(2, 2, 3)
    target[1, 0] = torch.tensor([2.0, 0.0, 0.0])  # Z'(s', 0): mostly -1
    target[1, 1] = torch.tensor([0.0, 0.0, 3.0])  # Z'(s', 1): mostly +1, the target net's own argmax
    batch = Batch(
        np.zeros((1, 1, 1), np.float32),
        np.array([1]),
        np.array([0.0], np.float32),
        np.ones((1, 1, 1), np.float32),
        np.array([1.0], np.float32),
        np.array([0]),
        np.array([1.0], np.float32),
    )
    for double_q, chosen in ((True, 0), (False, 1)):
        net = table_net(online)
        agent = DQNAgent(net, OptimizerConfig(name="adam", lr=1e-9), 2, double_q, "huber", torch.device("cpu"))
        with torch.no_grad():
            agent.target_network.head.weight.copy_(target.reshape(2, 6).T)
        m = torch.softmax(target[1, chosen], dim=0)  # R = 0, discount 1: the target is Z'(s', a*) itself
        log_p = torch.log_softmax(online[0, 1], dim=0)
        info = agent.update(batch)
        assert info.loss_name == "c51_loss"
        assert info.td_loss == pytest.approx(float(-(m * log_p).sum()), rel=1e-5)
        kl = float((m * (m.log() - log_p)).sum())
        assert info.td_errors[0] == pytest.approx(kl, rel=1e-4) and kl > 0  # the PER priority
        assert info.q_values == pytest.approx(float((log_p.exp() * SUPPORT).sum()), abs=1e-6)


def test_c51_networks_give_mean_q_values_with_and_without_dueling():
    for dueling in (False, True):
        cfg = NetworkConfig(name="mlp", hidden_sizes=[16], dueling=dueling, distributional="c51", atoms=11)
        net = build_network(cfg, (1, 4), 3)
        obs = torch.randn(5, 1, 4)
        log_p = net.log_probs(obs)
        assert log_p.shape == (5, 3, 11)
        torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(5, 3))
        torch.testing.assert_close(net(obs), (log_p.exp() * torch.linspace(-10, 10, 11)).sum(-1))
    cnn = build_network(NetworkConfig(name="minatar_cnn", cnn_hidden=8, distributional="c51"), (1, 4, 10, 10), 6)
    assert cnn.log_probs(torch.zeros(2, 1, 4, 10, 10)).shape == (2, 6, 51)


def test_c51_trains_evaluates_and_logs_its_loss_through_the_cli(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    args = ["network.distributional=c51", "network.v_min=0", "network.v_max=100", "replay=prioritized"]
    proc = run_dqn("train", *TINY, *args, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["updates"] > 0 and summary["final_eval_mean_return"] is not None
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert "losses/c51_loss" in acc.Tags()["scalars"] and "losses/td_loss" not in acc.Tags()["scalars"]
    evaluated = run_dqn("eval", f"checkpoint={run}", "episodes=2", f"hydra.run.dir={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr
    assert last_json_line(evaluated.stdout)["episodes"] == 2
    bad = run_dqn("train", "network.distributional=c52", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "network.distributional must be one of none, c51, qr" in bad.stderr


def test_quantile_huber_loss_by_hand():
    """N = 2 quantiles at tau = 1/4, 3/4, theta = (0, 1), target samples (0.5, 0.5): every |u| = 0.5,
    Huber 0.125; weights |1/4 - 0| for theta_0 (u > 0) and |3/4 - 1| for theta_1 (u < 0): 2 * 0.25 * 0.125."""
    taus = torch.tensor([0.25, 0.75])
    loss = quantile_huber_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), taus)
    assert float(loss) == pytest.approx(0.0625)
    # beyond kappa = 1 the loss is linear: u = 3 for theta_0 only -> 0.25 * (3 - 0.5), u = 2 -> 0.25 * 1.5
    far = quantile_huber_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0]]), taus)
    assert float(far) == pytest.approx(0.25 * 2.5 + 0.75 * 1.5)
    # the quantiles that minimise it are the target's: for samples 0..99, theta_i -> the tau_i quantile
    theta = torch.zeros(1, 4, requires_grad=True)
    samples = torch.arange(100.0)[None]
    taus4 = (2 * torch.arange(4.0) + 1) / 8
    opt = torch.optim.Adam([theta], lr=0.5)
    for _ in range(2000):
        opt.zero_grad()
        quantile_huber_loss(theta, samples, taus4).sum().backward()
        opt.step()
    np.testing.assert_allclose(theta.detach().numpy()[0], [12.5, 37.5, 62.5, 87.5], atol=1.5)


def test_qr_update_values_a_star_with_the_target_quantiles():
    cfg = NetworkConfig(name="mlp", hidden_sizes=[8], distributional="qr", quantiles=5)
    net = build_network(cfg, (1, 1), 2)
    assert isinstance(net, QuantileQNetwork) and net.quantile_values(torch.zeros(3, 1, 1)).shape == (3, 2, 5)
    torch.testing.assert_close(net.taus, torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]))
    agent = DQNAgent(net, OptimizerConfig(name="adam", lr=1e-9), 2, True, "huber", torch.device("cpu"))
    batch = Batch(
        np.zeros((2, 1, 1), np.float32),
        np.array([0, 1]),
        np.array([1.0, 2.0], np.float32),
        np.ones((2, 1, 1), np.float32),
        np.array([0.9, 0.0], np.float32),
        np.array([0, 1]),
        np.ones(2, np.float32),
    )
    with torch.no_grad():
        obs, next_obs = torch.zeros(2, 1, 1), torch.ones(2, 1, 1)
        a_star = net(next_obs).argmax(dim=1)
        next_theta = agent.target_network.quantile_values(next_obs)[torch.arange(2), a_star]
        target = torch.tensor([1.0, 2.0])[:, None] + torch.tensor([0.9, 0.0])[:, None] * next_theta
        theta = net.quantile_values(obs)[torch.arange(2), torch.tensor([0, 1])]
        expected = quantile_huber_loss(theta, target, net.taus)
    info = agent.update(batch)
    assert info.loss_name == "qr_loss" and info.td_loss == pytest.approx(float(expected.mean()), rel=1e-5)
    np.testing.assert_allclose(info.td_errors, expected.numpy(), rtol=1e-5)  # the PER priorities


def test_qr_dqn_trains_and_evaluates_through_the_cli(tmp_path):
    run = tmp_path / "run"
    args = ["network.distributional=qr", "network.quantiles=16", "replay=prioritized", "network.dueling=true"]
    proc = run_dqn("train", *TINY, *args, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["updates"] > 0
    evaluated = run_dqn("eval", f"checkpoint={run}", "episodes=2", f"hydra.run.dir={tmp_path / 'eval'}")
    assert evaluated.returncode == 0 and last_json_line(evaluated.stdout)["episodes"] == 2, evaluated.stderr


def test_noisy_nets_train_without_epsilon_and_evaluate_with_the_mean_weights(tmp_path):
    run = tmp_path / "run"
    args = ["network.noisy=true", "schedule.epsilon_start=0", "schedule.epsilon_end=0", "network.distributional=c51"]
    proc = run_dqn("train", *TINY, *args, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    returns = []
    for k in range(2):  # the mean weights: the same seed plays the same episodes
        ev = run_dqn("eval", f"checkpoint={run}", "episodes=3", "seed=5", f"hydra.run.dir={tmp_path / str(k)}")
        assert ev.returncode == 0, ev.stderr
        returns.append(last_json_line(ev.stdout)["returns"])
    assert returns[0] == returns[1]
