"""Episode boundaries through the real trainer.

A deterministic fake env says in its observation which episode and step it
is; odd episodes terminate, even ones are truncated by a time limit. After a
real `trainer.train` run with several envs, every transition in the saved
replay buffer is checked: it never spans two episodes, terminated ones do not
bootstrap, truncated ones bootstrap from the true final observation.
"""

from __future__ import annotations

import fake_envs
import numpy as np
import pytest
from helpers import compose, load_replay

from dqn_cli.config import validate
from dqn_cli.envs.vector import describe_env
from dqn_cli.replay.from_config import build_replay
from dqn_cli.run.trainer import train

GAMMA = 0.9


def run_fake(tmp_path, num_envs: int, n_step: int, vectorization: str = "sync"):
    env_id = fake_envs.register()
    cfg = compose()
    cfg.env.id = env_id
    cfg.env.num_envs = num_envs
    cfg.env.vectorization = vectorization
    cfg.total_steps = 150 * num_envs
    cfg.learning_starts = 20
    cfg.batch_size = 8
    cfg.gamma = GAMMA
    cfg.replay.capacity = 10_000
    cfg.replay.n_step = n_step
    cfg.network.hidden_sizes = [8]
    cfg.eval.episodes = 1
    cfg.eval.every = 0
    cfg.checkpoint.every = 0
    cfg.checkpoint.save_replay = True
    cfg.progress = "off"
    validate(cfg)
    summary = train(cfg, tmp_path)
    replay = build_replay(cfg, describe_env(cfg.env))
    replay.load_state_dict(load_replay(tmp_path / "checkpoints"))
    envs, slots = np.nonzero(replay.valid)
    batch = replay._gather(envs, slots, np.ones(len(envs), dtype=np.float32))
    return summary, replay, batch


def expected(obs_t: float, episode: int, n_step: int):
    """Hand-computed n-step return, discount and bootstrap step for a start at step t."""
    end, terminates = (fake_envs.TERMINATE_AT, True) if episode % 2 == 1 else (fake_envs.TIME_LIMIT, False)
    t = int(obs_t)
    m = min(n_step, end - t)
    ret = sum(GAMMA**k * (1.0 + t + k) for k in range(m))
    ended_here = t + m == end
    discount = 0.0 if (ended_here and terminates) else GAMMA**m
    return ret, discount, t + m, ended_here and not terminates


@pytest.mark.parametrize("num_envs,n_step", [(1, 1), (3, 1), (3, 3)])
def test_replayed_transitions_respect_episode_boundaries(tmp_path, num_envs, n_step):
    summary, replay, batch = run_fake(tmp_path, num_envs, n_step)
    assert summary["total_steps"] == 150 * num_envs
    ids, t = batch.obs[:, -1, 0], batch.obs[:, -1, 1]
    next_ids, next_t = batch.next_obs[:, -1, 0], batch.next_obs[:, -1, 1]
    # 1. no transition spans two episodes
    np.testing.assert_array_equal(ids, next_ids)
    truncated_seen = terminated_seen = 0
    for i in range(len(ids)):
        episode = int(ids[i]) % 1000
        ret, discount, boot_t, truncated = expected(t[i], episode, n_step)
        assert batch.returns[i] == pytest.approx(ret, rel=1e-6)
        assert batch.discounts[i] == pytest.approx(discount, rel=1e-6)
        # 2. the bootstrap observation is the real one, the true final obs after a truncation
        assert next_t[i] == boot_t
        truncated_seen += truncated
        terminated_seen += discount == 0.0
    assert truncated_seen > 0 and terminated_seen > 0
    # 3. every env contributed, each with its own episodes
    assert len({int(i) // 1000 for i in ids}) == num_envs


def test_truncated_transition_bootstraps_from_final_observation(tmp_path):
    _, replay, batch = run_fake(tmp_path, 2, 1)
    last_of_truncated = (batch.obs[:, -1, 1] == fake_envs.TIME_LIMIT - 1) & (batch.obs[:, -1, 0] % 2 == 0)
    assert last_of_truncated.any()
    np.testing.assert_allclose(batch.discounts[last_of_truncated], GAMMA)
    assert (batch.next_obs[last_of_truncated, -1, 1] == fake_envs.TIME_LIMIT).all()
    last_of_terminated = (batch.obs[:, -1, 1] == fake_envs.TERMINATE_AT - 1) & (batch.obs[:, -1, 0] % 2 == 1)
    assert last_of_terminated.any()
    assert (batch.discounts[last_of_terminated] == 0).all()


@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
def test_cutting_an_episode_is_a_truncation_at_the_observation_the_env_was_in(kind):
    """An env restarted mid-episode (its worker died): ReplayBuffer.cut_episodes must leave the
    buffer exactly as if the env's last step had been truncated with that observation as its final
    one, array for array, while the other env's episode runs on untouched."""
    from dqn_cli.replay.samplers import PrioritizedSampler
    from dqn_cli.replay.storage import ReplayBuffer

    E, S = 2, 3

    def buffer():
        sampler = PrioritizedSampler(alpha=0.6, eps=1e-6) if kind == "prioritized" else None
        return ReplayBuffer(64, E, (2,), np.float32, frame_stack=S, n_step=3, gamma=0.9, seed=0, sampler=sampler)

    def obs(t):  # (E, S, 2): frames [env, t - k]
        return np.array([[[e, max(t - k, 0)] for k in reversed(range(S))] for e in range(E)], np.float32)

    no = np.zeros(E, bool)
    truncated_at_4, cut_at_4 = buffer(), buffer()
    for t in range(4):
        ended = np.array([t == 3, False])
        truncated_at_4.add(obs(t), np.full(E, t % 2), np.full(E, 1.0 + t), no, ended, obs(t + 1))
        cut_at_4.add(obs(t), np.full(E, t % 2), np.full(E, 1.0 + t), no, no)
    cut_at_4.cut_episodes(np.array([0]), obs(4)[:1])
    for t in range(4, 9):  # env 0 in a new episode, env 1 carrying on
        for buf in (truncated_at_4, cut_at_4):
            buf.add(obs(t), np.zeros(E, np.int64), np.ones(E), no, no)
    for name in ReplayBuffer._ARRAYS:
        np.testing.assert_array_equal(getattr(cut_at_4, name), getattr(truncated_at_4, name), err_msg=name)
    assert cut_at_4.truncated[0, 3] and not cut_at_4.truncated[1].any()
    assert len(cut_at_4) == len(truncated_at_4) > 0
    cut_at_4.cut_episodes(np.array([0, 1]), obs(9))
    assert cut_at_4.final[np.arange(E), (cut_at_4.head - 1) % cut_at_4.slots].all()
    heads = cut_at_4.head.copy()
    cut_at_4.cut_episodes(np.array([0, 1]), obs(9))  # an env with no step in its episode yet: left alone
    np.testing.assert_array_equal(cut_at_4.head, heads)
