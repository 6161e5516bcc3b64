"""Which stored transitions a batch holds: uniform or proportional prioritized replay.

A :class:`Sampler` is composed into :class:`~dqn_cli.replay.storage.ReplayBuffer`, as
Dopamine composes a replay buffer from its storage and a sampling distribution. The buffer
tells its sampler which slots become valid or stop being valid; the sampler draws flat slot
ids (``e * L + t``: slot ``t`` of env ``e``, as in ``Batch.indices``) and their importance
weights, and takes the TD errors back as priorities.

Prioritized replay (Schaul et al. 2016, proportional variant). A transition with TD error
``delta`` has priority ``p = |delta| + eps`` and is sampled with probability
``P(i) = p_i**alpha / sum_k p_k**alpha``; the trees store ``q = p**alpha``. A transition gets
the largest priority seen so far (1.0 at the start) when it becomes valid, so it is sampled
soon. Sampling is stratified: the total mass is cut into ``batch_size`` equal segments and one
value is drawn uniformly in each. Importance weights are ``w_i = (N P(i))**-beta`` divided by
the largest weight over the buffer, ``(N P_min)**-beta``, i.e. ``w_i = (q_min / q_i)**beta``
in (0, 1]; the minimum comes from a min tree.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from dqn_cli.replay.sum_tree import DEFAULT_BRANCHING, DEFAULT_TOP_SIZE, MinTree, SumTree, last_write_wins


class Storage(Protocol):
    """What a sampler reads of the buffer it is composed into (:class:`~dqn_cli.replay.storage.ReplayBuffer`)."""

    slots: int  # L, slots per env ring
    n_step: int
    head: np.ndarray  # int64 (E,): next slot to write per env
    size: np.ndarray  # int64 (E,): slots written per env
    valid: np.ndarray  # bool (E, L): may be sampled as a start
    rng: np.random.Generator  # the buffer's sampling generator (saved with it)

    def __len__(self) -> int: ...


class Sampler(Protocol):
    """What a replay buffer asks of its sampling distribution."""

    uses_priorities: bool  # whether update_priorities does anything (the learner can skip the call)

    def attach(self, num_slots: int) -> None:
        """Size the sampler for a buffer of ``num_slots`` flat slots (called once by the buffer)."""

    def validity_changed(self, flat: np.ndarray, valid: bool) -> None:
        """Distinct flat slot ids (int64) that just became valid, or stopped being valid."""

    def validity_reset(self, valid: np.ndarray) -> None:
        """Every slot's validity at once (bool, one per flat slot), after a bulk restore."""

    def sample(self, buffer: Storage, batch_size: int, beta: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Flat slot ids (int64 (B,)) among the valid ones, and their importance weights (float32 (B,))."""

    def update_priorities(self, buffer: Storage, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """The TD errors of a sampled batch (``Batch.indices``), for samplers that use them."""

    def metrics(self) -> dict[str, float]:
        """Scalars for TensorBoard."""

    @property
    def nbytes(self) -> int: ...

    def state_dict(self) -> dict[str, np.ndarray]: ...

    def load_state_dict(self, state: dict, valid: np.ndarray) -> None: ...


class UniformSampler:
    """Uniform over the valid slots (Mnih et al. 2015); importance weights 1."""

    uses_priorities = False

    def attach(self, num_slots: int) -> None:
        pass

    def validity_changed(self, flat: np.ndarray, valid: bool) -> None:
        pass

    def validity_reset(self, valid: np.ndarray) -> None:
        pass

    def sample(self, buffer: Storage, batch_size: int, beta: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Draw in each env's possibly-valid age range, redraw the rest (rejection keeps the
        draw uniform over the valid slots whatever the proposal range covers)."""
        L, n = buffer.slots, buffer.n_step
        # ages (0 = oldest) 0 .. size-n-1 may be valid (the n newest lack a complete window); the few
        # invalid ones among them (final slots, stacks cut by the overwrite front) are redrawn
        counts = np.maximum(buffer.size - n, 0)
        total = int(counts.sum())
        if total == 0 or len(buffer) == 0:
            raise RuntimeError("replay buffer has no transition to sample yet")
        cum = np.cumsum(counts)
        flat = np.empty(batch_size, dtype=np.int64)
        todo = np.arange(batch_size)
        valid = buffer.valid.reshape(-1)
        for _ in range(1000):
            u = buffer.rng.integers(0, total, size=todo.size)
            e = np.searchsorted(cum, u, side="right")
            age = u - (cum[e] - counts[e])
            f = e * L + (buffer.head[e] - buffer.size[e] + age) % L
            ok = valid.take(f)
            flat[todo[ok]] = f[ok]
            todo = todo[~ok]
            if todo.size == 0:
                return flat, np.ones(batch_size, dtype=np.float32)
        raise RuntimeError("replay sampling found too few valid transitions")

    def update_priorities(self, buffer: Storage, indices: np.ndarray, td_errors: np.ndarray) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}

    @property
    def nbytes(self) -> int:
        return 0

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict, valid: np.ndarray) -> None:
        pass


class PrioritizedSampler:
    """Proportional prioritized sampling over a sum tree and a min tree (module docstring).

    Args:
        alpha: priority exponent, ``P(i) ~ (|delta_i| + eps)**alpha``; 0 is uniform.
        eps: added to ``|delta|`` so no valid transition has zero priority.
        branching, top_size: the trees' shape (:mod:`dqn_cli.replay.sum_tree`).
    """

    uses_priorities = True

    def __init__(
        self,
        alpha: float = 0.6,
        eps: float = 1e-6,
        branching: int = DEFAULT_BRANCHING,
        top_size: int = DEFAULT_TOP_SIZE,
    ):
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.branching, self.top_size = branching, top_size
        self.sum_tree: SumTree | None = None
        self.min_tree: MinTree | None = None
        self.num_valid = 0
        self.max_priority = 1.0  # largest |delta| + eps seen; new transitions get its alpha power
        self.beta = 1.0  # the last beta passed to sample
        self.last_weights: np.ndarray | None = None
        self.last_priorities: np.ndarray | None = None
        self._strata = np.arange(0, dtype=np.float64)

    def attach(self, num_slots: int) -> None:
        self.sum_tree = SumTree(num_slots, self.branching, self.top_size)
        self.min_tree = MinTree(num_slots, self.branching, self.top_size)

    # -------------------------------------------------------------- validity
    def validity_changed(self, flat: np.ndarray, valid: bool) -> None:
        """Slots becoming valid enter the trees at the max priority; invalid ones leave them."""
        path = self.sum_tree.path(flat)  # the two trees have one shape: one path for both
        if valid:
            self.num_valid += flat.size
            q = self.max_priority**self.alpha
            self.sum_tree.write(flat, q, path)
            self.min_tree.write(flat, q, path)
        else:
            self.num_valid -= flat.size
            self.sum_tree.write(flat, 0.0, path)
            self.min_tree.write(flat, math.inf, path)

    def validity_reset(self, valid: np.ndarray, q: np.ndarray | None = None) -> None:
        """Rebuild the trees from ``valid`` and stored ``p**alpha`` per flat slot: invalid slots get 0,
        valid ones without a positive priority (all of them when ``q`` is None) the max priority."""
        q_new = self.max_priority**self.alpha
        if q is None:
            q = np.where(valid, q_new, 0.0)
        else:
            q = np.asarray(q, dtype=np.float64).reshape(-1)
            if q.shape != valid.shape:
                raise ValueError(f"saved priorities have shape {q.shape}, this run expects {valid.shape}")
            q = np.where(valid, q, 0.0)
            q[valid & ~(q > 0)] = q_new  # a valid slot must be sampleable
        self.sum_tree.leaves[:] = q
        self.sum_tree.rebuild()
        self.min_tree.leaves[:] = np.where(valid, q, math.inf)
        self.min_tree.rebuild()
        self.num_valid = int(np.count_nonzero(valid))
        self.last_weights = self.last_priorities = None

    # --------------------------------------------------------------- sampling
    def sample(self, buffer: Storage, batch_size: int, beta: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Stratified proportional draws with importance weights; ``beta`` None reuses the last one."""
        if beta is not None:
            self.beta = float(beta)
        idx, q = self.draw(buffer.rng, int(batch_size))
        # w_i = (N P_i)**-beta / max_k (N P_k)**-beta = (q_min / q_i)**beta: N and the total cancel
        weights = np.power(np.divide(self.min_tree.min(), q), self.beta, dtype=np.float32)
        self.last_weights = weights
        return idx, weights

    def draw(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat slot ids drawn with P(i) = q_i / total (one per equal-mass segment) and their q_i."""
        tree = self.sum_tree
        c = tree.top_prefix()
        total = float(c[-1])
        if not total > 0:
            raise RuntimeError("replay buffer has no transition to sample yet")
        if self._strata.size != batch_size:
            self._strata = np.arange(batch_size, dtype=np.float64)
        segment = total / batch_size
        u = rng.random(batch_size)
        u += self._strata  # one uniform draw in each of the equal-mass segments
        u *= segment
        idx = tree.descend(u, c)
        q = tree.leaves.take(idx)
        if not q.min() > 0.0:  # rounding at a segment's upper end reached an empty leaf
            idx, q = self._redraw(rng, idx, q, segment, c)
        return idx, q

    def _redraw(self, rng, idx, q, segment, c):
        """Redraw the draws that landed on empty leaves (in their segment, then anywhere)."""
        tree = self.sum_tree
        todo = np.flatnonzero(~(q > 0.0))
        for attempt in range(64):
            if attempt < 32:
                u = (todo + rng.random(todo.size)) * segment
            else:
                u = rng.random(todo.size) * c[-1]
            found = tree.descend(u, c)
            fq = tree.leaves.take(found)
            ok = fq > 0.0
            idx[todo[ok]], q[todo[ok]] = found[ok], fq[ok]
            todo = todo[~ok]
            if todo.size == 0:
                return idx, q
        raise RuntimeError("prioritized sampling kept landing on empty slots; the sum tree is inconsistent")

    # ------------------------------------------------------------- priorities
    def update_priorities(self, buffer: Storage, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Priorities ``(|td_error| + eps)**alpha`` for the flat slot ids ``indices``.

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
        valid = buffer.valid.reshape(-1)
        ordered = np.sort(idx)
        if ordered[0] < 0 or ordered[-1] >= valid.size:
            raise IndexError(f"replay index out of range [0, {valid.size})")
        repeats = bool((ordered[1:] == ordered[:-1]).any())
        keep = valid.take(idx)
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
        self.last_priorities = p
        if top + self.eps > self.max_priority:
            self.max_priority = top + self.eps
        q = p**self.alpha if self.alpha != 1.0 else p
        path = self.sum_tree.path(idx)
        self.sum_tree.write(idx, q, path)
        self.min_tree.write(idx, q, path)

    def priorities(self, indices=None) -> np.ndarray:
        """Stored ``p**alpha`` of flat slot ids (all slots when None; 0 for invalid slots)."""
        leaves = self.sum_tree.leaves
        return leaves.copy() if indices is None else leaves[np.asarray(indices, dtype=np.int64)]

    def probabilities(self, indices=None) -> np.ndarray:
        """Sampling probabilities P(i) of flat slot ids (all slots when None)."""
        return self.priorities(indices) / self.sum_tree.total

    def metrics(self) -> dict[str, float]:
        """beta, the last batch's mean weight, priority statistics.

        ``per/max_priority``: the largest ``|delta| + eps`` seen (new transitions get it);
        ``per/mean_priority``: mean ``|delta| + eps`` of the last priority update;
        ``per/mean_sampling_priority``: mean stored ``p**alpha`` over the valid transitions.
        """
        out = {"per/beta": self.beta, "per/max_priority": self.max_priority}
        if self.last_weights is not None:
            out["per/mean_importance_weight"] = float(self.last_weights.mean())
        if self.last_priorities is not None:
            out["per/mean_priority"] = float(self.last_priorities.mean())
        if self.num_valid:
            out["per/mean_sampling_priority"] = self.sum_tree.total / self.num_valid
        return out

    @property
    def nbytes(self) -> int:
        return self.sum_tree.nbytes + self.min_tree.nbytes

    # -------------------------------------------------------------- persist
    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "per_priorities": self.sum_tree.leaves,
            "per_max_priority": np.array(self.max_priority),
            "per_beta": np.array(self.beta),
        }

    def load_state_dict(self, state: dict, valid: np.ndarray) -> None:
        self.max_priority = float(state.get("per_max_priority", 1.0))
        self.beta = float(state.get("per_beta", self.beta))
        self.validity_reset(valid, state.get("per_priorities"))
