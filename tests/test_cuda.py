"""The CUDA paths (marked `cuda`; skipped where torch sees no GPU): an update on the GPU is the
update on the CPU, a run trains on `device=cuda` through the real entrypoint, and its
checkpoint evaluates and resumes on the CPU. scripts/gpu_check.sh runs them on a lent GPU."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from helpers import TINY, last_json_line, run_dqn

from dqn_cli.config import NetworkConfig, OptimizerConfig
from dqn_cli.core.agent import DQNAgent
from dqn_cli.core.networks import build_network
from dqn_cli.replay.storage import Batch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: run on a GPU (scripts/gpu_check.sh)"),
]


def _batch(rng, size=32, obs_shape=(1, 4)):
    obs = rng.standard_normal((size, *obs_shape)).astype(np.float32)
    return Batch(
        obs,
        rng.integers(2, size=size),
        rng.standard_normal(size).astype(np.float32),
        rng.standard_normal((size, *obs_shape)).astype(np.float32),
        np.full(size, 0.99**3, np.float32),
        np.arange(size),
        rng.uniform(0.5, 1.0, size).astype(np.float32),
    )


@pytest.mark.parametrize("head", ["none", "c51", "qr"])
def test_an_update_on_the_gpu_is_the_update_on_the_cpu(head):
    torch.manual_seed(0)
    net = build_network(NetworkConfig(hidden_sizes=[32], dueling=True, distributional=head, quantiles=8), (1, 4), 2)
    cpu = DQNAgent(copy.deepcopy(net), OptimizerConfig(), 2, True, "huber", torch.device("cpu"))
    gpu = DQNAgent(copy.deepcopy(net).cuda(), OptimizerConfig(), 2, True, "huber", torch.device("cuda"))
    batch = _batch(np.random.default_rng(0))
    for _ in range(3):
        a, b = cpu.update(batch), gpu.update(batch)
        assert abs(a.td_loss - b.td_loss) < 1e-4 * max(1.0, abs(a.td_loss))
        np.testing.assert_allclose(a.td_errors, b.td_errors, rtol=1e-3, atol=1e-4)
    for p, q in zip(cpu.q_network.parameters(), gpu.q_network.parameters()):
        torch.testing.assert_close(p, q.cpu(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("algo", ["dqn", "pqn"])
def test_a_run_on_cuda_evaluates_and_resumes_on_the_cpu(tmp_path, algo):
    run = tmp_path / "run"
    first = run_dqn("train", *TINY, f"algo={algo}", "device=cuda", "total_steps=200", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    saved = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert "cuda" in saved["rng"]  # the GPU's generators travel with the checkpoint
    evaluated = run_dqn("eval", f"checkpoint={run}", "episodes=2", "device=cpu", f"hydra.run.dir={tmp_path / 'e'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert len(last_json_line(evaluated.stdout)["returns"]) == 2
    again = run_dqn("train", f"resume={run}", "total_steps=400", "device=cpu")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["total_steps"] == 400


def test_a_compiled_update_on_the_gpu_is_the_eager_one():
    """compile=true on CUDA: mode="reduce-overhead", the update replayed as CUDA graphs."""
    torch.manual_seed(0)
    net = build_network(NetworkConfig(hidden_sizes=[32], dueling=True), (1, 4), 2).cuda()
    device = torch.device("cuda")
    eager = DQNAgent(copy.deepcopy(net), OptimizerConfig(), 2, True, "huber", device)
    graphs = DQNAgent(copy.deepcopy(net), OptimizerConfig(), 2, True, "huber", device, compile=True)
    batch = _batch(np.random.default_rng(1))
    for _ in range(4):  # the first calls record the graphs, the later ones replay them
        a, b = eager.update(batch), graphs.update(batch)
        assert abs(a.td_loss - b.td_loss) < 1e-4 * max(1.0, abs(a.td_loss))
