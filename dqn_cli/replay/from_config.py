"""The replay buffer a run's config asks for, and its memory estimate (uniform or prioritized)."""

from __future__ import annotations

from dqn_cli.replay.samplers import PrioritizedSampler, UniformSampler
from dqn_cli.replay.storage import ReplayBuffer, slot_bytes
from dqn_cli.replay.sum_tree import PRIORITY_BYTES_PER_SLOT
from dqn_cli.runtime import int_seed


def estimate_replay_bytes(cfg, spec) -> int:
    """Bytes the run's buffer will allocate (cfg: TrainConfig, spec: spec.EnvSpec)."""
    per_slot = slot_bytes(spec.frame_shape, spec.frame_dtype)
    if cfg.replay.name == "prioritized":
        per_slot += PRIORITY_BYTES_PER_SLOT
    return per_slot * cfg.replay.capacity


def build_replay(cfg, spec) -> ReplayBuffer:
    """The replay buffer the config asks for (cfg: TrainConfig, spec: spec.EnvSpec)."""
    r = cfg.replay
    prioritized = r.name == "prioritized"
    return ReplayBuffer(
        capacity=r.capacity,
        num_envs=cfg.env.num_envs,
        frame_shape=spec.frame_shape,
        frame_dtype=spec.frame_dtype,
        frame_stack=spec.frame_stack,
        n_step=r.n_step,
        gamma=cfg.gamma,
        seed=int_seed(cfg.seed, "replay"),
        sampler=PrioritizedSampler(alpha=r.alpha, eps=r.eps) if prioritized else UniformSampler(),
    )
