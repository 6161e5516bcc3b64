"""env.vectorization=envpool on classic control: EnvPool's next-step autoreset turned into SAME_STEP.

EnvPool's CartPole is its own C++ implementation with its own start-state generator, so frames
cannot be compared with the sync backend's step for step as Atari's are (tests/test_atari.py).
Instead every transition it returns is replayed through Gymnasium's CartPole from the same state:
the dynamics must agree, the step that ends an episode must carry the true final state in
``info["final_obs"]`` and already return a fresh start state, and no action may be dropped.
"""

from __future__ import annotations

import builtins
import json

import gymnasium as gym
import numpy as np
import pytest
from helpers import run_dqn

from dqn_cli.config import ConfigError, EnvConfig
from dqn_cli.envs.vector import make_vector_env


def cartpole(**kw) -> EnvConfig:
    return EnvConfig(**{**dict(vectorization="envpool"), **kw})


def test_cartpole_steps_like_gymnasium_and_resets_in_the_same_step():
    envs = make_vector_env(cartpole(max_episode_steps=30), 3, seed=0)
    reference = gym.make("CartPole-v1").unwrapped
    reference.reset(seed=0)
    rng = np.random.default_rng(0)
    obs, _ = envs.reset(seed=[11, 12, 13])
    assert obs.shape == (3, 4) and obs.dtype == np.float32
    lengths, ended_by = np.zeros(3, dtype=int), {"terminated": 0, "truncated": 0}
    for _ in range(400):
        actions = rng.integers(0, 2, size=3)
        nxt, rewards, terminated, truncated, info = envs.step(actions)
        np.testing.assert_array_equal(rewards, 1.0)
        lengths += 1
        for i in range(3):
            ended = terminated[i] or truncated[i]
            landed = np.asarray(info["final_obs"][i]) if ended else nxt[i]
            reference.state = obs[i].astype(np.float64)
            expected, _, ref_terminated, _, _ = reference.step(int(actions[i]))
            np.testing.assert_allclose(landed, expected, atol=1e-4)  # the action was played, not dropped
            assert bool(terminated[i]) == ref_terminated
            if ended:
                assert np.abs(nxt[i]).max() <= 0.05  # already the next episode's start state
                # the cap truncates unless the episode terminates on that very step (as Gymnasium's TimeLimit)
                assert truncated[i] == (lengths[i] == 30 and not terminated[i])
                ended_by["terminated" if terminated[i] else "truncated"] += 1
                lengths[i] = 0
        obs = nxt
    assert ended_by["terminated"] > 10 and ended_by["truncated"] > 0
    envs.close()


def test_seeds_pick_the_start_states():
    def starts(seeds):
        envs = make_vector_env(cartpole(), 2, seed=0)
        obs, _ = envs.reset(seed=seeds)
        envs.close()
        return obs

    np.testing.assert_array_equal(starts([5, 6]), starts([5, 6]))
    assert not np.array_equal(starts([5, 6]), starts([7, 8]))
    first = starts([5, 6])
    assert not np.array_equal(first[0], first[1])  # every env its own seed


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    real_import = builtins.__import__

    def no_envpool(name, *args, **kwargs):
        if name == "envpool":
            raise ImportError("No module named 'envpool'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_envpool)
    with pytest.raises(ConfigError, match=r"pip install 'dqn-cli\[envpool\]'"):
        make_vector_env(cartpole(), 2, seed=0)


def test_an_env_envpool_lacks_is_refused():
    with pytest.raises(ConfigError, match="EnvPool has no 'LunarLander-v9'"):
        make_vector_env(cartpole(id="LunarLander-v9"), 2, seed=0)


def test_minatar_has_no_envpool_backend(tmp_path):
    proc = run_dqn("train", "env=minatar", "env.vectorization=envpool", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith("env.vectorization must be one of sync, async for minatar envs, got 'envpool'")
    )


def test_train_and_eval_end_to_end_on_cartpole(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_dqn(
        "train",
        "env.vectorization=envpool",
        "total_steps=2000",
        "learning_starts=500",
        "eval.every=1000",
        "eval.episodes=4",
        "progress=log",
        f"hydra.run.dir={run_dir}",
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == 2000 and summary["updates"] > 0
    assert summary["train_episodes"] > 50  # random CartPole episodes last ~22 steps
    evals = (run_dir / "evals.csv").read_text().strip().splitlines()
    assert len(evals) == 1 + 2  # header, steps 1000 and 2000
