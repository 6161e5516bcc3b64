"""Q-networks: dueling aggregation by value, torso and output shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dqn_cli.config import NetworkConfig
from dqn_cli.core.networks import DuelingHead, MLPTorso, NatureCNNTorso, QNetwork, build_network


def hand_set_head(aggregator: str) -> DuelingHead:
    """V(x) = x0 + 0.5; A(x) = (x0, x1, x0 + x1 - 1)."""
    head = DuelingHead(2, 3, aggregator)
    with torch.no_grad():
        head.value.weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.value.bias.copy_(torch.tensor([0.5]))
        head.advantage.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        head.advantage.bias.copy_(torch.tensor([0.0, 0.0, -1.0]))
    return head


def test_dueling_mean_by_value():
    head = hand_set_head("mean")
    x = torch.tensor([[1.0, 2.0], [0.0, -3.0]])
    # row 0: V = 1.5, A = (1, 2, 2), mean 5/3 -> Q = 1.5 + A - 5/3
    # row 1: V = 0.5, A = (0, -3, -4), mean -7/3 -> Q = 0.5 + A + 7/3
    expected = torch.tensor(
        [[1.5 + 1 - 5 / 3, 1.5 + 2 - 5 / 3, 1.5 + 2 - 5 / 3], [0.5 + 0 + 7 / 3, 0.5 - 3 + 7 / 3, 0.5 - 4 + 7 / 3]]
    )
    q = head(x)
    torch.testing.assert_close(q, expected)
    torch.testing.assert_close(q.mean(dim=1), torch.tensor([1.5, 0.5]))  # mean Q = V


def test_dueling_max_by_value():
    head = hand_set_head("max")
    x = torch.tensor([[1.0, 2.0], [0.0, -3.0]])
    # row 0: max A = 2 -> Q = (0.5, 1.5, 1.5); row 1: max A = 0 -> Q = (0.5, -2.5, -3.5)
    expected = torch.tensor([[0.5, 1.5, 1.5], [0.5, -2.5, -3.5]])
    q = head(x)
    torch.testing.assert_close(q, expected)
    torch.testing.assert_close(q.max(dim=1).values, torch.tensor([1.5, 0.5]))  # max Q = V


def test_dueling_gradients_reach_both_streams():
    head = hand_set_head("mean")
    head(torch.randn(4, 2)).sum().backward()
    assert head.value.weight.grad is not None and head.advantage.weight.grad is not None


def test_nature_cnn_shapes_for_atari_frames():
    torso = NatureCNNTorso((4, 84, 84), hidden=512, activation="relu")
    obs = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    features = torso(obs)
    assert features.shape == (5, 512) and features.dtype == torch.float32
    assert torso.fc[0].in_features == 64 * 7 * 7  # 84 -> 20 -> 9 -> 7
    for dueling in (False, True):
        cfg = NetworkConfig(name="nature_cnn", dueling=dueling, cnn_hidden=512)
        net = build_network(cfg, (4, 84, 84), n_actions=6)
        q = net(obs)
        assert q.shape == (5, 6) and q.dtype == torch.float32
        assert isinstance(net.head, DuelingHead) == dueling


def test_nature_cnn_scales_frames_to_unit_range():
    torso = NatureCNNTorso((4, 84, 84), hidden=16, activation="relu")
    ones = torch.full((1, 4, 84, 84), 255, dtype=torch.uint8)
    torch.testing.assert_close(torso(ones), torso.fc(torso.conv(torch.ones(1, 4, 84, 84))))


def test_mlp_shapes():
    torso = MLPTorso((2, 4), hidden_sizes=[64, 32], activation="tanh")
    assert torso.out_dim == 32
    assert torso(torch.zeros(7, 2, 4)).shape == (7, 32)
    linears = [m for m in torso.body if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 64), (64, 32)]
    for dueling, agg in ((False, "mean"), (True, "mean"), (True, "max")):
        cfg = NetworkConfig(name="mlp", hidden_sizes=[32, 32], dueling=dueling, dueling_aggregator=agg)
        net = build_network(cfg, (1, 4), n_actions=2)
        assert isinstance(net, QNetwork)
        assert net(torch.zeros(3, 1, 4)).shape == (3, 2)
        if dueling:
            assert net.head.aggregator == agg
    no_hidden = MLPTorso((1, 4), hidden_sizes=[], activation="relu")
    assert no_hidden.out_dim == 4


def test_build_network_refuses_mismatched_inputs():
    with pytest.raises(ValueError):
        build_network(NetworkConfig(name="nature_cnn"), (1, 4), n_actions=2)
    with pytest.raises(ValueError):
        build_network(NetworkConfig(name="transformer"), (1, 4), n_actions=2)


def test_every_allowed_network_and_activation_builds():
    """The builders cover exactly what the config allows: each name in config.NETWORKS builds for its
    observations, and each activation of config.ACTIVATIONS is the torch.nn layer it names."""
    from dqn_cli.config import ACTIVATIONS, NETWORKS
    from dqn_cli.core.networks import activation_layer

    shapes = {"mlp": (1, 4), "nature_cnn": (4, 84, 84), "minatar_cnn": (1, 4, 10, 10)}
    assert set(shapes) == set(NETWORKS)
    for name in NETWORKS:
        net = build_network(NetworkConfig(name=name, hidden_sizes=[8], cnn_hidden=8), shapes[name], 3)
        assert net(torch.zeros(2, *shapes[name])).shape == (2, 3)
    for name, layer in ACTIVATIONS.items():
        assert type(activation_layer(name)).__name__ == layer


def test_noisy_linear_is_factorised_gaussian_and_its_mean_in_eval_mode():
    from dqn_cli.core.networks import NoisyLinear

    torch.manual_seed(0)
    layer = NoisyLinear(9, 4, std_init=0.5)
    assert torch.all(layer.weight_sigma == 0.5 / 3) and torch.all(layer.weight_mu.abs() <= 1 / 3)
    assert torch.linalg.matrix_rank(layer.weight_epsilon) == 1  # eps_w = f(eps_out) f(eps_in)^T
    torch.testing.assert_close(
        layer.weight_epsilon[:, 0] / layer.weight_epsilon[0, 0], layer.bias_epsilon / layer.bias_epsilon[0]
    )
    x = torch.randn(5, 9)
    noisy = layer(x)
    layer.reset_noise()
    assert not torch.allclose(noisy, layer(x))  # new noise, new output
    layer.eval()
    torch.testing.assert_close(layer(x), x @ layer.weight_mu.T + layer.bias_mu)  # the mean weights
    assert "weight_epsilon" not in layer.state_dict()  # noise is drawn again, never saved


def test_noisy_linear_without_forming_its_weight_is_the_papers_layer():
    """y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b, written out with the weight formed,
    gives the layer's output and the gradients of all four parameters and of x."""
    from dqn_cli.core.networks import NoisyLinear

    torch.manual_seed(1)
    layer = NoisyLinear(7, 5, std_init=0.5)
    with torch.no_grad():  # sigma away from its constant start, so a wrong pairing of eps shows
        layer.weight_sigma.mul_(torch.rand(5, 7) + 0.5)
        layer.bias_sigma.mul_(torch.rand(5) + 0.5)
    x = torch.randn(3, 7, dtype=torch.float32, requires_grad=True)
    eps_in, eps_out = layer.epsilon_in.clone(), layer.epsilon_out.clone()
    params = (layer.weight_mu, layer.weight_sigma, layer.bias_mu, layer.bias_sigma)

    def by_hand() -> torch.Tensor:
        w = layer.weight_mu + layer.weight_sigma * (eps_out[:, None] * eps_in[None, :])
        return x @ w.T + layer.bias_mu + layer.bias_sigma * eps_out

    g = torch.randn(3, 5)
    expected = by_hand()
    expected_grads = torch.autograd.grad(expected, (*params, x), g)
    y = layer(x)
    torch.testing.assert_close(y, expected)
    for got, want in zip(torch.autograd.grad(y, (*params, x), g), expected_grads):
        torch.testing.assert_close(got, want)


def test_noisy_network_replaces_every_linear_layer_and_the_agent_resamples_its_noise():
    from dqn_cli.config import OptimizerConfig
    from dqn_cli.core.agent import DQNAgent
    from dqn_cli.core.networks import NoisyLinear
    from dqn_cli.replay.storage import Batch

    for cfg, shape in (
        (NetworkConfig(name="mlp", hidden_sizes=[8, 8], dueling=True, noisy=True), (1, 4)),
        (NetworkConfig(name="minatar_cnn", cnn_hidden=8, noisy=True, distributional="c51", atoms=5), (1, 4, 10, 10)),
    ):
        net = build_network(cfg, shape, 3)
        assert not [m for m in net.modules() if type(m) is torch.nn.Linear]
        assert len([m for m in net.modules() if isinstance(m, NoisyLinear)]) >= 2
    net = build_network(NetworkConfig(name="mlp", hidden_sizes=[8], noisy=True), (1, 4), 2)
    agent = DQNAgent(net, OptimizerConfig(name="adam", lr=1e-3), 2, True, "huber", torch.device("cpu"))
    obs = np.random.default_rng(0).normal(size=(64, 1, 4)).astype(np.float32)
    agent.act(obs, 0.0)
    eps_before = net.head.weight_epsilon.clone()
    agent.act(obs, 0.0)
    assert not torch.equal(net.head.weight_epsilon, eps_before)  # new noise at every acting step
    batch = Batch(
        obs[:8],
        np.zeros(8, np.int64),
        np.ones(8, np.float32),
        obs[8:16],
        np.full(8, 0.9, np.float32),
        np.arange(8),
        np.ones(8, np.float32),
    )
    agent.update(batch)
    assert not torch.equal(net.head.weight_epsilon, agent.target_network.head.weight_epsilon)  # independent noise
