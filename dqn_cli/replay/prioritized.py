"""Proportional prioritized experience replay (Schaul et al. 2016), vectorised numpy.

Priorities. A transition with TD error ``delta`` has priority
``p = |delta| + eps`` and is sampled with probability
``P(i) = p_i**alpha / sum_k p_k**alpha``. The trees store ``q = p**alpha``.
A transition gets the largest priority seen so far (1.0 at the start) when it
becomes valid, so it is sampled at least once soon (RL_NOTES 15).

Sampling is stratified: the total mass is cut into ``batch_size`` equal
segments and one value is drawn uniformly in each, then found by a prefix
search in the sum tree. Importance weights are ``w_i = (N * P(i))**-beta``
divided by the largest weight over the buffer, ``(N * P_min)**-beta``
(N = valid transitions), i.e. ``w_i = (q_min / q_i)**beta`` in (0, 1]; the
minimum comes from a min tree.

Trees. :class:`SumTree` and :class:`MinTree` are ``K``-ary trees (``K`` =
``branching``, a power of two, 32 by default) stored level by level as flat
numpy arrays; each level is padded to a multiple of ``K`` (so any capacity
works), and the levels stop at the first one with at most ``top_size``
nodes. All operations are vectorised over the batch with a few numpy calls
per level and never loop over items in Python:

* ``update`` writes the leaves (last write wins for repeated indices), then
  recomputes each touched parent as the reduction of its ``K`` children;
* ``prefix_search`` takes one ``cumsum`` + ``searchsorted`` on the top level,
  then per level gathers the ``K`` children of every current node, forms their
  exclusive prefix sums with one small matrix product and picks the child.

At capacity 2**20 that is 2 levels under a top of 1,024 nodes, where a binary
tree would need 20 dependent steps per operation.

Layout. The buffer reuses :class:`~dqn_cli.replay.storage.ReplayBuffer`'s per-env
frame rings; tree leaf ``e * L + t`` is slot ``t`` of env ``e`` (the flat id in
``Batch.indices``). Validity changes reach the trees through the
``_set_valid`` hook, so a slot has a positive priority exactly while it may be
sampled.
"""

from __future__ import annotations

import math

import numpy as np

from dqn_cli.replay.storage import Batch, ReplayBuffer

DEFAULT_BRANCHING = 32
DEFAULT_TOP_SIZE = 1024

# float64 leaves of the sum and the min tree, plus their inner levels (1/(K-1) of the leaves)
PRIORITY_BYTES_PER_SLOT = math.ceil(2 * 8 * DEFAULT_BRANCHING / (DEFAULT_BRANCHING - 1))

# OpenBLAS runs a GEMM single-threaded up to M*N*K = 4 * 65536; above it the
# prefix sums use cumsum so sampling never starts BLAS threads.
_GEMM_SINGLE_THREAD_MNK = 4 * 65536


def last_write_wins(indices: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop all but the last occurrence of every repeated index (``values``: an array)."""
    if indices.size < 2:
        return indices, values
    ordered = np.sort(indices)
    if not (ordered[1:] == ordered[:-1]).any():  # the common case: no repeats
        return indices, values
    order = np.argsort(indices, kind="stable")  # equal keys keep their order: the last one wins
    ordered = indices[order]
    keep = np.empty(ordered.size, dtype=bool)
    keep[-1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[:-1])
    return ordered[keep], values[order[keep]]


class _BlockTree:
    """A ``K``-ary reduction tree over ``capacity`` leaves; see the module docstring.

    ``levels[0]`` holds the leaves, ``levels[-1]`` the top (at most
    ``top_size`` nodes); node ``i`` of level ``l + 1`` reduces nodes
    ``i*K .. i*K + K-1`` of level ``l``. Padding holds the reduction's
    identity (0 for sums, +inf for minima) and is never written.
    """

    _identity: float = 0.0

    def __init__(self, capacity: int, branching: int = DEFAULT_BRANCHING, top_size: int = DEFAULT_TOP_SIZE):
        capacity = int(capacity)
        K = int(branching)
        if capacity < 1:
            raise ValueError(f"tree capacity must be >= 1, got {capacity}")
        if K < 2 or K & (K - 1):
            raise ValueError(f"branching must be a power of two >= 2, got {K}")
        self.capacity = capacity
        self.branching = K
        self.top_size = max(int(top_size), 1)
        self._shift = K.bit_length() - 1
        sizes = [capacity]
        while sizes[-1] > self.top_size:
            sizes[-1] = -(-sizes[-1] // K) * K  # pad to whole blocks
            sizes.append(sizes[-1] // K)
        self.levels = [np.full(n, self._identity, dtype=np.float64) for n in sizes]
        # (blocks, K) views of every level below the top: node i's children are row i of the level below
        self._blocks = [level.reshape(-1, K) for level in self.levels[:-1]]

    # ------------------------------------------------------------------ write
    def update(self, indices, values, assume_unique: bool = False) -> None:
        """Set leaves ``indices`` to ``values`` (an array or a scalar); the last write wins.

        ``assume_unique`` skips the duplicate check (the caller guarantees distinct indices).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.capacity:
            raise IndexError(f"tree index out of range [0, {self.capacity})")
        vals = np.asarray(values, dtype=np.float64)
        if vals.ndim:
            vals = vals.reshape(-1)
            if vals.size != idx.size:
                raise ValueError(f"{idx.size} indices but {vals.size} values")
            if not assume_unique:
                idx, vals = last_write_wins(idx, vals)
        self._write(idx, vals)

    def path(self, idx: np.ndarray) -> list[np.ndarray]:
        """The node ids above leaves ``idx`` on every level (``path[0] = idx``); trees of one shape share it."""
        out = [idx]
        for _ in self._blocks:
            idx = idx >> self._shift
            out.append(idx)
        return out

    def _write(self, idx: np.ndarray, vals, path: list[np.ndarray] | None = None) -> None:
        """``update`` without checks: distinct int64 ``idx`` in range, ``vals`` a scalar or one per index."""
        levels, reduce = self.levels, self._reduce
        levels[0][idx] = vals
        if path is None:
            path = self.path(idx)
        for lvl, blocks in enumerate(self._blocks, start=1):
            parents = path[lvl]
            levels[lvl][parents] = reduce(blocks.take(parents, axis=0), axis=1)

    def rebuild(self) -> None:
        """Recompute every inner level from the leaves (after a bulk write to ``levels[0]``)."""
        for lvl, blocks in enumerate(self._blocks, start=1):
            sums = self._reduce(blocks, axis=1)
            self.levels[lvl][: sums.size] = sums  # the rest is padding

    def fill(self, value: float) -> None:
        """Every leaf set to ``value`` (padding keeps the identity)."""
        self.levels[0][: self.capacity] = value
        self.rebuild()

    # ------------------------------------------------------------------- read
    @property
    def leaves(self) -> np.ndarray:
        """The ``capacity`` leaf values (a view; write through :meth:`update`)."""
        return self.levels[0][: self.capacity]

    def __getitem__(self, indices) -> np.ndarray:
        return self.levels[0][: self.capacity][indices]

    def __len__(self) -> int:
        return self.capacity

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.levels))

    @staticmethod
    def _reduce(blocks: np.ndarray, axis: int) -> np.ndarray:
        raise NotImplementedError


class SumTree(_BlockTree):
    """Sums of leaves: ``total`` and ``prefix_search`` for proportional sampling."""

    _identity = 0.0
    _reduce = staticmethod(np.add.reduce)

    def __init__(self, capacity: int, branching: int = DEFAULT_BRANCHING, top_size: int = DEFAULT_TOP_SIZE):
        super().__init__(capacity, branching, top_size)
        K = self.branching
        # children (B, K) @ M = (B, K+1): column c < K is the exclusive prefix sum before child c,
        # column K twice the block's sum, so "upper end of child j > v" holds for j = K-1 whenever
        # the block is not empty, even when rounding put v at or just past the block's sum
        self._prefix_matrix = np.zeros((K, K + 1))
        self._prefix_matrix[:, :K] = np.triu(np.ones((K, K)), 1)
        self._prefix_matrix[:, K] = 2.0
        self._top_prefix = np.zeros(self.levels[-1].size + 1)
        self._top_inner = self._top_prefix[1:-1]  # upper ends of all top nodes but the last
        self._scratch: dict[int, tuple[np.ndarray, ...]] = {}  # per batch size: mask, row bases, prefix views

    @property
    def total(self) -> float:
        """Sum of all leaves."""
        return float(self.levels[-1].sum())

    def top_prefix(self) -> np.ndarray:
        """Inclusive prefix sums of the top level after a leading 0 (the last one is the total).

        An internal buffer, overwritten by the next call.
        """
        np.cumsum(self.levels[-1], out=self._top_prefix[1:])
        return self._top_prefix

    def prefix_search(self, values, top_prefix: np.ndarray | None = None) -> np.ndarray:
        """For each ``v`` in ``values`` (in ``[0, total)``), the leaf ``i`` with
        ``cumsum[i-1] <= v < cumsum[i]``, as ``np.searchsorted(cumsum, v, side="right")``:
        a zero leaf is never chosen for ``v`` inside the range. int64, the shape of ``values``.

        ``top_prefix``: :meth:`top_prefix`, when the caller already has it.
        Float rounding can put a ``v`` within an ulp of ``total`` onto the last
        leaves, which may be zero: samplers check the leaf and redraw.
        """
        shape = np.shape(values)
        v = np.array(values, dtype=np.float64).reshape(-1)
        return self._descend(v, self.top_prefix() if top_prefix is None else top_prefix).reshape(shape)

    def _descend(self, v: np.ndarray, c: np.ndarray) -> np.ndarray:
        """:meth:`prefix_search` of a float64 (B,) ``v``, which it overwrites, given ``c = top_prefix()``."""
        inner = self._top_inner if c is self._top_prefix else c[1:-1]
        ids = np.searchsorted(inner, v, side="right")  # first top node whose upper end exceeds v
        v -= c.take(ids)  # c[ids] <= v by the search: v stays >= 0
        if not self._blocks:
            return ids
        B, K, shift = v.size, self.branching, self._shift
        mask, row_base, prefix, flat_prefix, upper_ends = self._buffers(B)
        gemm = B * K * (K + 1) <= _GEMM_SINGLE_THREAD_MNK
        for blocks in reversed(self._blocks):
            children = blocks.take(ids, axis=0)  # (B, K)
            if gemm:
                np.dot(children, self._prefix_matrix, out=prefix)
            else:  # large batches: the same columns without BLAS threads
                np.cumsum(children[:, :-1], axis=1, out=prefix[:, 1:K])
                prefix[:, K] = np.inf
            np.greater(upper_ends, v[:, None], out=mask)  # upper end of child j > v
            j = mask.argmax(axis=1)  # the first such child
            v -= flat_prefix.take(row_base + j)  # its exclusive prefix, <= v
            ids <<= shift
            ids += j
        return ids

    def _buffers(self, batch: int):
        buffers = self._scratch.get(batch)
        if buffers is None:
            K = self.branching
            prefix = np.zeros((batch, K + 1))
            mask = np.empty((batch, K), dtype=bool)
            buffers = (mask, np.arange(batch, dtype=np.int64) * (K + 1), prefix, prefix.reshape(-1), prefix[:, 1:])
            self._scratch[batch] = buffers
        return buffers


class MinTree(_BlockTree):
    """Minima of leaves; empty leaves hold +inf."""

    _identity = math.inf
    _reduce = staticmethod(np.fmin.reduce)  # = minimum here (no NaN is ever stored), and faster

    def min(self) -> float:
        """Smallest leaf (+inf when every leaf is +inf)."""
        return float(self.levels[-1].min())


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay over the uniform buffer's per-env frame rings.

    Args (besides :class:`~dqn_cli.replay.storage.ReplayBuffer`'s):
        alpha: priority exponent, ``P(i) ~ (|delta_i| + eps)**alpha``; 0 is uniform.
        eps: added to ``|delta|`` so no valid transition has zero priority.
        branching, top_size: tree shape (see the module docstring).
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        frame_shape,
        frame_dtype,
        frame_stack: int = 1,
        n_step: int = 1,
        gamma: float = 0.99,
        seed: int = 0,
        alpha: float = 0.6,
        eps: float = 1e-6,
        branching: int = DEFAULT_BRANCHING,
        top_size: int = DEFAULT_TOP_SIZE,
    ):
        super().__init__(capacity, num_envs, frame_shape, frame_dtype, frame_stack, n_step, gamma, seed)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.alpha = float(alpha)
        self.eps = float(eps)
        n = self.num_envs * self.slots
        self._sum = SumTree(n, branching, top_size)
        self._min = MinTree(n, branching, top_size)
        self._num_valid = 0
        self.max_priority = 1.0  # largest |delta| + eps seen; new transitions get its alpha power
        self.beta = 1.0  # the last beta passed to sample
        self._last_weights: np.ndarray | None = None
        self._last_priorities: np.ndarray | None = None
        self._strata = np.arange(0, dtype=np.float64)

    # -------------------------------------------------------------- validity
    def _set_valid(self, envs: np.ndarray, slots: np.ndarray, value: bool) -> None:
        """Slots becoming valid enter the trees at the max priority; invalid ones leave them."""
        envs = np.asarray(envs, dtype=np.int64)
        slots = np.asarray(slots, dtype=np.int64)
        old = self.valid[envs, slots]
        changed = ~old if value else old
        if not changed.any():
            return
        if not changed.all():
            envs, slots = envs[changed], slots[changed]
        flat = envs * self.slots + slots
        if flat.size > 1 and not (envs[1:] > envs[:-1]).all():  # the base class passes distinct envs
            flat = np.unique(flat)
            envs, slots = np.divmod(flat, self.slots)
        self.valid[envs, slots] = value
        path = self._sum.path(flat)
        if value:
            self._num_valid += flat.size
            q = self.max_priority**self.alpha
            self._sum._write(flat, q, path)
            self._min._write(flat, q, path)
        else:
            self._num_valid -= flat.size
            self._sum._write(flat, 0.0, path)
            self._min._write(flat, math.inf, path)

    def __len__(self) -> int:
        return self._num_valid

    # --------------------------------------------------------------- sampling
    def sample(self, batch_size: int, beta: float | None = None) -> Batch:
        """``batch_size`` transitions by stratified proportional sampling, with importance weights.

        ``beta``: importance-weight exponent (0 = no correction, 1 = full); None reuses the last one.
        """
        if beta is not None:
            self.beta = float(beta)
        idx, q = self._sample_indices(int(batch_size))
        # w_i = (N P_i)**-beta / max_k (N P_k)**-beta = (q_min / q_i)**beta: N and the total cancel
        weights = np.divide(self._min.min(), q)
        weights = np.power(weights, self.beta, dtype=np.float32)
        self._last_weights = weights
        envs, slots = np.divmod(idx, self.slots)
        return self._gather(envs, slots, weights)

    def _sample_indices(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat slot ids drawn with P(i) = q_i / total (one per equal-mass segment) and their q_i."""
        tree = self._sum
        c = tree.top_prefix()
        total = float(c[-1])
        if not total > 0:
            raise RuntimeError("replay buffer has no transition to sample yet")
        if self._strata.size != batch_size:
            self._strata = np.arange(batch_size, dtype=np.float64)
        segment = total / batch_size
        u = self.rng.random(batch_size)
        u += self._strata  # one uniform draw in each of the equal-mass segments
        u *= segment
        idx = tree._descend(u, c)
        q = tree.levels[0].take(idx)
        if not q.min() > 0.0:  # rounding at a segment's upper end reached an empty leaf
            idx, q = self._redraw(idx, q, segment, c)
        return idx, q

    def _redraw(self, idx, q, segment, c):
        """Redraw the draws that landed on empty leaves (in their segment, then anywhere)."""
        tree = self._sum
        todo = np.flatnonzero(~(q > 0.0))
        for attempt in range(64):
            if attempt < 32:
                u = (todo + self.rng.random(todo.size)) * segment
            else:
                u = self.rng.random(todo.size) * c[-1]
            found = tree._descend(u, c)
            fq = tree.levels[0].take(found)
            ok = fq > 0.0
            idx[todo[ok]], q[todo[ok]] = found[ok], fq[ok]
            todo = todo[~ok]
            if todo.size == 0:
                return idx, q
        raise RuntimeError("prioritized sampling kept landing on empty slots; the sum tree is inconsistent")

    # ------------------------------------------------------------- priorities
    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Priorities ``(|td_error| + eps)**alpha`` for the flat slot ids ``indices`` (``Batch.indices``).

        Ids whose slot is no longer valid (overwritten since it was sampled) and
        non-finite errors are skipped; for a repeated id the last error wins.
        """
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.dtype != np.int64:
            idx = idx.astype(np.int64).reshape(-1)
        p = np.abs(np.asarray(td_errors).reshape(-1), dtype=np.float64)
        if idx.size != p.size:
            raise ValueError(f"{idx.size} indices but {p.size} TD errors")
        if idx.size == 0:
            return
        ordered = np.sort(idx)
        if ordered[0] < 0 or ordered[-1] >= self.valid.size:
            raise IndexError(f"replay index out of range [0, {self.valid.size})")
        repeats = bool((ordered[1:] == ordered[:-1]).any())
        keep = self.valid.reshape(-1).take(idx)
        top = float(p.max())
        if not (keep.all() and math.isfinite(top)):  # stale slots, non-finite errors: skip them
            keep &= np.isfinite(p)
            idx, p = idx[keep], p[keep]
            if idx.size == 0:
                return
            top = float(p.max())
        if repeats:
            idx, p = last_write_wins(idx, p)
        p += self.eps
        self._last_priorities = p
        if top + self.eps > self.max_priority:
            self.max_priority = top + self.eps
        q = p**self.alpha if self.alpha != 1.0 else p
        path = self._sum.path(idx)
        self._sum._write(idx, q, path)
        self._min._write(idx, q, path)

    def priorities(self, indices=None) -> np.ndarray:
        """Stored ``p**alpha`` of flat slot ids (all slots when None; 0 for invalid slots)."""
        leaves = self._sum.leaves
        return leaves.copy() if indices is None else leaves[np.asarray(indices, dtype=np.int64)]

    def probabilities(self, indices=None) -> np.ndarray:
        """Sampling probabilities P(i) of flat slot ids (all slots when None)."""
        return self.priorities(indices) / self._sum.total

    def metrics(self) -> dict[str, float]:
        """TensorBoard scalars: beta, the last batch's mean weight, priority statistics.

        ``per/max_priority``: the largest ``|delta| + eps`` seen (new transitions get it);
        ``per/mean_priority``: mean ``|delta| + eps`` of the last priority update;
        ``per/mean_sampling_priority``: mean stored ``p**alpha`` over the valid transitions.
        """
        out = {"per/beta": self.beta, "per/max_priority": self.max_priority}
        if self._last_weights is not None:
            out["per/mean_importance_weight"] = float(self._last_weights.mean())
        if self._last_priorities is not None:
            out["per/mean_priority"] = float(self._last_priorities.mean())
        if self._num_valid:
            out["per/mean_sampling_priority"] = self._sum.total / self._num_valid
        return out

    # ------------------------------------------------------------ reporting
    @property
    def nbytes(self) -> int:
        return super().nbytes + self._sum.nbytes + self._min.nbytes

    # -------------------------------------------------------------- persist
    def state_dict(self) -> dict:
        state = super().state_dict()
        state["per_priorities"] = self._sum.leaves
        state["per_max_priority"] = np.array(self.max_priority)
        state["per_beta"] = np.array(self.beta)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.max_priority = float(state.get("per_max_priority", 1.0))
        self.beta = float(state.get("per_beta", self.beta))
        self.restore_priorities(state.get("per_priorities"))

    def restore_priorities(self, q: np.ndarray | None = None) -> None:
        """Rebuild the trees from ``valid`` and stored ``p**alpha`` per flat slot (after a bulk
        write of the buffer's arrays): invalid slots get 0, valid ones without a positive
        priority (all of them when ``q`` is None) get the max priority."""
        valid = self.valid.reshape(-1)
        q_new = self.max_priority**self.alpha
        if q is None:
            q = np.where(valid, q_new, 0.0)
        else:
            q = np.asarray(q, dtype=np.float64).reshape(-1)
            if q.shape != valid.shape:
                raise ValueError(f"saved priorities have shape {q.shape}, this run expects {valid.shape}")
            q = np.where(valid, q, 0.0)
            q[valid & ~(q > 0)] = q_new  # a valid slot must be sampleable
        self._sum.leaves[:] = q
        self._sum.rebuild()
        self._min.leaves[:] = np.where(valid, q, math.inf)
        self._min.rebuild()
        self._num_valid = int(np.count_nonzero(valid))
        self._last_weights = self._last_priorities = None
