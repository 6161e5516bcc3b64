"""Schedules: pure functions of the environment step.

Every schedule maps ``step`` (env steps summed over envs, int >= 0) to a
float. They hold no state, so resuming a run only needs the step counter.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from dqn_cli.config import ScheduleConfig

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


def beta_schedule(cfg: ScheduleConfig, beta_start: float, beta_end: float, total_steps: int) -> Schedule:
    """The PER importance-weight exponent: ``beta_start`` at step 0 towards ``beta_end`` (Schaul et al. 2016).

    Linear over ``total_steps`` for ``linear`` and ``piecewise``; for
    ``exponential`` it approaches ``beta_end`` with an e-folding time of a
    fifth of training (within 1% of it at the end).
    """
    if cfg.name == "exponential":
        return exponential(beta_start, beta_end, max(total_steps // 5, 1))
    return linear(beta_start, beta_end, total_steps)
