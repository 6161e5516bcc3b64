"""Sum and min trees for proportional prioritized replay (Schaul et al. 2016), vectorised numpy.

:class:`SumTree` and :class:`MinTree` are ``K``-ary trees (``K`` = ``branching``, a power of
two, 32 by default) stored level by level as flat numpy arrays; each level is padded to a
multiple of ``K`` (so any capacity works), and the levels stop at the first one with at most
``top_size`` nodes. All operations are vectorised over the batch with a few numpy calls per
level and never loop over items in Python:

* ``update`` writes the leaves (last write wins for repeated indices), then recomputes each
  touched parent as the reduction of its ``K`` children;
* ``prefix_search`` takes one ``cumsum`` + ``searchsorted`` on the top level, then per level
  gathers the ``K`` children of every current node, forms their exclusive prefix sums with one
  small matrix product and picks the child.

At capacity 2**20 that is 2 levels under a top of 1,024 nodes, where a binary tree would need
20 dependent steps per operation.
"""

from __future__ import annotations

import math

import numpy as np

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
        self.write(idx, vals)

    def path(self, idx: np.ndarray) -> list[np.ndarray]:
        """The node ids above leaves ``idx`` on every level (``path[0] = idx``); trees of one shape share it."""
        out = [idx]
        for _ in self._blocks:
            idx = idx >> self._shift
            out.append(idx)
        return out

    def write(self, idx: np.ndarray, vals, path: list[np.ndarray] | None = None) -> None:
        """``update`` without its checks (the caller guarantees them): distinct int64 ``idx`` in range, ``vals`` a scalar or one per index."""
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
        return self.descend(v, self.top_prefix() if top_prefix is None else top_prefix).reshape(shape)

    def descend(self, v: np.ndarray, c: np.ndarray) -> np.ndarray:
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
