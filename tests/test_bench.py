"""dqn bench's update throughput builds each default network with its own observations, and
its Atari updates are the presets' own."""

import dataclasses

import pytest
import torch
from helpers import compose

from dqn_cli.bench.main import atari_update_parts, updates_per_second


@pytest.mark.parametrize("net", ["mlp", "minatar_cnn", "nature_cnn", "drq_eps", "der"])
def test_update_throughput_runs_each_default_network(net):
    assert updates_per_second(net, torch.device("cpu"), seconds=0.05, batch_size=4) > 0


@pytest.mark.parametrize(
    "net, overrides",
    [
        ("nature_cnn", ["env=breakout"]),
        ("drq_eps", ["algo=drq_eps", "env=atari100k", "env.game=Breakout"]),
        ("der", ["algo=der", "env=atari100k", "env.game=Breakout"]),
    ],
)
def test_the_atari_updates_measured_are_the_presets(net, overrides):
    network, optimizer, double_q = atari_update_parts(net)
    cfg = compose(*overrides)
    assert dataclasses.asdict(network) == dataclasses.asdict(cfg.network)
    keys = ("name", "lr", "eps", "weight_decay", "max_grad_norm")
    assert {k: getattr(optimizer, k) for k in keys} == {k: getattr(cfg.optimizer, k) for k in keys}
    assert double_q == cfg.double_q
