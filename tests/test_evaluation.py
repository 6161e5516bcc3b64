"""Evaluations that always end and say what they did: a step cap (counted when it cuts),
progress lines, `eval.episodes=0`, per-episode returns, evals.csv and episodes.csv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY, last_json_line, read_csv, run_dqn, train_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dqn_cli.config import EnvConfig
from dqn_cli.envs.vector import describe_env
from dqn_cli.run.evaluate import eval_seeds, evaluate, make_eval_env


def scalars(tb_dir: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


class Stubborn(torch.nn.Module):
    """Always action 0: in CartPole it falls within ~10 steps; used with a cap below that."""

    def forward(self, obs):
        return torch.stack([torch.ones(obs.shape[0]), torch.zeros(obs.shape[0])], dim=1)


def test_the_cap_cuts_episodes_and_counts_them():
    cfg = EnvConfig()
    spec = describe_env(cfg)
    envs = make_eval_env(cfg, 6, 0, max_episode_steps=5)
    env_seeds, policy = eval_seeds(0, 6)
    try:
        result = evaluate(Stubborn(), envs, spec, 6, env_seeds, policy, 0.0, torch.device("cpu"), max_episode_steps=5)
    finally:
        envs.close()
    summary = result.summary()
    assert summary["lengths"] == [5] * 6 and summary["episodes_cut"] == 6  # every CartPole fall takes > 5 steps
    envs = make_eval_env(cfg, 6, 0, max_episode_steps=400)
    try:
        free = evaluate(Stubborn(), envs, spec, 6, env_seeds, policy, 0.0, torch.device("cpu"), max_episode_steps=400)
    finally:
        envs.close()
    assert free.summary()["episodes_cut"] == 0 and max(free.lengths) < 400  # it fell: not cut


class RandomLinear(torch.nn.Module):
    """A fixed random linear Q-function of CartPole's 4 numbers (episodes of many lengths); it
    keeps the batch size of every call (``batches``)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        g = torch.Generator().manual_seed(3)
        torch.nn.init.normal_(self.linear.weight, generator=g)
        torch.nn.init.normal_(self.linear.bias, generator=g)
        self.batches: list[int] = []

    def forward(self, obs):
        self.batches.append(obs.shape[0])
        return self.linear(obs.reshape(obs.shape[0], -1).float())


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_envs_that_played_their_quota_sit_out_and_the_scores_are_the_same(vectorization):
    """20 episodes on 4 envs (5 each), epsilon 0.3: the evaluation envs pause each env once it
    has played its 5 (its game is not stepped again, the network no longer values it), and the
    scored episodes are, to the number, those of envs that all play on (the same envs made
    without Pausable)."""
    from dqn_cli.envs.vector import make_vector_env

    cfg = EnvConfig(vectorization=vectorization)
    spec = describe_env(cfg)
    env_seeds, policy = eval_seeds(1, 4)
    results, networks = [], []
    for pausable in (True, False):
        # CartPole's training envs are its evaluation envs without Pausable
        envs = make_eval_env(cfg, 4, 0) if pausable else make_vector_env(cfg, 4, 0, training=True)
        assert bool(getattr(envs.unwrapped, "pausable", False)) == pausable
        networks.append(RandomLinear())
        try:
            results.append(evaluate(networks[-1], envs, spec, 20, env_seeds, policy, 0.3, torch.device("cpu")))
            if pausable:
                assert list(envs.unwrapped.get_attr("paused")) == [True] * 4  # each sat out after its 5
        finally:
            envs.close()
    paused, played_on = results
    assert paused.returns == played_on.returns and paused.lengths == played_on.lengths
    assert len(set(paused.lengths)) > 3  # episodes of many lengths: envs finished their 5 at different times
    valued_paused, valued_all = networks[0].batches, networks[1].batches
    assert set(valued_all) == {4} and set(valued_paused) == {1, 2, 3, 4}  # the last envs alone at the end
    assert len(valued_paused) == len(valued_all)  # one call per vector step all the same


@pytest.fixture(scope="module")
def capped_run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory, "capped", [*TINY, "eval.max_episode_steps=12"])


def test_training_evaluations_are_capped_and_logged(capped_run):
    rows = read_csv(capped_run / "evals.csv")
    assert [int(r["env_step"]) for r in rows] == [200, 400]
    summary = json.loads((capped_run / "summary.json").read_text())
    assert float(rows[-1]["mean_return"]) == pytest.approx(summary["final_eval_mean_return"])
    assert all(float(r["mean_length"]) <= 12 for r in rows)
    assert int(rows[-1]["episodes_cut"]) == summary["final_eval_episodes_cut"]
    tb = dict(scalars(capped_run / "tb", "eval/mean_return"))
    assert [tb[int(r["env_step"])] for r in rows] == pytest.approx([float(r["mean_return"]) for r in rows])
    log = (capped_run / "train.log").read_text()
    assert "evaluating at step 200: 0/2 episodes" in log


def test_episodes_csv_is_every_training_episode(capped_run):
    rows = read_csv(capped_run / "episodes.csv")
    tb = scalars(capped_run / "tb", "charts/episodic_return")
    assert [(int(r["env_step"]), float(r["return"])) for r in rows] == [(s, pytest.approx(v)) for s, v in tb]
    summary = json.loads((capped_run / "summary.json").read_text())
    assert summary["train_episodes"] == len(rows)
    assert all(1 <= int(r["length"]) <= 50 for r in rows)  # env.max_episode_steps=50 in TINY


def test_dqn_eval_caps_episodes_and_lists_returns_and_lengths(capped_run, tmp_path):
    proc = run_dqn(
        "eval", f"checkpoint={capped_run}", "episodes=3", "max_episode_steps=7", f"hydra.run.dir={tmp_path / 'eval'}"
    )
    assert proc.returncode == 0, proc.stderr
    out = last_json_line(proc.stdout)
    assert len(out["returns"]) == len(out["lengths"]) == 3 and max(out["lengths"]) <= 7
    assert out["episodes_cut"] == sum(length == 7 for length in out["lengths"])
    assert out["mean_return"] == pytest.approx(np.mean(out["returns"]))
    assert out["max_episode_steps"] == 7
    # without max_episode_steps=, the run's own eval.max_episode_steps applies
    proc = run_dqn(
        "eval",
        f"checkpoint={capped_run / 'checkpoints' / 'last.pt'}",
        "episodes=2",
        f"hydra.run.dir={tmp_path / 'eval2'}",
    )
    assert proc.returncode == 0 and last_json_line(proc.stdout)["max_episode_steps"] == 12


def test_eval_episodes_zero_skips_evaluation_and_returns_the_training_mean(tmp_path_factory):
    run = train_run(tmp_path_factory, "noeval", [*TINY, "eval.episodes=0"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_eval_mean_return"] is None and summary["best_eval_mean_return"] is None
    assert summary["eval_seconds"] == 0
    returns = [float(r["return"]) for r in read_csv(run / "episodes.csv")]
    assert summary["objective"] == pytest.approx(np.mean(returns[-100:]))
    assert summary["objective_is"] == "train_last100_mean_return"
    assert read_csv(run / "evals.csv") == []
    log = (run / "train.log").read_text()
    assert "no evaluation (eval.episodes=0)" in log
    # the closing hint names only what exists: no best.pt, no evaluation curve
    assert not (run / "checkpoints" / "best.pt").exists()
    assert f"next: dqn eval checkpoint={run} | " in log and f"dqn plot {run} --metric train" in log


def test_an_untrained_atari_agent_evaluation_ends_quickly(tmp_path):
    """A greedy Breakout agent that never presses FIRE plays until a cap: the preset's eval cap."""
    run_dir = tmp_path / "run"
    proc = run_dqn(
        "train",
        "env=breakout",
        "total_steps=64",
        "learning_starts=32",
        "batch_size=8",
        "replay.capacity=512",
        "env.num_envs=2",
        "env.vectorization=sync",
        "eval.episodes=1",
        "eval.epsilon=0",
        "eval.max_episode_steps=150",
        "progress=log",
        f"hydra.run.dir={run_dir}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_csv(run_dir / "evals.csv")
    assert len(rows) == 1 and float(rows[0]["mean_length"]) <= 150
