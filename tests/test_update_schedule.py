"""Gradient steps owed while the buffer cannot fill a batch are dropped, never run in a burst."""

from __future__ import annotations

from helpers import tiny

import dqn_cli.run.trainer as trainer
from dqn_cli.core.agent import DQNAgent
from dqn_cli.run.checkpoint import load_checkpoint


def test_no_burst_of_updates_when_the_buffer_first_fills(monkeypatch, tmp_path):
    """With learning_starts=0, the CartPole preset's batch of 256 and train_every=8 the loop used
    to run ~33 updates in one vector step on the first 256 or so transitions."""
    per_step: list[int] = []
    real_update = DQNAgent.update

    def counting(self, batch):
        per_step[-1] += 1
        return real_update(self, batch)

    real_act = DQNAgent.act

    def acting(self, obs, eps):
        per_step.append(0)  # one entry per vector step
        return real_act(self, obs, eps)

    monkeypatch.setattr(DQNAgent, "update", counting)
    monkeypatch.setattr(DQNAgent, "act", acting)
    cfg = tiny("total_steps=400", "learning_starts=0", "batch_size=256", "train_every=8")
    cfg.replay.n_step = 3
    summary = trainer.train(cfg, tmp_path)
    counters = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["counters"]
    assert summary["updates"] == sum(per_step) == counters["updates"]
    assert summary["updates"] + counters["updates_dropped"] == 400 // 8  # every step owed is run or dropped
    assert counters["updates_dropped"] > 25  # the ~270 steps before 256 transitions could be sampled
    assert max(per_step) == 1  # 4 envs x 1 step < train_every: never more than one update per vector step
