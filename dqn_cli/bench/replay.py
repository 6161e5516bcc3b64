"""`dqn bench replay`: how fast replay sampling and priority updates are.

Measures, in one process on this machine:

* ``per_sample_update_us``: :class:`~dqn_cli.replay.samplers.PrioritizedSampler`
  ``sample(32, beta)`` + ``update_priorities`` of the 32 at capacity 2**20, with
  1-float frames so the trees dominate (``per_tree_only_us``: the same without
  building the batch of transitions);
* ``python_segment_tree_sample_update_us``: the same work with the BASELINE
  below, a per-item pure-Python segment tree as in labml's DQN, on the same
  priorities, building the batch with the same ``_gather``; and the speedup;
* ``binary_tree_only_us``: the trees-only work on vectorised binary trees (Dopamine's layout,
  one numpy step per level), the simpler design the K-ary trees must beat by 1.5x to be kept;
* ``uniform_sample_us``: uniform ``sample(32)`` of stacked Atari transitions
  (84x84 uint8 frames, stack 4) at capacity 2**20 (7.4 GB; ``quick`` uses
  2**16, reported as ``capacity``), and PER on the same frames;
* ``*_add_us``: one vector step of 4 envs into each buffer.

Each time is the best mean over several repeats of many calls (timeit's
convention: the least disturbed by other processes on a shared CPU).
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from typing import Callable

import numpy as np

from dqn_cli.replay.samplers import PrioritizedSampler
from dqn_cli.replay.storage import ReplayBuffer
from dqn_cli.replay.sum_tree import last_write_wins
from dqn_cli.runtime import available_cpus, available_memory_bytes

BATCH = 32
PER_CAPACITY = 2**20
ATARI_CAPACITY = 2**20
QUICK_ATARI_CAPACITY = 2**16
NUM_ENVS = 4


# --------------------------------------------------------------------------- BASELINE 2
class VectorisedBinaryTrees:
    """BASELINE for comparison only: binary sum and min trees in one flat array each, as Dopamine's
    ``sum_tree.py`` lays them out, with every operation vectorised over the batch (one numpy step
    per level: 20 dependent steps at capacity 2**20, where the K-ary trees take 2 under a top)."""

    def __init__(self, capacity: int):
        self.depth = max(1, (capacity - 1).bit_length())
        self.capacity = 1 << self.depth  # leaves at [capacity, 2 * capacity)
        self.sums = np.zeros(2 * self.capacity)
        self.mins = np.full(2 * self.capacity, np.inf)

    def load(self, q: np.ndarray) -> None:
        """Leaves from ``q`` (0 for empty), then every level."""
        n = q.size
        self.sums[self.capacity : self.capacity + n] = q
        self.mins[self.capacity : self.capacity + n] = np.where(q > 0, q, np.inf)
        for level in range(self.depth - 1, -1, -1):
            lo, hi = 1 << level, 2 << level
            self.sums[lo:hi] = self.sums[2 * lo : 2 * hi : 2] + self.sums[2 * lo + 1 : 2 * hi : 2]
            self.mins[lo:hi] = np.minimum(self.mins[2 * lo : 2 * hi : 2], self.mins[2 * lo + 1 : 2 * hi : 2])

    def update(self, idx: np.ndarray, q: np.ndarray) -> None:
        """Leaves ``idx`` (distinct) set to ``q``, then their ancestors, one level at a time."""
        node = idx + self.capacity
        self.sums[node] = q
        self.mins[node] = q
        for _ in range(self.depth):
            node >>= 1
            left = 2 * node
            self.sums[node] = self.sums[left] + self.sums[left + 1]
            self.mins[node] = np.minimum(self.mins[left], self.mins[left + 1])

    def draw(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Stratified proportional draws: leaf ids and their q, descending one level per step."""
        u = (np.arange(batch_size) + rng.random(batch_size)) * (self.sums[1] / batch_size)
        node = np.ones(batch_size, dtype=np.int64)
        for _ in range(self.depth):
            node <<= 1
            left = self.sums[node]
            right = u >= left
            u -= left * right
            node += right
        return node - self.capacity, self.sums[node]


# --------------------------------------------------------------------------- BASELINE
class PythonSegmentTreeBaseline:
    """BASELINE for comparison only: labml's prioritized replay trees, per item in pure Python.

    Binary sum and min trees in Python lists of ``2 * capacity`` (capacity a
    power of two), one Python loop per sampled item down the tree and per
    updated item up both trees, as in labml_nn's ``rl/dqn/replay_buffer.py``.
    """

    def __init__(self, capacity: int, alpha: float):
        if capacity & (capacity - 1):
            raise ValueError("the baseline segment tree needs a power-of-two capacity")
        self.capacity = capacity
        self.alpha = alpha
        self.priority_sum = [0.0] * (2 * capacity)
        self.priority_min = [float("inf")] * (2 * capacity)
        self.max_priority = 1.0
        self.size = 0

    def load(self, priority_alpha: np.ndarray) -> None:
        """Set all leaves at once (setup, not timed): internal nodes built bottom-up."""
        n = self.capacity
        sums = np.zeros(2 * n)
        mins = np.full(2 * n, np.inf)
        sums[n:] = priority_alpha
        mins[n:] = np.where(priority_alpha > 0, priority_alpha, np.inf)
        for i in range(n.bit_length() - 1, 0, -1):
            lo, hi = 1 << (i - 1), 1 << i
            sums[lo:hi] = sums[2 * lo : 2 * hi : 2] + sums[2 * lo + 1 : 2 * hi : 2]
            mins[lo:hi] = np.minimum(mins[2 * lo : 2 * hi : 2], mins[2 * lo + 1 : 2 * hi : 2])
        self.priority_sum = sums.tolist()
        self.priority_min = mins.tolist()
        self.size = int(np.count_nonzero(priority_alpha))

    def _set_priority_min(self, idx: int, priority_alpha: float) -> None:
        idx += self.capacity
        self.priority_min[idx] = priority_alpha
        while idx >= 2:
            idx //= 2
            self.priority_min[idx] = min(self.priority_min[2 * idx], self.priority_min[2 * idx + 1])

    def _set_priority_sum(self, idx: int, priority: float) -> None:
        idx += self.capacity
        self.priority_sum[idx] = priority
        while idx >= 2:
            idx //= 2
            self.priority_sum[idx] = self.priority_sum[2 * idx] + self.priority_sum[2 * idx + 1]

    def _sum(self) -> float:
        return self.priority_sum[1]

    def _min(self) -> float:
        return self.priority_min[1]

    def find_prefix_sum_idx(self, prefix_sum: float) -> int:
        idx = 1
        while idx < self.capacity:
            if self.priority_sum[idx * 2] > prefix_sum:
                idx = 2 * idx
            else:
                prefix_sum -= self.priority_sum[idx * 2]
                idx = 2 * idx + 1
        return idx - self.capacity

    def sample_indices(self, batch_size: int, beta: float) -> tuple[np.ndarray, np.ndarray]:
        indexes = np.zeros(batch_size, dtype=np.int64)
        weights = np.zeros(batch_size, dtype=np.float32)
        for i in range(batch_size):
            p = random.random() * self._sum()
            indexes[i] = self.find_prefix_sum_idx(p)
        prob_min = self._min() / self._sum()
        max_weight = (prob_min * self.size) ** (-beta)
        for i in range(batch_size):
            idx = indexes[i]
            prob = self.priority_sum[idx + self.capacity] / self._sum()
            weight = (prob * self.size) ** (-beta)
            weights[i] = weight / max_weight
        return indexes, weights

    def update_priorities(self, indexes, priorities) -> None:
        for idx, priority in zip(indexes, priorities):
            self.max_priority = max(self.max_priority, priority)
            priority_alpha = priority**self.alpha
            self._set_priority_min(idx, priority_alpha)
            self._set_priority_sum(idx, priority_alpha)


# --------------------------------------------------------------------------- setup
def fill_synthetic(buffer: ReplayBuffer, seed: int = 0) -> None:
    """Make every ring full of one long episode per env, without stepping (setup, not timed).

    Valid slots follow the base class's rule for a full ring whose head is at slot 0.
    Frames are written (so their pages exist) with a pattern.
    """
    rng = np.random.default_rng(seed)
    E, L, S, n = buffer.num_envs, buffer.slots, buffer.frame_stack, buffer.n_step
    pattern = np.arange(L) % 251
    for e in range(E):  # one env at a time: no temporary the size of the frames
        buffer.frames[e] = pattern.reshape(L, *([1] * len(buffer.frame_shape))).astype(buffer.frames.dtype)
    buffer.actions[:] = rng.integers(0, 4, size=(E, L))
    buffer.rewards[:] = rng.random((E, L))
    buffer.terminated[:] = False
    buffer.truncated[:] = False
    buffer.final[:] = False
    buffer.pos[:] = np.arange(L, dtype=np.int32)
    buffer.head[:] = 0
    buffer.size[:] = L
    buffer.episode_pos[:] = L
    buffer.valid[:] = True
    buffer.valid[:, L - n :] = False  # their n-step window is not complete yet
    buffer.valid[:, : S - 1] = False  # their frame history was overwritten
    buffer.transitions_added = E * L
    buffer.num_valid = int(np.count_nonzero(buffer.valid))
    if isinstance(buffer.sampler, PrioritizedSampler):
        q = np.where(buffer.valid.reshape(-1), rng.random(E * L) * 2.0 + 1e-3, 0.0) ** buffer.sampler.alpha
        buffer.sampler.validity_reset(buffer.valid.reshape(-1), q)


def time_us(fn: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    """Best mean wall-clock and CPU (this process) time of ``fn`` over ``repeat`` runs of
    ``number`` calls, in microseconds. On a shared machine the CPU time leaves out the
    time other processes held the core."""
    fn()
    wall = cpu = float("inf")
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(number):
            fn()
        wall = min(wall, (time.perf_counter() - w0) / number)
        cpu = min(cpu, (time.process_time() - c0) / number)
    return wall * 1e6, cpu * 1e6


def _add_step(buffer: ReplayBuffer) -> Callable[[], None]:
    E = buffer.num_envs
    obs = np.zeros((E, buffer.frame_stack, *buffer.frame_shape), dtype=buffer.frames.dtype)
    actions = np.zeros(E, dtype=np.int64)
    rewards = np.ones(E, dtype=np.float32)
    done = np.zeros(E, dtype=bool)
    return lambda: buffer.add(obs, actions, rewards, done, done)


# --------------------------------------------------------------------------- run
def run(quick: bool = False) -> dict:
    """Run the replay benchmark, print a table, and return the numbers (see the module docstring)."""
    number, repeat = (100, 15) if quick else (200, 30)  # many short repeats: the best catches a quiet moment
    slow_number = max(number // 10, 10)
    rng = np.random.default_rng(0)
    random.seed(0)
    rows: list[tuple[str, int, tuple[float, float]]] = []
    td_pool = [rng.standard_normal(BATCH).astype(np.float32) for _ in range(64)]
    k = [0]

    def next_td() -> np.ndarray:
        k[0] = (k[0] + 1) & 63
        return td_pool[k[0]]

    # --- prioritized, 1-float frames: the trees' cost
    per = ReplayBuffer(
        PER_CAPACITY,
        NUM_ENVS,
        (1,),
        np.float32,
        frame_stack=1,
        n_step=1,
        gamma=0.99,
        seed=0,
        sampler=PrioritizedSampler(alpha=0.6, eps=1e-6),
    )
    fill_synthetic(per)

    def per_sample_update():
        batch = per.sample(BATCH, beta=0.5)
        per.update_priorities(batch.indices, next_td())

    def per_tree_only():
        idx, q = per.sampler.draw(per.rng, BATCH)
        weights = np.power(per.sampler.min_tree.min() / q, 0.5, dtype=np.float32)
        per.update_priorities(idx, next_td())
        return weights

    per_t = time_us(per_sample_update, number, repeat)
    per_tree_t = time_us(per_tree_only, number, repeat)
    rows += [
        ("PER sample(32) + update_priorities(32), 1-float frames", PER_CAPACITY, per_t),
        ("  the same, trees only (no batch of transitions)", PER_CAPACITY, per_tree_t),
    ]

    # --- BASELINE 2: vectorised binary trees (Dopamine's layout), the same trees-only work
    binary = VectorisedBinaryTrees(PER_CAPACITY)
    binary.load(per.sampler.priorities())
    alpha = per.sampler.alpha

    def binary_tree_only():
        idx, q = binary.draw(per.rng, BATCH)
        weights = np.power(binary.mins[1] / q, 0.5, dtype=np.float32)
        idx, p = last_write_wins(idx, np.abs(next_td()).astype(np.float64) + 1e-6)
        binary.update(idx, p**alpha)
        return weights

    binary_tree_t = time_us(binary_tree_only, number, repeat)
    rows += [("BASELINE vectorised binary trees (Dopamine's layout), trees only", PER_CAPACITY, binary_tree_t)]
    binary = None

    # --- BASELINE: labml-style per-item Python segment tree, same priorities, same gather
    base = PythonSegmentTreeBaseline(PER_CAPACITY, alpha=per.sampler.alpha)
    base.load(per.sampler.priorities())
    L = per.slots

    def python_sample_update():
        idx, weights = base.sample_indices(BATCH, 0.5)
        envs, slots = np.divmod(idx, L)
        batch = per._gather(envs, slots, weights)
        base.update_priorities(batch.indices, np.abs(next_td()) + 1e-6)

    def python_tree_only():
        idx, _ = base.sample_indices(BATCH, 0.5)
        base.update_priorities(idx, np.abs(next_td()) + 1e-6)

    py_t = time_us(python_sample_update, slow_number, repeat)
    py_tree_t = time_us(python_tree_only, slow_number, repeat)
    rows += [
        ("BASELINE per-item Python segment tree (labml), same gather", PER_CAPACITY, py_t),
        ("  the same, trees only", PER_CAPACITY, py_tree_t),
    ]
    base = None  # free the baseline tree

    # --- one vector step of 4 envs into each buffer, 1-float frames
    uniform_small = ReplayBuffer(PER_CAPACITY, NUM_ENVS, (1,), np.float32, frame_stack=1, n_step=1)
    fill_synthetic(uniform_small)
    uniform_add_t = time_us(_add_step(uniform_small), number, repeat)
    per_add_t = time_us(_add_step(per), number, repeat)
    rows += [
        ("uniform add, one step of 4 envs", PER_CAPACITY, uniform_add_t),
        ("PER add, one step of 4 envs", PER_CAPACITY, per_add_t),
    ]
    uniform_small = per = None  # free them before the Atari buffers

    # --- Atari frames: 84x84 uint8 stored once, stacks of 4 rebuilt at sample time
    capacity = QUICK_ATARI_CAPACITY if quick else ATARI_CAPACITY
    note = "quick: Atari capacity 2**16 instead of 2**20" if quick else ""
    fits = int(0.6 * available_memory_bytes() // (84 * 84))
    if capacity > fits:
        reduced = 1 << max(fits.bit_length() - 1, 10)
        note = f"Atari capacity reduced from {capacity:,} to {reduced:,}: not enough free memory"
        capacity = reduced
    uniform = ReplayBuffer(capacity, NUM_ENVS, (84, 84), np.uint8, frame_stack=4, n_step=1)
    fill_synthetic(uniform)
    uniform_t = time_us(lambda: uniform.sample(BATCH), number, repeat)
    per_atari = ReplayBuffer(
        capacity, NUM_ENVS, (84, 84), np.uint8, frame_stack=4, n_step=1, sampler=PrioritizedSampler(alpha=0.6, eps=1e-6)
    )
    per_atari.frames = uniform.frames  # the same frames: no second copy in memory
    fill_synthetic(per_atari)

    def per_atari_sample_update():
        batch = per_atari.sample(BATCH, beta=0.5)
        per_atari.update_priorities(batch.indices, next_td())

    per_atari_t = time_us(per_atari_sample_update, number, repeat)
    gib = uniform.nbytes / 2**30
    memory = {  # bytes per stored transition (frame once + slot fields; PER adds its trees)
        "uniform_bytes_per_transition": round(uniform.bytes_per_transition, 1),
        "per_bytes_per_transition": round(per_atari.bytes_per_transition, 1),
        "stacked_bytes_per_transition": 2 * 4 * 84 * 84,  # obs + next_obs stored stacked, for comparison
        "uniform_gib_at_2_20": round(uniform.bytes_per_transition * 2**20 / 2**30, 2),
        "per_gib_at_2_20": round(per_atari.bytes_per_transition * 2**20 / 2**30, 2),
    }
    rows += [
        (f"uniform sample(32), Atari 4x84x84 uint8 ({gib:.1f} GiB)", capacity, uniform_t),
        ("PER sample(32) + update_priorities(32), Atari frames", capacity, per_atari_t),
    ]
    uniform = per_atari = None

    result = {
        "per_sample_update_us": round(per_t[0], 1),
        "per_sample_update_cpu_us": round(per_t[1], 1),
        "per_tree_only_us": round(per_tree_t[0], 1),
        "python_segment_tree_sample_update_us": round(py_t[0], 1),
        "python_segment_tree_tree_only_us": round(py_tree_t[0], 1),
        "speedup_vs_python_segment_tree": round(py_t[0] / per_t[0], 1),
        "speedup_trees_only": round(py_tree_t[0] / per_tree_t[0], 1),
        "binary_tree_only_us": round(binary_tree_t[0], 1),
        "speedup_trees_only_vs_binary": round(binary_tree_t[0] / per_tree_t[0], 2),
        "uniform_sample_us": round(uniform_t[0], 1),
        "uniform_sample_cpu_us": round(uniform_t[1], 1),
        "per_atari_sample_update_us": round(per_atari_t[0], 1),
        "uniform_add_us": round(uniform_add_t[0], 1),
        "per_add_us": round(per_add_t[0], 1),
        **memory,
        "capacity": capacity,
        "per_capacity": PER_CAPACITY,
        "batch_size": BATCH,
        "num_envs": NUM_ENVS,
        "quick": bool(quick),
        "timing": f"best mean of {repeat} repeats x {number} calls ({slow_number} for the baseline)",
        "cpu": f"{platform.processor() or platform.machine()}, {available_cpus()} cores",
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if note:
        result["note"] = note
    _print_table(rows, result)
    return result


def _print_table(rows, result) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'replay benchmark':<{width}}  {'capacity':>11}  {'us (wall)':>10}  {'us (cpu)':>9}")
    for name, cap, (wall, cpu) in rows:
        print(f"{name:<{width}}  {cap:>11,}  {wall:>10.1f}  {cpu:>9.1f}")
    print(
        f"PER speedup over the per-item Python segment tree: {result['speedup_vs_python_segment_tree']:.1f}x "
        f"(trees only {result['speedup_trees_only']:.1f}x); K-ary trees over vectorised binary trees: "
        f"{result['speedup_trees_only_vs_binary']:.2f}x; goal: PER sample + update <= 100 us. "
        f"{result['timing']}; load average {result['load_average_1min']} on {result['cpu']}"
    )
    print(
        f"replay memory per Atari transition: {result['uniform_bytes_per_transition']:,.0f} B uniform, "
        f"{result['per_bytes_per_transition']:,.0f} B prioritized (stacked obs + next_obs would take "
        f"{result['stacked_bytes_per_transition']:,} B); at 2^20 transitions {result['uniform_gib_at_2_20']} / "
        f"{result['per_gib_at_2_20']} GiB"
    )
    if "note" in result:
        print(result["note"])


def main(argv: list[str] | None = None) -> None:
    """``python -m dqn_cli.bench.replay [--quick]``: the table, then the JSON object as the last line."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(run(quick="--quick" in args or "quick" in args)))


if __name__ == "__main__":
    main()
