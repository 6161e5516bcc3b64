"""`dqn bench replay`: how fast replay sampling and priority updates are.

Measures, in one process on this machine:

* ``per_sample_update_us``: :class:`~dqn_cli.replay.samplers.PrioritizedSampler`
  ``sample(32, beta)`` + ``update_priorities`` of the 32 at capacity 2**20, with
  1-float frames so the trees dominate (``per_tree_only_us``: the same without
  building the batch of transitions);
* ``uniform_sample_us``: uniform ``sample(32)`` of stacked Atari transitions
  (84x84 uint8 frames, stack 4) at capacity 2**20 (7.4 GB; ``quick`` uses
  2**16, reported as ``capacity``), and PER on the same frames;
* ``*_add_us``: one vector step of 4 envs into each buffer.

Each time is the best mean over several repeats of many calls (timeit's
convention: the least disturbed by other processes on a shared CPU).

The designs the sum trees were chosen over (vectorised binary trees, a
per-item Python segment tree) are measured against them by
``scripts/bench_replay_trees.py``, which holds those baselines.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import numpy as np

from dqn_cli.replay.samplers import PrioritizedSampler
from dqn_cli.replay.storage import ReplayBuffer
from dqn_cli.runtime import available_cpus, available_memory_bytes, cpu_name

BATCH = 32
PER_CAPACITY = 2**20
ATARI_CAPACITY = 2**20
QUICK_ATARI_CAPACITY = 2**16
NUM_ENVS = 4


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


# --------------------------------------------------------------------------- the timed work
def td_error_stream(seed: int = 0) -> Callable[[], np.ndarray]:
    """A zero-argument callable returning batches of TD errors, float32 (BATCH,), cycling over
    64 drawn up front (drawing them is not the work timed)."""
    rng = np.random.default_rng(seed)
    pool = [rng.standard_normal(BATCH).astype(np.float32) for _ in range(64)]
    k = [0]

    def next_td() -> np.ndarray:
        k[0] = (k[0] + 1) & 63
        return pool[k[0]]

    return next_td


def per_work(next_td: Callable[[], np.ndarray]):
    """A full prioritized buffer of 1-float frames at capacity 2**20 (the trees dominate), and two
    timed callables on it: sample(32) + update_priorities(32); and the same on the trees alone
    (draw, importance weights, update), without building the batch of transitions."""
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

    def sample_update():
        batch = per.sample(BATCH, beta=0.5)
        per.update_priorities(batch.indices, next_td())

    def trees_only():
        idx, q = per.sampler.draw(per.rng, BATCH)
        weights = np.power(per.sampler.min_tree.min() / q, 0.5, dtype=np.float32)
        per.update_priorities(idx, next_td())
        return weights

    return per, sample_update, trees_only


# --------------------------------------------------------------------------- run
def run(quick: bool = False) -> dict:
    """Run the replay benchmark, print a table, and return the numbers (see the module docstring)."""
    number, repeat = (100, 15) if quick else (200, 30)  # many short repeats: the best catches a quiet moment
    rows: list[tuple[str, int, tuple[float, float]]] = []
    next_td = td_error_stream()
    per, per_sample_update, per_tree_only = per_work(next_td)
    per_t = time_us(per_sample_update, number, repeat)
    per_tree_t = time_us(per_tree_only, number, repeat)
    rows += [
        ("PER sample(32) + update_priorities(32), 1-float frames", PER_CAPACITY, per_t),
        ("  the same, trees only (no batch of transitions)", PER_CAPACITY, per_tree_t),
    ]

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
        "timing": f"best mean of {repeat} repeats x {number} calls",
        "cpu": f"{cpu_name()}, {available_cpus()} cores",
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
        f"goal: PER sample + update <= 100 us. "
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
