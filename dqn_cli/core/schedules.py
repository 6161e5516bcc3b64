"""Schedules: pure functions of the environment step.

Every schedule maps ``step`` (env steps summed over envs, int >= 0) to a
float. They hold no state, so resuming a run only needs the step counter.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from dqn_cli.config import OptimizerConfig, ReplayConfig, ScheduleConfig

Schedule = Callable[[int], float]


def linear(start: float, end: float, duration: int) -> Schedule:
    """``start`` at step 0, straight to ``end`` at ``duration``, then constant."""

    def value(step: int) -> float:
        frac = min(max(step, 0) / max(duration, 1), 1.0)
        return start + frac * (end - start)

    return value


def exponential(start: float, end: float, decay_steps: int) -> Schedule:
    """``end + (start - end) * exp(-step / decay_steps)`` (the PyTorch DQN tutorial's)."""

    def value(step: int) -> float:
        return end + (start - end) * math.exp(-max(step, 0) / decay_steps)

    return value


def piecewise(points: Sequence[Sequence[float]]) -> Schedule:
    """Linear interpolation between ``(step, value)`` points; constant outside them."""
    pts = sorted((float(s), float(v)) for s, v in points)

    def value(step: int) -> float:
        if step <= pts[0][0]:
            return pts[0][1]
        for (s0, v0), (s1, v1) in zip(pts, pts[1:]):
            if step < s1:
                return v0 + (step - s0) / (s1 - s0) * (v1 - v0)
        return pts[-1][1]

    return value


def epsilon_schedule(cfg: ScheduleConfig) -> Schedule:
    """The exploration epsilon as a function of the env step."""
    if cfg.name == "linear":
        return linear(cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay_steps)
    if cfg.name == "exponential":
        return exponential(cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay_steps)
    if cfg.name == "piecewise":
        return piecewise(cfg.points)
    raise ValueError(f"unknown schedule {cfg.name!r}")


def beta_schedule(cfg: ReplayConfig) -> Schedule:
    """The PER importance-weight exponent (Schaul et al. 2016): linear from ``beta_start`` at
    step 0 to ``beta_end`` at ``beta_steps``, then constant. Its own settings, whatever the
    epsilon schedule; ``beta_steps`` is fixed when the run starts (config.validate), so a
    resume with a new ``total_steps`` does not move it."""
    return linear(cfg.beta_start, cfg.beta_end, int(cfg.beta_steps))


def learning_rate_schedule(cfg: OptimizerConfig) -> Schedule:
    """The learning rate: ``lr`` throughout, or linear from ``lr`` to ``lr_end`` at
    ``lr_decay_steps`` (fixed when the run starts, as beta's horizon), then constant."""
    if cfg.lr_end is None:
        return lambda step: cfg.lr
    return linear(cfg.lr, cfg.lr_end, int(cfg.lr_decay_steps))
