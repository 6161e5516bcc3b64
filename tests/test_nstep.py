"""n-step returns from the replay buffer, by hand, across episode ends, with interleaved envs.

Every observation identifies itself: value = episode_id * 1000 + t (t = step in the
episode; the true final observation of an episode of length T is episode_id * 1000 + T).
Rewards are 100 * episode_id + t, so every return below is exact in float32 with gamma = 1/2.
"""

from __future__ import annotations

import numpy as np
import pytest

from dqn_cli.replay.samplers import PrioritizedSampler
from dqn_cli.replay.storage import ReplayBuffer

GAMMA = 0.5

# env -> [(episode id, length, how it ends)]; None: still running when the script stops
SCRIPT = {
    0: [(1, 4, "terminated"), (2, 6, "truncated"), (3, 5, "terminated"), (4, None, None)],
    1: [(11, 2, "truncated"), (12, 3, "terminated"), (13, 1, "terminated"), (14, 7, "truncated"), (15, None, None)],
    2: [(21, 9, "truncated"), (22, None, None)],
}


def reward(ep: int, t: int) -> float:
    return 100.0 * ep + t


def action(ep: int, t: int) -> int:
    return (ep + t) % 5


def run(buffer: ReplayBuffer, script: dict, steps: int) -> dict:
    """Play ``script`` into ``buffer`` for ``steps`` vector steps; return {episode id: (length, end)}."""
    E, S = buffer.num_envs, buffer.frame_stack
    where = {e: [0, 0] for e in range(E)}  # episode index, t
    table = {ep: (length, end) for e in script for ep, length, end in script[e]}

    def stack(ep, t):
        return [ep * 1000.0 + max(t - k, 0) for k in range(S - 1, -1, -1)]

    for _ in range(steps):
        obs = np.zeros((E, S, 1), np.float32)
        final = np.zeros((E, S, 1), np.float32)
        acts = np.zeros(E, np.int64)
        rews = np.zeros(E, np.float32)
        term = np.zeros(E, bool)
        trunc = np.zeros(E, bool)
        for e in range(E):
            k, t = where[e]
            ep, length, end = script[e][k]
            obs[e, :, 0] = stack(ep, t)
            acts[e], rews[e] = action(ep, t), reward(ep, t)
            if length is not None and t == length - 1:
                term[e], trunc[e] = end == "terminated", end == "truncated"
                final[e, :, 0] = stack(ep, length)
                where[e] = [k + 1, 0]
            else:
                where[e] = [k, t + 1]
        buffer.add(obs, acts, rews, term, trunc, final if (term | trunc).any() else None)
    return table


def slot_of(buffer: ReplayBuffer, env: int, ep: int, t: int) -> int:
    """The slot holding step t of episode ep (not an episode's final observation)."""
    hits = np.flatnonzero((buffer.frames[env, :, 0] == ep * 1000 + t) & ~buffer.final[env])
    assert hits.size == 1, (env, ep, t, hits)
    return int(hits[0])


def gather(buffer, env, ep, t):
    s = slot_of(buffer, env, ep, t)
    assert buffer.valid[env, s], "the transition should be complete and sampleable"
    b = buffer._gather(np.array([env]), np.array([s]), np.ones(1, np.float32))
    return float(b.returns[0]), float(b.discounts[0]), float(b.next_obs[0, -1, 0]), b


def make(kind, n_step, frame_stack=1, capacity=3 * 64, num_envs=3, seed=0):
    kw = dict(
        capacity=capacity,
        num_envs=num_envs,
        frame_shape=(1,),
        frame_dtype=np.float32,
        frame_stack=frame_stack,
        n_step=n_step,
        gamma=GAMMA,
        seed=seed,
    )
    if kind == "prioritized":
        return ReplayBuffer(**kw, sampler=PrioritizedSampler(alpha=0.6, eps=1e-6, branching=4, top_size=2))
    return ReplayBuffer(**kw)


# (env, episode, t) -> (return, discount, bootstrap observation), computed by hand
HAND_N3 = [
    # episode 1 (env 0): rewards 100, 101, 102, 103, terminated after t = 3
    (0, 1, 0, 100 + 0.5 * 101 + 0.25 * 102, 0.125, 1003),  # = 176: a full window inside the episode
    (0, 1, 1, 101 + 0.5 * 102 + 0.25 * 103, 0.0, 1004),  # = 177.75: the window's last step terminates
    (0, 1, 2, 102 + 0.5 * 103, 0.0, 1004),  # = 153.5: cut after 2 steps, no bootstrap
    (0, 1, 3, 103, 0.0, 1004),
    # episode 2 (env 0): rewards 200..205, truncated after t = 5 (final observation 2006)
    (0, 2, 0, 200 + 0.5 * 201 + 0.25 * 202, 0.125, 2003),  # = 351: right after an episode start
    (0, 2, 3, 203 + 0.5 * 204 + 0.25 * 205, 0.125, 2006),  # = 356.25: bootstrap from the true final obs
    (0, 2, 4, 204 + 0.5 * 205, 0.25, 2006),  # = 306.5: truncated after 2 steps: gamma**2
    (0, 2, 5, 205, 0.5, 2006),
    # episode 11 (env 1): rewards 1100, 1101, truncated after t = 1
    (1, 11, 0, 1100 + 0.5 * 1101, 0.25, 11002),  # = 1650.5
    (1, 11, 1, 1101, 0.5, 11002),
    # episode 12 (env 1): rewards 1200, 1201, 1202, terminated after t = 2
    (1, 12, 0, 1200 + 0.5 * 1201 + 0.25 * 1202, 0.0, 12003),  # = 2101
    (1, 12, 2, 1202, 0.0, 12003),
    # episode 13 (env 1): one step, terminated
    (1, 13, 0, 1300, 0.0, 13001),
    # episode 14 (env 1): truncated after t = 6
    (1, 14, 4, 1404 + 0.5 * 1405 + 0.25 * 1406, 0.125, 14007),  # = 2457
    (1, 14, 6, 1406, 0.5, 14007),
    # episode 21 (env 2): truncated after t = 8; episode 22 follows
    (2, 21, 6, 2106 + 0.5 * 2107 + 0.25 * 2108, 0.125, 21009),  # = 3686.5
    (2, 21, 7, 2107 + 0.5 * 2108, 0.25, 21009),  # = 3161
    (2, 22, 0, 2200 + 0.5 * 2201 + 0.25 * 2202, 0.125, 22003),  # = 3851
]

HAND_N1 = [
    (0, 1, 0, 100, 0.5, 1001),
    (0, 1, 3, 103, 0.0, 1004),  # terminated: no bootstrap
    (0, 2, 5, 205, 0.5, 2006),  # truncated: bootstrap from the final observation with gamma
    (1, 11, 1, 1101, 0.5, 11002),
    (1, 13, 0, 1300, 0.0, 13001),
    (2, 21, 8, 2108, 0.5, 21009),
    (2, 22, 0, 2200, 0.5, 22001),
]


@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
@pytest.mark.parametrize("n_step,cases", [(3, HAND_N3), (1, HAND_N1)])
def test_hand_computed_returns_across_episode_ends(kind, n_step, cases):
    buffer = make(kind, n_step)
    run(buffer, SCRIPT, 20)
    for env, ep, t, ret, disc, nxt in cases:
        got_ret, got_disc, got_next, b = gather(buffer, env, ep, t)
        assert (got_ret, got_disc, got_next) == (ret, disc, nxt), (env, ep, t)
        assert b.obs[0, -1, 0] == ep * 1000 + t and b.actions[0] == action(ep, t)


def test_hand_values_spot_check():
    """The arithmetic of the table, written out once."""
    assert HAND_N3[0][3] == 176.0 and HAND_N3[1][3] == 177.75 and HAND_N3[5][3] == 356.25
    assert HAND_N3[8][3] == 1650.5 and HAND_N3[10][3] == 2101.0


def test_frame_stacks_never_cross_episode_starts():
    buffer = make("uniform", 3, frame_stack=3)
    run(buffer, SCRIPT, 20)
    _, _, _, b = gather(buffer, 0, 2, 0)  # first step of episode 2, right after episode 1's final obs
    assert b.obs[0, :, 0].tolist() == [2000, 2000, 2000]  # padded with the first frame
    assert b.next_obs[0, :, 0].tolist() == [2001, 2002, 2003]
    _, _, _, b = gather(buffer, 0, 2, 4)
    assert b.obs[0, :, 0].tolist() == [2002, 2003, 2004]
    assert b.next_obs[0, :, 0].tolist() == [2004, 2005, 2006]  # ends with the true final frame
    _, _, _, b = gather(buffer, 1, 13, 0)  # a one-step episode
    assert b.obs[0, :, 0].tolist() == [13000] * 3
    assert b.next_obs[0, :, 0].tolist() == [13000, 13000, 13001]


def random_script(rng, num_envs: int, episodes: int) -> dict:
    script, ep = {}, 1
    for e in range(num_envs):
        eps = []
        for _ in range(episodes):
            eps.append((ep, int(rng.integers(1, 12)), "terminated" if rng.random() < 0.5 else "truncated"))
            ep += 1
        eps.append((ep, None, None))
        ep += 1
        script[e] = eps
    return script


def expected_transition(table, ep, t, n):
    length, end = table[ep]
    m = n if length is None else min(n, length - t)
    ret = sum(GAMMA**k * reward(ep, t + k) for k in range(m))
    ended_in_window = length is not None and t + m == length
    disc = 0.0 if ended_in_window and end == "terminated" else GAMMA**m
    return ret, disc, ep * 1000 + t + m


@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
@pytest.mark.parametrize("n_step,frame_stack", [(1, 1), (3, 1), (3, 4), (5, 2)])
def test_every_valid_transition_after_the_ring_wraps(kind, n_step, frame_stack):
    """Small rings, many episodes: each valid slot's transition matches the formula, and samples
    never join two episodes (obs and next_obs, and every frame of each stack, share the episode)."""
    rng = np.random.default_rng(n_step * 10 + frame_stack)
    buffer = make(kind, n_step, frame_stack, capacity=3 * 23, seed=1)
    table = run(buffer, random_script(rng, 3, 40), 150)  # each ring of 23 wraps ~6 times
    envs, slots = np.nonzero(buffer.valid)
    assert envs.size > 30
    b = buffer._gather(envs, slots, np.ones(envs.size, np.float32))
    for i in range(envs.size):
        ep, t = divmod(int(b.obs[i, -1, 0]), 1000)
        ret, disc, nxt = expected_transition(table, ep, t, n_step)
        assert b.returns[i] == pytest.approx(ret, rel=1e-6)
        assert b.discounts[i] == disc and b.next_obs[i, -1, 0] == nxt
        assert b.actions[i] == action(ep, t)
        expected_stack = [ep * 1000 + max(t - k, 0) for k in range(frame_stack - 1, -1, -1)]
        assert b.obs[i, :, 0].tolist() == expected_stack
        t_next = nxt - ep * 1000
        assert b.next_obs[i, :, 0].tolist() == [ep * 1000 + max(t_next - k, 0) for k in range(frame_stack - 1, -1, -1)]
    for _ in range(20):
        batch = buffer.sample(32, beta=0.5)
        assert ((batch.obs[:, :, 0] // 1000) == (batch.next_obs[:, :, 0] // 1000)).all()
        assert ((batch.obs[:, :, 0] // 1000) == (batch.obs[:, -1:, 0] // 1000)).all()
        steps_taken = batch.next_obs[:, -1, 0] - batch.obs[:, -1, 0]
        assert ((steps_taken >= 1) & (steps_taken <= n_step)).all()
        if kind == "prioritized":
            buffer.update_priorities(batch.indices, rng.standard_normal(32))
