"""Prioritized replay: the trees against numpy references, sampling frequencies,
importance weights by hand, max priority for new transitions, stale slots."""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import ROOT, compose

from dqn_cli.replay.samplers import PrioritizedSampler
from dqn_cli.replay.storage import ReplayBuffer
from dqn_cli.replay.sum_tree import PRIORITY_BYTES_PER_SLOT, MinTree, SumTree, last_write_wins

SHAPES = [  # capacity, branching, top_size: powers of two and not, one level and many
    (1, 32, 1024),
    (7, 2, 1),
    (1000, 32, 1024),
    (1000, 4, 8),
    (4099, 32, 16),
    (12_345, 8, 1),
]


def reference_writes(n: int, rounds, rng) -> tuple[np.ndarray, list]:
    """Leaf values after ``rounds`` batched writes with repeats, applied one by one in Python."""
    leaves = np.zeros(n)
    batches = []
    for _ in range(rounds):
        idx = rng.integers(0, n, size=rng.integers(1, 64))
        vals = rng.random(idx.size) * (rng.random(idx.size) > 0.2)  # some zeros
        batches.append((idx, vals))
        for i, v in zip(idx, vals):
            leaves[i] = v  # the last write wins
    return leaves, batches


@pytest.mark.parametrize("capacity,branching,top", SHAPES)
def test_sum_tree_matches_cumsum(capacity, branching, top):
    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity, branching, top)
    init = rng.random(capacity) * (rng.random(capacity) > 0.3)
    tree.update(np.arange(capacity), init)
    expected, batches = reference_writes(capacity, 20, rng)
    expected = np.where(np.isin(np.arange(capacity), np.concatenate([b[0] for b in batches])), expected, init)
    for idx, vals in batches:
        tree.update(idx, vals)

    np.testing.assert_array_equal(tree.leaves, expected)
    cumsum = np.cumsum(expected)
    assert tree.total == pytest.approx(cumsum[-1], rel=1e-12, abs=1e-12)
    for lower, upper in zip(tree.levels, tree.levels[1:]):  # every node is the sum of its children
        sums = lower.reshape(-1, branching).sum(axis=1)
        np.testing.assert_allclose(upper[: sums.size], sums, rtol=1e-12)
        assert (upper[sums.size :] == 0).all()  # padding
    if cumsum[-1] > 0:
        values = rng.random(5000) * cumsum[-1] * (1 - 1e-9)
        np.testing.assert_array_equal(tree.prefix_search(values), np.searchsorted(cumsum, values, side="right"))


@pytest.mark.parametrize("capacity,branching,top", SHAPES)
def test_prefix_search_exact_on_integer_priorities(capacity, branching, top):
    """Integer priorities sum exactly in float64, so even values on the boundaries must agree."""
    rng = np.random.default_rng(1)
    p = rng.integers(0, 4, size=capacity).astype(float)
    p[-1] = 0.0  # trailing empty leaf
    p[0] = 3.0
    tree = SumTree(capacity, branching, top)
    tree.update(np.arange(capacity), p)
    cumsum = np.cumsum(p)
    values = np.concatenate([np.arange(cumsum[-1]), np.arange(cumsum[-1]) + 0.5])
    got = tree.prefix_search(values)
    np.testing.assert_array_equal(got, np.searchsorted(cumsum, values, side="right"))
    assert (p[got] > 0).all()  # zero leaves are never chosen inside [0, total)
    assert tree.prefix_search(values.reshape(2, -1)).shape == (2, values.size // 2)


def test_prefix_search_large_batch_path():
    """Batches too large for the single-threaded GEMM take the cumsum path; same answers."""
    rng = np.random.default_rng(2)
    tree = SumTree(100_000, 32, 64)
    p = rng.random(100_000) * (rng.random(100_000) > 0.5)
    tree.update(np.arange(p.size), p)
    cumsum = np.cumsum(p)
    values = rng.random(4096) * cumsum[-1] * (1 - 1e-9)
    np.testing.assert_array_equal(tree.prefix_search(values), np.searchsorted(cumsum, values, side="right"))


def test_min_tree_and_scalar_writes():
    rng = np.random.default_rng(3)
    tree = MinTree(1000, 4, 8)
    assert tree.min() == math.inf
    expected, batches = reference_writes(1000, 30, rng)
    written = np.zeros(1000, dtype=bool)
    for idx, vals in batches:
        vals = vals + 0.5
        tree.update(idx, vals)
        written[idx] = True
    assert tree.min() == tree.leaves[written].min()
    tree.update(np.flatnonzero(written), math.inf)  # a scalar for many leaves
    assert tree.min() == math.inf
    tree.update([999], 0.25)
    assert tree.min() == 0.25


def test_rebuild_and_fill_match_updates():
    rng = np.random.default_rng(4)
    a, b = SumTree(1000, 4, 8), SumTree(1000, 4, 8)
    p = rng.random(1000)
    a.update(np.arange(1000), p)
    b.levels[0][:1000] = p
    b.rebuild()
    for x, y in zip(a.levels, b.levels):
        np.testing.assert_allclose(x, y, rtol=1e-12)
    m = MinTree(1000, 4, 8)
    m.fill(2.0)
    assert m.min() == 2.0 and m.levels[0][1000:].tolist() == [math.inf] * (m.levels[0].size - 1000)


def test_last_write_wins_on_repeats():
    tree = SumTree(10, 2, 1)
    tree.update([3, 5, 3, 3, 5], [1.0, 2.0, 4.0, 8.0, 16.0])
    assert tree[3] == 8.0 and tree[5] == 16.0 and tree.total == 24.0
    idx, vals = last_write_wins(np.array([2, 1, 2, 0]), np.array([10.0, 11.0, 12.0, 13.0]))
    assert dict(zip(idx.tolist(), vals.tolist())) == {0: 13.0, 1: 11.0, 2: 12.0}


def test_tree_rejects_bad_input():
    with pytest.raises(ValueError):
        SumTree(10, branching=3)
    tree = SumTree(10)
    with pytest.raises(IndexError):
        tree.update([10], [1.0])
    with pytest.raises(IndexError):
        tree.update([-1], [1.0])


# ----------------------------------------------------------------- the buffer
def fill(buffer, steps: int, episode_len=None, rng=None, value_offset=0):
    """Add ``steps`` vector steps; env e's observation is its env id * 1e6 + global step."""
    E = buffer.num_envs
    shape = buffer.frame_shape
    for k in range(steps):
        ids = np.arange(E) * 1e6 + k + value_offset
        obs = np.broadcast_to(ids.reshape(E, 1, *([1] * len(shape))), (E, buffer.frame_stack, *shape))
        obs = obs.astype(buffer.frames.dtype)
        ended = np.zeros(E, dtype=bool)
        if episode_len is not None:
            ended = (k + 1 + np.arange(E)) % episode_len == 0
        if rng is not None:
            ended |= rng.random(E) < 0.1
        term = ended & (np.arange(E) % 2 == 0)
        trunc = ended & ~term
        buffer.add(
            obs,
            np.zeros(E, dtype=np.int64),
            np.ones(E, dtype=np.float32),
            term,
            trunc,
            final_obs=obs if ended.any() else None,
        )


def consistent(buffer: ReplayBuffer) -> None:
    """Positive priority exactly on the valid slots; the min tree mirrors it; the count matches."""
    valid = buffer.valid.reshape(-1)
    q = buffer.sampler.priorities()
    np.testing.assert_array_equal(q > 0, valid)
    np.testing.assert_array_equal(buffer.sampler.min_tree.leaves, np.where(valid, q, np.inf))
    assert len(buffer) == valid.sum() == np.count_nonzero(q)
    assert buffer.sampler.sum_tree.total == pytest.approx(q.sum(), rel=1e-12)


def per(capacity=64, num_envs=1, alpha=0.6, eps=1e-6, **kw):
    """A small buffer; its trees are small-branching so every level of the descent is exercised."""
    tree = {"branching": kw.pop("branching", 4), "top_size": kw.pop("top_size", 2)}
    kw = {"frame_shape": (1,), "frame_dtype": np.float32, "frame_stack": 1, "n_step": 1, "gamma": 0.9, "seed": 0, **kw}
    return ReplayBuffer(capacity, num_envs, **kw, sampler=PrioritizedSampler(alpha=alpha, eps=eps, **tree))


def test_importance_weights_by_hand():
    """|delta| = 0, 1, 3 with eps = 1, alpha = 1: p = 1, 2, 4, P = 1/7, 2/7, 4/7, N = 3.
    beta = 1/2: w = (N P)^-1/2 / max = sqrt(7/3), sqrt(7/6), sqrt(7/12) over sqrt(7/3) = 1, 1/sqrt2, 1/2."""
    buf = per(capacity=8, alpha=1.0, eps=1.0)
    fill(buf, 4)  # slots 0, 1, 2 have their next observation: valid
    assert np.flatnonzero(buf.valid[0]).tolist() == [0, 1, 2]
    buf.update_priorities(np.array([0, 1, 2]), np.array([0.0, -1.0, 3.0], dtype=np.float32))
    np.testing.assert_allclose(buf.sampler.probabilities([0, 1, 2]), [1 / 7, 2 / 7, 4 / 7])
    batch = buf.sample(3000, beta=0.5)
    hand = {0: 1.0, 1: 1 / math.sqrt(2), 2: 0.5}
    for i, w in zip(batch.indices.tolist(), batch.weights.tolist()):
        assert w == pytest.approx(hand[i], rel=1e-6)
    assert batch.weights.dtype == np.float32
    counts = np.bincount(batch.indices, minlength=3)
    np.testing.assert_allclose(counts / 3000, [1 / 7, 2 / 7, 4 / 7], atol=0.01)  # stratified: tight
    m = buf.metrics()
    assert m["per/beta"] == 0.5 and m["per/max_priority"] == 4.0
    assert m["per/mean_importance_weight"] == pytest.approx(float(batch.weights.mean()))
    assert m["per/mean_priority"] == pytest.approx(7 / 3)


def test_importance_weights_formula_random():
    rng = np.random.default_rng(5)
    buf = per(capacity=300, num_envs=3, alpha=0.7, eps=0.01)
    fill(buf, 100, rng=rng)
    valid = np.flatnonzero(buf.valid.reshape(-1))
    buf.update_priorities(valid, rng.standard_normal(valid.size) * 3)
    batch = buf.sample(64, beta=0.4)
    p = (np.abs(buf.sampler.priorities()) ** (1 / 0.7))[valid]  # |delta| + eps back from p**alpha
    P = p**0.7 / (p**0.7).sum()
    N = valid.size
    w_all = (N * P) ** -0.4
    w = dict(zip(valid.tolist(), (w_all / w_all.max()).tolist()))
    np.testing.assert_allclose(batch.weights, [w[i] for i in batch.indices.tolist()], rtol=1e-5)


def test_sampling_frequencies_match_priorities_chi_square():
    rng = np.random.default_rng(6)
    buf = per(capacity=2 * 40, num_envs=2, alpha=0.6, seed=7)
    fill(buf, 40)
    valid = np.flatnonzero(buf.valid.reshape(-1))
    assert valid.size == 2 * 39
    buf.update_priorities(valid, rng.exponential(size=valid.size) * rng.integers(1, 10, size=valid.size))
    P = buf.sampler.probabilities(valid)
    draws, batch_size = 250, 256
    counts = np.zeros(buf.valid.size)
    for _ in range(draws):
        idx, _ = buf.sampler.draw(buf.rng, batch_size)
        counts += np.bincount(idx, minlength=counts.size)
    assert counts[~buf.valid.reshape(-1)].sum() == 0
    n = draws * batch_size
    expected = n * P
    stat = ((counts[valid] - expected) ** 2 / expected).sum()
    df = valid.size - 1
    critical = _chi2_ppf(0.999, df)
    assert stat < critical, (stat, critical)
    # the test has power: uniform sampling is rejected by the same statistic
    uniform = np.full(valid.size, n / valid.size)
    assert ((uniform - expected) ** 2 / expected).sum() > 10 * critical


def _chi2_ppf(q: float, df: int) -> float:
    """Chi-square quantile by the Wilson-Hilferty approximation (within 0.1% of scipy's
    chi2.ppf for df > 30, without importing scipy.stats, which takes seconds)."""
    assert q == 0.999
    z = 3.090232306167813  # standard normal quantile at 0.999
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_new_transitions_get_max_priority():
    buf = per(capacity=16, alpha=0.5, eps=0.0001)
    fill(buf, 3)
    assert buf.sampler.priorities([0, 1]).tolist() == [1.0, 1.0]  # the initial max priority is 1
    buf.update_priorities(np.array([0, 1]), np.array([0.5, 4.0]))
    assert buf.sampler.max_priority == pytest.approx(4.0001)
    fill(buf, 2, value_offset=3)  # slots 2 and 3 become valid
    np.testing.assert_allclose(buf.sampler.priorities([2, 3]), [4.0001**0.5] * 2)
    buf.update_priorities(np.array([1]), np.array([0.1]))  # smaller errors keep the max
    assert buf.sampler.max_priority == pytest.approx(4.0001)
    fill(buf, 1, value_offset=5)
    assert buf.sampler.priorities([4]) == pytest.approx(4.0001**0.5)
    consistent(buf)


def test_overwritten_slots_never_sampled_and_stale_updates_ignored():
    rng = np.random.default_rng(8)
    buf = per(capacity=3 * 25, num_envs=3, frame_stack=3, n_step=3, seed=3)
    for round_ in range(30):  # the ring wraps many times, with episode ends
        fill(buf, 7, rng=rng, value_offset=round_ * 7)
        consistent(buf)
        batch = buf.sample(32, beta=0.5)
        envs, slots = np.divmod(batch.indices, buf.slots)
        assert buf.valid[envs, slots].all()
        fill(buf, 10, rng=rng, value_offset=1000 + round_ * 7)  # overwrites some sampled slots
        stale = ~buf.valid.reshape(-1)[batch.indices]
        after_fill = buf.sampler.priorities()
        buf.update_priorities(batch.indices, np.full(32, 50.0))
        q = buf.sampler.priorities()
        assert (q[batch.indices[stale]] == 0).all()  # not revived
        fresh = batch.indices[~stale]
        np.testing.assert_allclose(q[fresh], (50.0 + buf.sampler.eps) ** buf.sampler.alpha)
        untouched = np.setdiff1d(np.arange(q.size), fresh)
        np.testing.assert_array_equal(q[untouched], after_fill[untouched])
        consistent(buf)


def test_non_finite_errors_are_skipped():
    buf = per(capacity=16)
    fill(buf, 5)
    buf.update_priorities(np.array([0, 1, 2]), np.array([np.nan, np.inf, 2.0]))
    q = buf.sampler.priorities([0, 1, 2])
    assert q[0] == 1.0 and q[1] == 1.0 and q[2] == pytest.approx((2.0 + 1e-6) ** 0.6)
    assert math.isfinite(buf.sampler.sum_tree.total) and buf.sampler.max_priority == pytest.approx(2.0 + 1e-6)


def test_rounding_at_the_top_redraws_onto_valid_slots():
    """Draws pushed to the very end of the mass (empty tail leaves) are redrawn, never returned."""

    class TopHeavy:
        def __init__(self):
            self.calls = 0
            self.rng = np.random.default_rng(0)

        def random(self, n):
            self.calls += 1
            if self.calls == 1:
                return np.full(n, 1.0)  # every draw at its segment's upper end
            return self.rng.random(n)

    buf = per(capacity=64)
    fill(buf, 10)  # slots 0..8 valid, 9..63 empty
    buf.rng = TopHeavy()
    idx, q = buf.sampler.draw(buf.rng, 4)
    assert (q > 0).all() and buf.valid.reshape(-1)[idx].all()


@pytest.mark.parametrize("tree", [{}, {"branching": 32, "top_size": 1024}])
def test_several_envs_with_atari_frames(tree):
    buf = per(capacity=4 * 40, num_envs=4, frame_shape=(84, 84), frame_dtype=np.uint8, frame_stack=4, n_step=3, **tree)
    fill(buf, 60, episode_len=13)
    consistent(buf)
    batch = buf.sample(32, beta=0.4)
    assert batch.obs.shape == batch.next_obs.shape == (32, 4, 84, 84)
    assert batch.obs.dtype == np.uint8 and batch.weights.dtype == np.float32
    assert set(np.unique(batch.indices // buf.slots)) <= {0, 1, 2, 3}
    assert ((batch.weights > 0) & (batch.weights <= 1)).all()
    buf.update_priorities(batch.indices, np.linspace(0, 3, 32))
    consistent(buf)
    rings = sum(
        a.nbytes
        for a in (buf.frames, buf.actions, buf.rewards, buf.terminated, buf.truncated, buf.final, buf.valid, buf.pos)
    )
    assert buf.nbytes == rings + buf.sampler.sum_tree.nbytes + buf.sampler.min_tree.nbytes


def test_state_dict_round_trip():
    rng = np.random.default_rng(9)
    a = per(capacity=3 * 30, num_envs=3, n_step=2, seed=4)
    fill(a, 50, rng=rng)
    batch = a.sample(16, beta=0.3)
    a.update_priorities(batch.indices, rng.standard_normal(16) * 5)
    state = a.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    b = per(capacity=3 * 30, num_envs=3, n_step=2, seed=99)
    b.load_state_dict({k: np.array(v) for k, v in state.items()})
    np.testing.assert_array_equal(a.sampler.priorities(), b.sampler.priorities())
    assert b.sampler.max_priority == a.sampler.max_priority and len(b) == len(a) and b.sampler.beta == a.sampler.beta
    consistent(b)
    x, y = a.sample(16), b.sample(16)
    np.testing.assert_array_equal(x.indices, y.indices)
    np.testing.assert_array_equal(x.weights, y.weights)
    # a uniform buffer's state loads with every valid slot at the max priority
    c = per(capacity=3 * 30, num_envs=3, n_step=2)
    uniform_state = {k: v for k, v in state.items() if not k.startswith("per_")}
    c.load_state_dict(uniform_state)
    consistent(c)
    assert set(np.unique(c.sampler.priorities()[c.valid.reshape(-1)])) == {1.0}


def test_bytes_per_slot_and_build_replay():
    from dqn_cli.replay.from_config import build_replay, estimate_replay_bytes
    from dqn_cli.replay.storage import slot_bytes

    buf = per(capacity=2**16, num_envs=4, branching=32, top_size=1024)
    assert buf.sampler.sum_tree.nbytes + buf.sampler.min_tree.nbytes <= PRIORITY_BYTES_PER_SLOT * 2**16
    cfg = compose("replay=prioritized", "replay.capacity=4000", "replay.alpha=0.5")
    spec = SimpleNamespace(frame_shape=(4,), frame_dtype=np.float32, frame_stack=1)
    replay = build_replay(cfg, spec)
    assert isinstance(replay.sampler, PrioritizedSampler) and replay.sampler.alpha == 0.5
    assert estimate_replay_bytes(cfg, spec) == (slot_bytes((4,), np.float32) + PRIORITY_BYTES_PER_SLOT) * 4000


def test_empty_buffer_refuses_to_sample():
    buf = per(capacity=16)
    with pytest.raises(RuntimeError):
        buf.sample(4, beta=0.5)
    assert not buf.can_sample(1)


def bench_replay_trees():
    """scripts/bench_replay_trees.py, the benchmark that holds the baselines the trees are timed against."""
    spec = importlib.util.spec_from_file_location("bench_replay_trees", ROOT / "scripts" / "bench_replay_trees.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_baseline_agrees_with_the_trees():
    """The benchmark's per-item Python baseline answers as the vectorised trees do (a fair comparison)."""
    from dqn_cli.bench.replay import fill_synthetic

    PythonSegmentTreeBaseline = bench_replay_trees().PythonSegmentTreeBaseline
    rng = np.random.default_rng(10)
    q = rng.random(1024) * (rng.random(1024) > 0.25)
    base = PythonSegmentTreeBaseline(1024, alpha=0.5)
    base.load(q)
    tree = SumTree(1024, 4, 8)
    tree.update(np.arange(1024), q)
    values = rng.random(200) * tree.total * (1 - 1e-9)
    assert [base.find_prefix_sum_idx(v) for v in values] == tree.prefix_search(values).tolist()
    idx = rng.integers(0, 1024, 50)
    p = rng.random(50) + 0.1
    base.update_priorities(idx.tolist(), p.tolist())
    tree.update(idx, p**0.5)
    assert base._sum() == pytest.approx(tree.total, rel=1e-12)
    assert base._min() == pytest.approx(tree.leaves[tree.leaves > 0].min())

    buf = per(capacity=4 * 64, num_envs=4, frame_stack=4, n_step=3)
    fill_synthetic(buf)
    consistent(buf)
    assert len(buf) == 4 * (64 - 3 - 3)
    batch = buf.sample(32, beta=0.5)
    assert batch.obs.shape == (32, 4, 1)


@pytest.mark.parametrize("capacity", [1, 5, 1000, 4099])
def test_bench_binary_trees_match_cumsum(capacity):
    """The benchmark's vectorised binary trees (the simpler design the K-ary trees are measured
    against) answer as np.cumsum does: totals, minima, and draws landing by prefix sums."""
    VectorisedBinaryTrees = bench_replay_trees().VectorisedBinaryTrees
    rng = np.random.default_rng(capacity)
    q = rng.random(capacity) * (rng.random(capacity) > 0.3)
    q[0] = 0.5  # at least one positive leaf
    trees = VectorisedBinaryTrees(capacity)
    trees.load(q)
    idx = rng.choice(capacity, size=min(capacity, 7), replace=False)
    q[idx] = rng.random(idx.size) + 0.01
    trees.update(idx, q[idx])
    assert trees.sums[1] == pytest.approx(q.sum(), rel=1e-12)
    assert trees.mins[1] == q[q > 0].min()
    draws, found = trees.draw(np.random.default_rng(0), 64)
    u = (np.arange(64) + np.random.default_rng(0).random(64)) * (q.sum() / 64)
    np.testing.assert_array_equal(draws, np.searchsorted(np.cumsum(q), u, side="right"))
    np.testing.assert_array_equal(found, q[draws])
