"""Experience replay with frames stored once, per-env rings, and n-step returns.

Layout. Each of the ``E`` vector envs owns a ring of ``L = capacity // E``
slots, so the frames of one env are consecutive in time and frame stacks and
n-step windows never mix envs. Slot ``t`` of env ``e`` holds the
*newest frame* of the observation the agent acted on, the action, the reward
and whether the episode ended with that step (``terminated`` / ``truncated``).
The next observation of slot ``t`` is always slot ``t + 1``:

* inside an episode, slot ``t + 1`` is the next step;
* when an episode ends, the true final observation is written into an extra
  *final slot* (no action; never sampled as a start), so a truncated
  transition bootstraps from the real final frame and the
  reset observation starts the slot after it.

Each slot also records ``pos``, its index within its episode. A stack of
``S`` frames for slot ``s`` is rebuilt at sample time from slots
``s - min(k, pos[s])`` for ``k = S-1 .. 0``: frames before the episode's first
are replaced by the first (Gymnasium's ``FrameStackObservation`` "reset"
padding), so no stack mixes two episodes. An 84x84 Atari frame costs 7,056
bytes once instead of 56,448 for stacked obs and next_obs.

n-step (Sutton & Barto 2018, section 7.1; Hessel et al. 2018). For a start slot ``t`` the window is ``t .. t+n-1``,
cut after the first step that ends the episode (``m <= n`` steps taken)::

    R_t = sum_{k<m} gamma**k r_{t+k}
    discount_t = gamma**m * (1 - terminated_{t+m-1})
    bootstrap observation = slot t + m   (the final slot if the episode ended)

so the TD target is ``R_t + discount_t * max_a Q'(s_{t+m}, a)``: no bootstrap
after termination, bootstrap from the true final observation with
``gamma**m`` after truncation.

Validity. A slot may be sampled once slot ``t + n`` has been written (its
window is complete), unless it is a final slot; it stops being valid when it
is overwritten or when the ring's overwrite front reaches its frame history.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from dqn_cli.replay.samplers import Sampler, UniformSampler


class Batch(NamedTuple):
    """A sampled batch, as numpy arrays on the host.

    obs, next_obs: (B, S, *frame_shape), frame dtype (uint8 Atari, float32 classic)
    actions: int64 (B,)
    returns: float32 (B,), the n-step discounted reward sum R_t
    discounts: float32 (B,), gamma**m * (1 - terminated): the bootstrap coefficient
    indices: int64 (B,), flat slot ids e * L + t, for priority updates
    weights: float32 (B,), importance-sampling weights (1 for uniform replay)
    """

    obs: np.ndarray
    actions: np.ndarray
    returns: np.ndarray
    next_obs: np.ndarray
    discounts: np.ndarray
    indices: np.ndarray
    weights: np.ndarray


# bytes per slot besides the frame: action int32, reward float32, pos int32, 4 bool flags
_SLOT_OVERHEAD = 4 + 4 + 4 + 4


def slot_bytes(frame_shape: Sequence[int], frame_dtype: np.dtype) -> int:
    """Bytes one slot takes in the uniform buffer."""
    return int(np.prod(frame_shape)) * np.dtype(frame_dtype).itemsize + _SLOT_OVERHEAD


class ReplayBuffer:
    """Uniform replay over per-env frame rings; see the module docstring.

    Args:
        capacity: slots summed over envs (transitions, plus one final slot per episode).
        num_envs: E, the vector envs writing into the buffer in lockstep.
        frame_shape: shape of one frame: (84, 84) for Atari, (obs_dim,) for classic envs.
        frame_dtype: uint8 for Atari, float32 for classic envs.
        frame_stack: S, frames per observation.
        n_step: n of the n-step return.
        gamma: discount per env step.
        seed: seeds the sampling generator.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        frame_shape: Sequence[int],
        frame_dtype,
        frame_stack: int = 1,
        n_step: int = 1,
        gamma: float = 0.99,
        seed: int = 0,
        sampler: Sampler | None = None,
    ):
        self.num_envs = E = int(num_envs)
        self.slots = L = int(capacity) // E
        # (config.validate refuses a replay.capacity this small, naming the key)
        assert L >= n_step + frame_stack + 2, f"{L} slots per env for n_step={n_step}, frame_stack={frame_stack}"
        self.frame_shape = tuple(int(d) for d in frame_shape)
        self.frame_stack = int(frame_stack)
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self.rng = np.random.default_rng(seed)
        self.frames = np.zeros((E, L, *self.frame_shape), dtype=frame_dtype)
        self.actions = np.zeros((E, L), dtype=np.int32)
        self.rewards = np.zeros((E, L), dtype=np.float32)
        self.terminated = np.zeros((E, L), dtype=bool)
        self.truncated = np.zeros((E, L), dtype=bool)
        self.final = np.zeros((E, L), dtype=bool)  # slot holds only a frame: a final observation (or history)
        self.valid = np.zeros((E, L), dtype=bool)  # may be sampled as a start
        self.pos = np.zeros((E, L), dtype=np.int32)  # index of the slot's observation in its episode
        self.head = np.zeros(E, dtype=np.int64)  # next slot to write, per env
        self.size = np.zeros(E, dtype=np.int64)  # slots written, per env (<= L)
        self.episode_pos = np.zeros(E, dtype=np.int32)  # pos of the next observation written
        self._powers = (self.gamma ** np.arange(self.n_step + 1)).astype(np.float32)
        self.transitions_added = 0
        self.num_valid = 0
        self.sampler = UniformSampler() if sampler is None else sampler
        self.sampler.attach(E * L)

    # ---------------------------------------------------------------- writing
    def add(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        final_obs: np.ndarray | None = None,
    ) -> None:
        """Store one vector step.

        obs: (E, S, *frame_shape), the stacked observations acted on (only the newest frame is stored)
        actions: (E,) ints; rewards: (E,) float; terminated, truncated: (E,) bool
        final_obs: (E, S, *frame_shape) or (E, *frame_shape): the true final observation of the
            envs whose episode ended at this step (rows of other envs are ignored); required
            when any env ended.
        """
        all_envs = np.arange(self.num_envs)
        w = self.head
        self.frames[all_envs, w] = obs[:, -1]
        self.actions[all_envs, w] = actions
        self.rewards[all_envs, w] = rewards
        self.terminated[all_envs, w] = terminated
        self.truncated[all_envs, w] = truncated
        self.final[all_envs, w] = False
        self.pos[all_envs, w] = self.episode_pos
        self._advance(all_envs)
        self.transitions_added += self.num_envs

        ended = np.flatnonzero(np.logical_or(terminated, truncated))
        if ended.size:
            if final_obs is None:
                raise ValueError("final_obs is required when an episode ends")
            newest = final_obs[ended]
            if newest.ndim == len(self.frame_shape) + 2:  # stacked: keep the newest frame
                newest = newest[:, -1]
            self._write_frame_only(ended, newest)
            self.episode_pos[ended] = 0

    def _write_frame_only(self, envs: np.ndarray, frames: np.ndarray) -> None:
        """Write slots that hold a frame but start no transition (final and history slots)."""
        w = self.head[envs]
        self.frames[envs, w] = frames
        self.actions[envs, w] = 0
        self.rewards[envs, w] = 0.0
        self.terminated[envs, w] = False
        self.truncated[envs, w] = False
        self.final[envs, w] = True
        self.pos[envs, w] = self.episode_pos[envs]
        self._advance(envs)

    def cut_episodes(self, envs: np.ndarray, stacks: np.ndarray) -> None:
        """End the open episodes of ``envs`` here, truncated, as if their last step had been cut by
        a time limit: each one's last transition bootstraps from ``stacks`` (the observation the
        env was in, written as the final slot), and no n-step window or frame stack runs on into
        what comes next. For envs restarted in mid-episode (an env worker that died).

        envs: (k,) distinct env indices; stacks: (k, S, *frame_shape), their current observations.
        """
        envs = np.asarray(envs, dtype=np.int64)
        open_ = self.episode_pos[envs] > 0
        envs, stacks = envs[open_], stacks[open_]
        if envs.size:
            self.truncated[envs, (self.head[envs] - 1) % self.slots] = True
            self._write_frame_only(envs, stacks[:, -1])
            self.episode_pos[envs] = 0

    def resume_episodes(self, stacks: np.ndarray, continued: bool) -> None:
        """Make the buffer agree with the envs of a resumed run, before its first ``add``.

        stacks: (E, S, *frame_shape), the observations the envs resume from.
        continued: True when the envs' episodes continue exactly (classic-control or Atari envs restored by
            envs.vector.restore_envs); False when they start fresh (other envs and backends).

        Fresh episodes: an episode a restored buffer left open would run on into
        the new one (its n-step windows, bootstraps and stacks), so it ends here,
        truncated: its newest slot becomes its final observation (that one
        transition is dropped; the one before bootstraps from it with gamma**m).
        Continued episodes in an empty buffer: the S-1 older frames of each stack
        are written as history slots (never a transition start), so the stacks
        rebuilt at sample time are the ones the agent acted on.
        """
        if not continued:
            cut = np.flatnonzero(self.episode_pos > 0)
            last = (self.head[cut] - 1) % self.slots
            self.actions[cut, last] = 0
            self.rewards[cut, last] = 0.0
            self.final[cut, last] = True
            self._set_valid(cut, last, False)
            longer = self.episode_pos[cut] > 1  # else the slot before belongs to an earlier episode
            self.truncated[cut[longer], (last[longer] - 1) % self.slots] = True
            self.episode_pos[cut] = 0
            return
        empty = np.flatnonzero(self.size == 0)
        for k in range(self.frame_stack - 1):  # oldest first: pos 0 .. S-2, the next slot gets S-1
            self._write_frame_only(empty, stacks[empty, k])

    def _advance(self, envs: np.ndarray) -> None:
        """Bookkeeping after writing slot ``head[envs]``: move heads, update validity."""
        L, n = self.slots, self.n_step
        w = self.head[envs]
        self._set_valid(envs, w, False)  # just overwritten
        full = self.size[envs] == L
        if full.any():  # the oldest slots lose part of their frame history
            fe, fw = envs[full], w[full]
            for k in range(1, self.frame_stack):
                self._set_valid(fe, (fw + k) % L, False)
        self.head[envs] = (w + 1) % L
        self.size[envs] = np.minimum(self.size[envs] + 1, L)
        self.episode_pos[envs] += 1
        # slot w - n now has its whole n-step window written
        ready = self.size[envs] > n
        t = (w - n) % L
        ready &= ~self.final[envs, t]
        if ready.any():
            self._set_valid(envs[ready], t[ready], True)

    def _set_valid(self, envs: np.ndarray, slots: np.ndarray, value: bool) -> None:
        """Mark slots valid or not; the sampler hears of the distinct slots that changed."""
        envs = np.asarray(envs, dtype=np.int64)
        slots = np.asarray(slots, dtype=np.int64)
        changed = self.valid[envs, slots] != value
        if not changed.any():
            return
        if not changed.all():
            envs, slots = envs[changed], slots[changed]
        flat = envs * self.slots + slots
        if flat.size > 1 and not (envs[1:] > envs[:-1]).all():  # callers pass distinct envs, else dedupe
            flat = np.unique(flat)
            envs, slots = np.divmod(flat, self.slots)
        self.valid[envs, slots] = value
        self.num_valid += flat.size if value else -flat.size
        self.sampler.validity_changed(flat, value)

    # --------------------------------------------------------------- sampling
    def __len__(self) -> int:
        """Transitions that may be sampled now."""
        return self.num_valid

    def can_sample(self, batch_size: int) -> bool:
        return len(self) >= batch_size

    def sample(self, batch_size: int, beta: float | None = None) -> Batch:
        """``batch_size`` transitions drawn by the sampler (with replacement) from the valid slots.

        ``beta``: the importance-weight exponent of prioritized sampling (None: its last one).
        """
        flat, weights = self.sampler.sample(self, int(batch_size), beta)
        envs, slots = np.divmod(flat, self.slots)
        return self._gather(envs, slots, weights)

    def stacked(self, envs: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Rebuild the stacked observations of ``slots``: (B, S, *frame_shape)."""
        L = self.slots
        base = envs * L
        frames = self.frames.reshape(-1, *self.frame_shape)
        if self.frame_stack == 1:
            return frames[base + slots][:, None]
        back = np.arange(self.frame_stack - 1, -1, -1)  # S-1 .. 0
        offset = np.minimum(back[None, :], self.pos.reshape(-1).take(base + slots)[:, None])
        idx = (slots[:, None] - offset) % L
        idx += base[:, None]
        return frames[idx]

    def _gather(self, envs: np.ndarray, slots: np.ndarray, weights: np.ndarray) -> Batch:
        """The n-step transitions starting at ``(envs, slots)``, int64 (B,) each."""
        L, n = self.slots, self.n_step
        flat = envs * L + slots
        if n == 1:  # one step: no window to cut
            returns = self.rewards.reshape(-1).take(flat)
            discounts = np.where(self.terminated.reshape(-1).take(flat), np.float32(0), self._powers[1])
            bootstrap = (slots + 1) % L
        else:
            k = np.arange(n)
            window = (slots[:, None] + k) % L  # (B, n)
            window += (envs * L)[:, None]  # flat slot ids
            term = self.terminated.reshape(-1).take(window)
            ended = term | self.truncated.reshape(-1).take(window)
            steps = np.where(ended.any(axis=1), ended.argmax(axis=1) + 1, n)  # m, steps taken
            taken = k[None, :] < steps[:, None]
            rewards = self.rewards.reshape(-1).take(window)
            returns = (rewards * self._powers[:n] * taken).sum(axis=1, dtype=np.float32)
            discounts = self._powers[steps] * ~term[np.arange(slots.size), steps - 1]
            bootstrap = (slots + steps) % L
        return Batch(
            obs=self.stacked(envs, slots),
            actions=self.actions.reshape(-1).take(flat).astype(np.int64),
            returns=returns.astype(np.float32),
            next_obs=self.stacked(envs, bootstrap),
            discounts=discounts.astype(np.float32),
            indices=flat,
            weights=weights,
        )

    @property
    def uses_priorities(self) -> bool:
        """Whether the sampler reads the TD errors of its batches (prioritized replay)."""
        return self.sampler.uses_priorities

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """The TD errors of a sampled batch (``Batch.indices``): priorities, for a prioritized sampler."""
        self.sampler.update_priorities(self, indices, td_errors)

    def metrics(self) -> dict[str, float]:
        """Scalars for TensorBoard (a prioritized sampler reports its statistics)."""
        return self.sampler.metrics()

    # ------------------------------------------------------------ reporting
    @property
    def nbytes(self) -> int:
        arrays = (
            self.frames,
            self.actions,
            self.rewards,
            self.terminated,
            self.truncated,
            self.final,
            self.valid,
            self.pos,
        )
        return int(sum(a.nbytes for a in arrays)) + self.sampler.nbytes

    @property
    def bytes_per_transition(self) -> float:
        return self.nbytes / (self.num_envs * self.slots)

    # -------------------------------------------------------------- persist
    _ARRAYS = (
        "frames",
        "actions",
        "rewards",
        "terminated",
        "truncated",
        "final",
        "valid",
        "pos",
        "head",
        "size",
        "episode_pos",
    )

    def state_dict(self) -> dict:
        """Arrays and counters; numpy only, so ``np.load(allow_pickle=False)`` reads them back."""
        state = {name: getattr(self, name) for name in self._ARRAYS}
        state["transitions_added"] = np.array(self.transitions_added)
        state["rng_state"] = np.frombuffer(repr(self.rng.bit_generator.state).encode(), dtype=np.uint8)
        state.update(self.sampler.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        for name in self._ARRAYS:
            current = getattr(self, name)
            if state[name].shape != current.shape:
                raise ValueError(f"saved replay {name} has shape {state[name].shape}, this run expects {current.shape}")
            current[...] = state[name]
        self.transitions_added = int(state["transitions_added"])
        import ast

        self.rng.bit_generator.state = ast.literal_eval(bytes(state["rng_state"]).decode())
        self.num_valid = int(np.count_nonzero(self.valid))
        self.sampler.load_state_dict(state, self.valid.reshape(-1))
