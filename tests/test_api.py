"""The Python API: dqn_cli.load(PATH) gives an agent that plays its env, in SB3's convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dqn_cli
from dqn_cli.errors import CheckpointError


def test_load_predict_and_make_env_play_an_episode(trained_run):
    agent = dqn_cli.load(trained_run)
    assert agent.config.env.id == "CartPole-v1" and agent.env_steps == 400
    env = agent.make_env()
    obs, _ = env.reset(seed=3)
    steps, done = 0, False
    while not done:
        action, state = agent.predict(obs, deterministic=True)
        q = agent.q_network(torch.as_tensor(obs, dtype=torch.float32).reshape(1, 1, -1))
        assert isinstance(action, int) and action == int(q.argmax()) and state is None
        obs, _, terminated, truncated, _ = env.step(action)
        steps, done = steps + 1, terminated or truncated
    assert steps <= agent.config.env.max_episode_steps  # the run's own time limit (50 in TINY)
    batch, _ = agent.predict(np.stack([obs, obs, obs]))
    assert batch.shape == (3,) and batch.dtype == np.int64
    with pytest.raises(ValueError, match="this agent takes"):
        agent.predict(np.zeros(7))


def test_load_takes_a_checkpoint_file_or_the_best_and_refuses_what_is_not_one(trained_run, tmp_path):
    best = dqn_cli.load(trained_run, which="best")
    last = dqn_cli.load(trained_run / "checkpoints" / "last.pt")
    assert (
        best.env_steps
        == torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)["counters"]["env_steps"]
    )
    assert last.env_steps == 400
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        dqn_cli.load(tmp_path / "junk.pt")
    explore = dqn_cli.load(trained_run)
    explore.config.schedule.epsilon_end = 1.0  # deterministic=False explores at the final epsilon
    actions = [explore.predict(np.zeros(4, dtype=np.float32), deterministic=False)[0] for _ in range(200)]
    assert set(actions) == {0, 1}
