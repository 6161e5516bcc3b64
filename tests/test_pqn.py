"""PQN (algo=pqn): the Q(lambda) returns against a hand computation, episode ends inside a
rollout (terminated: no bootstrap; truncated: the true final observation's value), LayerNorm,
and the loop through the real entrypoint (train, stop and resume, `dqn eval`)."""

from __future__ import annotations

import json

import numpy as np
import torch
from helpers import TINY, assert_no_repeated_or_forked_points, compose, last_json_line, run_dqn, tiny

from dqn_cli.core.networks import build_network
from dqn_cli.core.pqn import PQNAgent, q_lambda_returns
from dqn_cli.run import pqn_loop, trainer


def test_q_lambda_returns_by_hand():
    """gamma 0.9, lambda 0.5. Env 0 never ends; env 1 terminates at t=1 and is truncated at t=2."""
    rewards = np.array([[1, 1], [2, 1], [3, 1], [4, 1]], dtype=np.float32)
    next_values = np.array([[10, 5], [20, 99], [30, 7], [40, 8]], dtype=np.float32)  # 99: after a termination
    terminated = np.array([[0, 0], [0, 1], [0, 0], [0, 0]], dtype=bool)
    ended = np.array([[0, 0], [0, 1], [0, 1], [0, 0]], dtype=bool)
    g = q_lambda_returns(rewards, next_values, terminated, ended, gamma=0.9, lam=0.5)
    # env 0: G3 = 4 + .9*40; G2 = 3 + .9*(.5*G3 + .5*30); G1 = 2 + .9*(.5*G2 + .5*20); G0 = 1 + .9*(.5*G1 + .5*10)
    np.testing.assert_allclose(g[:, 0], [17.43625, 26.525, 34.5, 40.0], rtol=1e-6)
    # env 1: G3 = 1 + .9*8; G2 = 1 + .9*7 (cut: the final observation's value, nothing of t=3's episode);
    # G1 = 1 (terminated); G0 = 1 + .9*(.5*G1 + .5*5)
    np.testing.assert_allclose(g[:, 1], [3.7, 1.0, 7.3, 8.2], rtol=1e-6)
    assert g.dtype == np.float32 and g.shape == (4, 2)


def test_q_lambda_at_its_ends_is_one_step_q_learning_and_the_discounted_return():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(6, 3)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    terminated = np.zeros((6, 3), dtype=bool)
    terminated[2, 1] = True
    ended = terminated.copy()
    one_step = q_lambda_returns(rewards, values, terminated, ended, gamma=0.99, lam=0.0)
    np.testing.assert_allclose(one_step, rewards + 0.99 * np.where(terminated, 0, values), rtol=1e-5)
    monte_carlo = q_lambda_returns(rewards, values, terminated, ended, gamma=0.99, lam=1.0)
    expected = rewards[:, 0].astype(np.float64)
    acc = values[-1, 0]
    for t in reversed(range(6)):
        acc = rewards[t, 0] + 0.99 * acc
        expected[t] = acc
    np.testing.assert_allclose(monte_carlo[:, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(monte_carlo[2, 1], rewards[2, 1])  # the terminal step: its reward alone


def test_the_loop_bootstraps_a_truncated_episode_from_its_final_observation(monkeypatch, tmp_path):
    """With 5-step episodes every rollout holds time-limit cuts. The values the loop passes to the
    returns come from max_q of the true final observation (marked 1000 here) where an episode was
    cut, from the next acting step's max Q (marked -1) elsewhere, and from max_q after the rollout's
    last step."""
    seen = []
    real = pqn_loop.q_lambda_returns

    def recording(rewards, next_values, terminated, ended, gamma, lam):
        seen.append((next_values.copy(), terminated.copy(), ended.copy()))
        return real(rewards, next_values, terminated, ended, gamma, lam)

    finals = []

    def max_q(self, obs):
        finals.append(obs.copy())
        return np.full(obs.shape[0], 1000.0, dtype=np.float32)

    real_act = PQNAgent.act

    def act(self, obs, eps):
        actions, _ = real_act(self, obs, eps)
        return actions, np.full(obs.shape[0], -1.0, dtype=np.float32)

    monkeypatch.setattr(pqn_loop, "q_lambda_returns", recording)
    monkeypatch.setattr(PQNAgent, "max_q", max_q)
    monkeypatch.setattr(PQNAgent, "act", act)
    cfg = tiny("algo=pqn", "total_steps=256", "env.max_episode_steps=5", "env.num_envs=4", "pqn.rollout_steps=16")
    trainer.train(cfg, tmp_path)
    assert len(seen) == 4  # 256 env steps in rollouts of 4 x 16
    for next_values, terminated, ended in seen:
        cut = ended & ~terminated
        assert cut.sum() >= 8  # episodes of at most 5 steps
        assert (next_values[cut] == 1000).all()
        carried = ~ended
        carried[-1] = False
        assert (next_values[carried] == -1).all()
        assert (next_values[-1][~ended[-1]] == 1000).all()
    assert all(f.shape[1:] == (1, 4) for f in finals)  # whole stacks of CartPole's (4,) states


def test_returns_are_in_units_of_the_scaled_reward(monkeypatch, tmp_path):
    """pqn.reward_scale multiplies CartPole's reward of 1 per step before the returns (purejaxql's
    REW_SCALE); the CartPole preset uses 0.1."""
    seen = []
    real = pqn_loop.q_lambda_returns

    def recording(rewards, *args):
        seen.append(rewards.copy())
        return real(rewards, *args)

    monkeypatch.setattr(pqn_loop, "q_lambda_returns", recording)
    cfg = tiny("algo=pqn", "total_steps=128", "env.num_envs=4", "pqn.rollout_steps=16", "pqn.reward_scale=0.1")
    trainer.train(cfg, tmp_path)
    assert len(seen) == 2 and all(np.allclose(r, 0.1) for r in seen)
    assert compose("algo=pqn").pqn.reward_scale == 0.1 and compose("env=minatar", "algo=pqn").pqn.reward_scale == 1.0


def test_layer_norm_normalises_every_hidden_layer():
    cfg = compose("algo=pqn").network
    assert cfg.norm == "layer" and not cfg.dueling
    net = build_network(cfg, (1, 4), 2)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert [m.normalized_shape for m in norms] == [(w,) for w in cfg.hidden_sizes]
    hidden = net.torso.body[:3](torch.randn(5, 1, 4) * 100)  # Linear, LayerNorm: zero mean, unit variance
    torch.testing.assert_close(hidden.mean(dim=1), torch.zeros(5), atol=1e-5, rtol=0)
    cnn = build_network(compose("env=minatar", "algo=pqn").network, (1, 4, 10, 10), 6)
    assert any(isinstance(m, torch.nn.GroupNorm) and m.num_groups == 1 for m in cnn.modules())


def test_pqn_presets_take_the_papers_values():
    atari = compose("env=breakout", "algo=pqn")
    assert (atari.env.num_envs, atari.pqn.rollout_steps, atari.pqn.epochs, atari.pqn.minibatches) == (128, 32, 2, 32)
    assert (atari.optimizer.name, atari.optimizer.lr, atari.optimizer.lr_end) == ("radam", 2.5e-4, 0.0)
    assert (atari.schedule.epsilon_end, atari.schedule.epsilon_decay_steps) == (0.001, atari.total_steps // 10)
    assert (atari.pqn.q_lambda, atari.loss, atari.optimizer.max_grad_norm) == (0.65, "mse", 10.0)
    assert compose("env=minatar", "algo=pqn").optimizer.lr == 5e-4
    assert compose("algo=pqn", "pqn.q_lambda=0.9").pqn.q_lambda == 0.9  # the command line wins


def test_pqn_refuses_a_distributional_head_in_one_line(tmp_path):
    proc = run_dqn("train", "algo=pqn", "network.distributional=c51", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and not (tmp_path / "run").exists()
    assert proc.stderr.strip().splitlines() == [
        "dqn train: error: algo=pqn learns expected Q-values with epsilon-greedy exploration; "
        "set network.distributional=none and network.noisy=false"
    ]


PQN_TINY = [*TINY, "algo=pqn", "env.num_envs=4", "pqn.rollout_steps=25", "pqn.epochs=2", "pqn.minibatches=4"]


def test_pqn_trains_stops_resumes_and_evaluates(tmp_path):
    """400 env steps in rollouts of 100; a second run resumes it from 200 to 400 with no repeated TB step."""
    run = tmp_path / "run"
    first = run_dqn("train", *PQN_TINY, "total_steps=200", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_dqn("train", f"resume={run}", "total_steps=400")
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["algo"], summary["total_steps"], summary["replay_bytes_per_transition"]) == ("pqn", 400, None)
    assert summary["updates"] == 4 * 2 * 4  # 4 rollouts x 2 epochs x 4 minibatches
    steps = assert_no_repeated_or_forked_points(run / "tb")
    assert steps["losses/td_loss"][-1] == 400 and steps["eval/mean_return"] == [200, 400]
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert "target_network" not in state["agent"] and state["config"]["network"]["norm"] == "layer"
    evaluated = run_dqn("eval", f"checkpoint={run}", "episodes=2", f"hydra.run.dir={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert len(last_json_line(evaluated.stdout)["returns"]) == 2


def test_a_resumed_pqn_run_is_the_uninterrupted_run(tmp_path):
    """Checkpoints fall at rollout ends, so a resumed CartPole run (its envs captured) repeats the
    uninterrupted one bitwise."""
    exact = [*PQN_TINY, "device=cpu", "torch_threads=1", "optimizer.lr_decay_steps=400"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert run_dqn("train", *exact, f"hydra.run.dir={whole}").returncode == 0
    assert run_dqn("train", *exact, "total_steps=200", f"hydra.run.dir={parts}").returncode == 0
    assert run_dqn("train", f"resume={parts}", "total_steps=400").returncode == 0
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=False)["agent"]["q_network"]
    b = torch.load(parts / "checkpoints" / "last.pt", weights_only=False)["agent"]["q_network"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_pqn_needs_no_learning_starts():
    """DQN's learning_starts (80k steps on Atari) is not PQN's: a short PQN run is not refused for it."""
    cfg = compose("env=breakout", "algo=pqn", "total_steps=512")
    assert cfg.learning_starts > cfg.total_steps
