"""compile=true: torch.compile'd losses and acting give the eager agent's numbers, and a run
through the real entrypoint trains with it (and resumes without it: it changes no result)."""

from __future__ import annotations

import copy
import json

import numpy as np
import torch
from helpers import TINY, run_dqn

from dqn_cli.config import NetworkConfig, OptimizerConfig
from dqn_cli.core.agent import DQNAgent
from dqn_cli.core.networks import build_network
from dqn_cli.core.pqn import PQNAgent
from dqn_cli.replay.storage import Batch


def test_a_compiled_update_is_the_eager_update():
    torch.manual_seed(0)
    net = build_network(NetworkConfig(hidden_sizes=[16], dueling=True), (1, 4), 2)
    eager = DQNAgent(copy.deepcopy(net), OptimizerConfig(), 2, True, "huber", torch.device("cpu"))
    fast = DQNAgent(copy.deepcopy(net), OptimizerConfig(), 2, True, "huber", torch.device("cpu"), compile=True)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((32, 1, 4)).astype(np.float32)
    batch = Batch(
        obs,
        rng.integers(2, size=32),
        rng.standard_normal(32).astype(np.float32),
        rng.standard_normal((32, 1, 4)).astype(np.float32),
        np.full(32, 0.97, np.float32),
        np.arange(32),
        np.ones(32, np.float32),
    )
    for _ in range(3):
        a, b = eager.update(batch), fast.update(batch)
        assert abs(a.td_loss - b.td_loss) < 1e-5 and abs(a.grad_norm - b.grad_norm) < 1e-4
        np.testing.assert_allclose(a.td_errors, b.td_errors, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(eager.act(obs[:4], 0.0), fast.act(obs[:4], 0.0))
    pqn = PQNAgent(copy.deepcopy(net), OptimizerConfig(), 2, torch.device("cpu"), compile=True)
    pqn_eager = PQNAgent(copy.deepcopy(net), OptimizerConfig(), 2, torch.device("cpu"))
    actions, returns = rng.integers(2, size=32), rng.standard_normal(32).astype(np.float32)
    (_, x), (_, y) = pqn.learn(obs, actions, returns, 1, 2), pqn_eager.learn(obs, actions, returns, 1, 2)
    assert abs(x.td_loss - y.td_loss) < 1e-5


def test_compile_true_trains_through_the_entrypoint_and_resumes_eager(tmp_path):
    run = tmp_path / "run"
    first = run_dqn("train", *TINY, "compile=true", "total_steps=200", f"hydra.run.dir={run}", timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_dqn("train", f"resume={run}", "compile=false", "total_steps=400")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["total_steps"] == 400
