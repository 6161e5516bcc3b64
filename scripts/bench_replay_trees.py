"""The prioritized replay's K-ary sum trees against the designs they were chosen over, timed
in one process on the same priorities (`dqn bench replay` times the tool's own replay alone).

    .venv/bin/python scripts/bench_replay_trees.py            # capacity 2**20
    .venv/bin/python scripts/bench_replay_trees.py --quick    # fewer repeats

Needs only the dqn install. The baselines live here, not in the package:

* vectorised binary trees (Dopamine's ``sum_tree.py`` layout, one numpy step per level), the
  simpler design the K-ary trees must beat by 1.5x on the trees-only work to be kept;
* a per-item pure-Python segment tree, as labml_nn's ``rl/dqn/replay_buffer.py`` has it,
  building its batch with the same gather as the tool's sampler.

Prints a table and, as its last line, a JSON object of the times (us) and the speedups.
tests/test_prioritized.py checks both baselines answer as ``np.cumsum`` and the K-ary trees do,
so the ratios compare equal work.
"""

from __future__ import annotations

import argparse
import json
import os
import random

import numpy as np

from dqn_cli.bench.replay import BATCH, PER_CAPACITY, per_work, td_error_stream, time_us
from dqn_cli.replay.sum_tree import last_write_wins
from dqn_cli.runtime import available_cpus, cpu_name


# --------------------------------------------------------------------------- baseline: binary trees
class VectorisedBinaryTrees:
    """Binary sum and min trees in one flat array each, as Dopamine's
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


# --------------------------------------------------------------------------- baseline: per-item Python
class PythonSegmentTreeBaseline:
    """labml's prioritized replay trees, per item in pure Python.

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


# --------------------------------------------------------------------------- the comparison
def run(quick: bool = False) -> dict:
    number, repeat = (100, 15) if quick else (200, 30)
    slow_number = max(number // 10, 10)  # the Python baseline is ~10-20x slower
    random.seed(0)
    next_td = td_error_stream()
    per, per_sample_update, per_tree_only = per_work(next_td)
    alpha = per.sampler.alpha

    binary = VectorisedBinaryTrees(PER_CAPACITY)
    binary.load(per.sampler.priorities())

    def binary_tree_only():
        idx, q = binary.draw(per.rng, BATCH)
        weights = np.power(binary.mins[1] / q, 0.5, dtype=np.float32)
        idx, p = last_write_wins(idx, np.abs(next_td()).astype(np.float64) + 1e-6)
        binary.update(idx, p**alpha)
        return weights

    python = PythonSegmentTreeBaseline(PER_CAPACITY, alpha=alpha)
    python.load(per.sampler.priorities())

    def python_sample_update():
        idx, weights = python.sample_indices(BATCH, 0.5)
        envs, slots = np.divmod(idx, per.slots)
        batch = per._gather(envs, slots, weights)
        python.update_priorities(batch.indices, np.abs(next_td()) + 1e-6)

    def python_tree_only():
        idx, _ = python.sample_indices(BATCH, 0.5)
        python.update_priorities(idx, np.abs(next_td()) + 1e-6)

    t = {
        "per_sample_update_us": time_us(per_sample_update, number, repeat)[0],
        "per_tree_only_us": time_us(per_tree_only, number, repeat)[0],
        "binary_tree_only_us": time_us(binary_tree_only, number, repeat)[0],
        "python_segment_tree_sample_update_us": time_us(python_sample_update, slow_number, repeat)[0],
        "python_segment_tree_tree_only_us": time_us(python_tree_only, slow_number, repeat)[0],
    }
    result = {key: round(value, 1) for key, value in t.items()}
    result |= {
        "speedup_trees_only_vs_binary": round(t["binary_tree_only_us"] / t["per_tree_only_us"], 2),
        "speedup_vs_python_segment_tree": round(
            t["python_segment_tree_sample_update_us"] / t["per_sample_update_us"], 1
        ),
        "speedup_trees_only_vs_python": round(t["python_segment_tree_tree_only_us"] / t["per_tree_only_us"], 1),
        "capacity": PER_CAPACITY,
        "batch_size": BATCH,
        "timing": f"best mean of {repeat} repeats x {number} calls ({slow_number} for the Python tree)",
        "cpu": f"{cpu_name()}, {available_cpus()} cores",
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    rows = [
        ("dqn K-ary trees: PER sample(32) + update_priorities(32)", "per_sample_update_us"),
        ("  trees only", "per_tree_only_us"),
        ("vectorised binary trees (Dopamine's layout), trees only", "binary_tree_only_us"),
        ("per-item Python segment tree (labml), same gather", "python_segment_tree_sample_update_us"),
        ("  trees only", "python_segment_tree_tree_only_us"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'sum trees at capacity 2**20':<{width}}  {'us (wall)':>10}")
    for name, key in rows:
        print(f"{name:<{width}}  {result[key]:>10.1f}")
    print(
        f"K-ary over binary trees (trees only): {result['speedup_trees_only_vs_binary']:.2f}x (kept if > 1.5x); "
        f"over the Python segment tree: {result['speedup_vs_python_segment_tree']:.1f}x "
        f"(trees only {result['speedup_trees_only_vs_python']:.1f}x). {result['timing']}; "
        f"load average {result['load_average_1min']} on {result['cpu']}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats (about 20 s)")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick)))


if __name__ == "__main__":
    main()
