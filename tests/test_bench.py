"""dqn bench's update throughput builds each default network with its own observations."""

import pytest
import torch

from dqn_cli.bench.main import updates_per_second


@pytest.mark.parametrize("net", ["mlp", "minatar_cnn", "nature_cnn"])
def test_update_throughput_runs_each_default_network(net):
    assert updates_per_second(net, torch.device("cpu"), seconds=0.05, batch_size=4) > 0
