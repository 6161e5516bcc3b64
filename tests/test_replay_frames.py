"""Frame-deduplicated replay: the stacks it rebuilds are the stacks the envs produced.

Two independent references for "what the env actually produced":

* a fake Atari-like env with identifiable 84x84 uint8 frames, stacked by
  Gymnasium's own ``FrameStackObservation(padding_type="reset")`` inside a
  SAME_STEP ``SyncVectorEnv`` (so the final observation of an episode is
  Gymnasium's stacked final observation);
* real Breakout frames through the Atari training protocol (episodic life,
  so life losses are episode starts for the agent), stacked by the trainer's
  ``FrameStacker``.

Several envs write into the buffer in lockstep, episodes have random lengths
(length 1 included) and end by termination or by truncation, and the ring
wraps around several times. Every sampleable slot, and every sampled
transition, is checked against a log of what was fed to the agent.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import FrameStackObservation

from dqn_cli.envs.autoreset import final_observations
from dqn_cli.envs.vector import FrameStacker
from dqn_cli.replay.storage import ReplayBuffer

FRAME = (84, 84)
S = 4


class FrameIdEnv(gym.Env):
    """84x84 uint8 frames that say who made them: pixel [0, 0] the env, [0, 1] the
    episode, [0, 2] the step, [0, 3] a checksum; episodes of 1-9 steps end by
    termination (odd episodes) or by a TimeLimit truncation (even ones, at 7 steps)."""

    observation_space = gym.spaces.Box(0, 255, FRAME, np.uint8)
    action_space = gym.spaces.Discrete(3)

    def __init__(self):
        self.env_id, self.episode, self.t, self.length = 0, -1, 0, 1

    def _frame(self) -> np.ndarray:
        f = np.zeros(FRAME, dtype=np.uint8)
        f[0, :4] = (self.env_id, self.episode % 256, self.t, (self.env_id * 7 + self.episode * 3 + self.t) % 256)
        f[1:, :] = (self.episode * 5 + self.t) % 251  # the whole frame differs, not just a corner
        return f

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.env_id, self.episode = seed % 256, -1
        self.episode += 1
        self.t = 0
        self.length = int(self.np_random.integers(1, 10))
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        terminated = self.episode % 2 == 1 and self.t >= self.length
        return self._frame(), float(action) + self.t, terminated, False, {}


def _fake_vector_env(num_envs: int):
    def make():
        return FrameStackObservation(gym.wrappers.TimeLimit(FrameIdEnv(), 7), S, padding_type="reset")

    return SyncVectorEnv([make] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)


class Log:
    """Per env, in time order, what the agent saw: (obs stack, action, reward, terminated, truncated, next stack).

    ``slot_of[e][t]`` is the ring slot the buffer wrote transition ``t`` of env ``e`` into.
    """

    def __init__(self, num_envs: int):
        self.records = [[] for _ in range(num_envs)]
        self.slot_at = [dict() for _ in range(num_envs)]  # ring slot -> index of the newest record written there

    def add(self, e, slot, obs, action, reward, terminated, truncated, next_obs):
        record = (obs.copy(), int(action), float(reward), bool(terminated), bool(truncated), next_obs.copy())
        self.records[e].append(record)
        self.slot_at[e][int(slot)] = len(self.records[e]) - 1


def _check_buffer(buf: ReplayBuffer, log: Log, n_step: int, gamma: float) -> int:
    """Every valid slot's stack, n-step return, discount and bootstrap stack match the log; returns slots checked."""
    envs, slots = np.nonzero(buf.valid)
    assert envs.size > 0
    batch = buf._gather(envs.astype(np.int64), slots.astype(np.int64), np.ones(envs.size, np.float32))
    for b, (e, s) in enumerate(zip(envs, slots)):
        j = log.slot_at[e][int(s)]
        rec = log.records[e]
        obs, action = rec[j][0], rec[j][1]
        np.testing.assert_array_equal(batch.obs[b], obs, err_msg=f"obs stack of env {e} slot {s}")
        assert batch.actions[b] == action
        ret, m = 0.0, 0
        for k in range(n_step):
            _, _, r, term, trunc, nxt = rec[j + k]
            ret += gamma**k * r
            m = k + 1
            if term or trunc:
                break
        last = rec[j + m - 1]
        np.testing.assert_array_equal(batch.next_obs[b], last[5], err_msg=f"bootstrap stack of env {e} slot {s}")
        assert batch.returns[b] == pytest.approx(ret, rel=1e-5)
        assert batch.discounts[b] == pytest.approx(gamma**m * (0.0 if last[3] else 1.0), rel=1e-5)
    return envs.size


@pytest.mark.parametrize("n_step", [1, 3])
def test_fake_frames_match_gymnasium_frame_stack(n_step):
    """Stacks at episode starts (reset padding), across wrap-around, several interleaved envs,
    terminated and truncated episodes (true final frame as next_obs), n-step windows."""
    E, L, gamma = 3, 40, 0.9
    envs = _fake_vector_env(E)
    buf = ReplayBuffer(E * L, E, FRAME, np.uint8, frame_stack=S, n_step=n_step, gamma=gamma, seed=0)
    log = Log(E)
    rng = np.random.default_rng(0)
    obs, _ = envs.reset(seed=[11, 22, 33])
    checked = truncations = terminations = starts_checked = 0
    for step in range(6 * L):  # the ring wraps around ~6 times
        actions = rng.integers(0, 3, size=E)
        next_obs, rewards, terminated, truncated, infos = envs.step(actions)
        ended = terminated | truncated
        finals = final_observations(infos, ended, next_obs)
        heads = buf.head.copy()
        buf.add(obs, actions, rewards, terminated, truncated, finals)
        for e in range(E):
            true_next = finals[e] if ended[e] else next_obs[e]
            log.add(e, heads[e], obs[e], actions[e], rewards[e], terminated[e], truncated[e], true_next)
        truncations += int(truncated.sum())
        terminations += int(terminated.sum())
        obs = next_obs
        if step % 17 == 16:
            checked += _check_buffer(buf, log, n_step, gamma)
    assert truncations > 10 and terminations > 10
    assert buf.transitions_added == 6 * L * E > buf.slots * E  # wrapped
    checked += _check_buffer(buf, log, n_step, gamma)
    assert checked > 500

    # truncated transitions bootstrap from the true final frame, not the reset frame
    envs_i, slots_i = np.nonzero(buf.valid & buf.truncated & ~buf.terminated)
    assert envs_i.size > 0
    batch = buf._gather(envs_i.astype(np.int64), slots_i.astype(np.int64), np.ones(envs_i.size, np.float32))
    assert (batch.discounts > 0).all()
    for b in range(envs_i.size):
        newest = batch.next_obs[b, -1]
        assert newest[0, 2] > 0, "the bootstrap frame is a reset frame (t=0), not the final one"
        assert newest[0, 2] == 7  # truncated by the TimeLimit after 7 steps

    # episode starts: the stack is the first frame repeated (Gymnasium's "reset" padding)
    starts = np.nonzero(buf.valid & (buf.pos == 0))
    assert starts[0].size > 0
    stacks = buf.stacked(starts[0].astype(np.int64), starts[1].astype(np.int64))
    for st in stacks:
        assert all((st[k] == st[-1]).all() for k in range(S))
        starts_checked += 1
    assert starts_checked > 0

    # what sample() returns is consistent with the log too
    for _ in range(5):
        batch = buf.sample(64)
        for b, idx in enumerate(batch.indices):
            e, s = divmod(int(idx), buf.slots)
            j = log.slot_at[e][s]
            np.testing.assert_array_equal(batch.obs[b], log.records[e][j][0])
    envs.close()


def test_real_breakout_frames_match_frame_stacker():
    """Real Atari frames, training protocol (episodic life: a lost life starts a new stack), 2 envs, wrap-around."""
    from dqn_cli.config import EnvConfig
    from dqn_cli.envs.atari import make_vector_env

    cfg = EnvConfig(
        name="breakout",
        kind="atari",
        game="Breakout",
        vectorization="sync",
        frame_stack=S,
        noop_max=5,
        max_episode_frames=600,
    )
    E, L = 2, 60
    envs = make_vector_env(cfg, E, seed=0, training=True)
    buf = ReplayBuffer(E * L, E, FRAME, np.uint8, frame_stack=S, n_step=1, gamma=0.99, seed=1)
    stacker = FrameStacker(E, S, FRAME, np.uint8)
    log = Log(E)
    frames, _ = envs.reset(seed=[3, 4])
    obs = stacker.reset(frames).copy()
    rng = np.random.default_rng(0)
    life_losses = 0
    for step in range(4 * L):
        actions = rng.integers(0, envs.single_action_space.n, size=E)
        frames, rewards, terminated, truncated, infos = envs.step(actions)
        ended = terminated | truncated
        finals = final_observations(infos, ended, frames)
        life_losses += int((terminated & ~infos["game_over"]).sum())
        heads = buf.head.copy()
        buf.add(obs, actions, rewards, terminated, truncated, finals)
        for e in range(E):
            true_next = np.concatenate([obs[e, 1:], finals[e][None]]) if ended[e] else None
            log.add(
                e,
                heads[e],
                obs[e],
                actions[e],
                rewards[e],
                terminated[e],
                truncated[e],
                true_next if true_next is not None else obs[e],
            )
        obs = stacker.step(frames, ended).copy()
        for e in range(E):  # fill in the next stack of transitions that did not end
            if not ended[e]:
                rec = log.records[e][-1]
                log.records[e][-1] = (*rec[:5], obs[e].copy())
    envs.close()
    assert life_losses > 0
    assert buf.transitions_added > buf.slots * E
    assert _check_buffer(buf, log, n_step=1, gamma=0.99) > 80


def test_bytes_per_transition_atari():
    buf = ReplayBuffer(4096, 8, FRAME, np.uint8, frame_stack=4, n_step=3)
    assert buf.bytes_per_transition <= 7300
    assert buf.bytes_per_transition < 56_448 / 7  # vs stacked obs + next_obs


def test_bytes_per_transition_matches_estimate():
    from types import SimpleNamespace

    from dqn_cli.envs.spec import EnvSpec
    from dqn_cli.replay.from_config import estimate_replay_bytes

    spec = EnvSpec(FRAME, np.dtype(np.uint8), 4, 4)
    cfg = SimpleNamespace(replay=SimpleNamespace(name="uniform", capacity=8000))
    buf = ReplayBuffer(8000, 8, FRAME, np.uint8, frame_stack=4)
    assert estimate_replay_bytes(cfg, spec) >= buf.nbytes


def test_uniform_sampling_reaches_the_oldest_slots_on_the_step_the_ring_fills():
    """The sampler's range used to skip the S-1 oldest slots as soon as the ring was full,
    though nothing had been overwritten yet and their stacks were whole."""
    L = 12
    buf = ReplayBuffer(L, 1, (2,), np.float32, frame_stack=S, n_step=1, seed=0)
    no = np.zeros(1, dtype=bool)
    for t in range(L):  # exactly fills the ring: one episode, no overwrite yet
        buf.add(np.full((1, S, 2), t, dtype=np.float32), np.zeros(1, np.int64), np.ones(1), no, no)
    assert buf.size[0] == L
    valid = set(np.flatnonzero(buf.valid[0]).tolist())
    assert valid == set(range(L - 1))  # every slot but the newest (its next observation is not written)
    sampled = set(buf.sample(4000).indices.tolist())
    assert sampled == valid
    # one more step overwrites slot 0: the S-1 slots after it lose their history and are never drawn
    buf.add(np.full((1, S, 2), L, dtype=np.float32), np.zeros(1, np.int64), np.ones(1), no, no)
    sampled = set(buf.sample(4000).indices.tolist())
    assert sampled == set(np.flatnonzero(buf.valid[0]).tolist()) and not sampled & {0, 1, 2, 3}
