"""The statistics of the result tables: bootstrap intervals of a mean over runs and the
interquartile mean (Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the
Statistical Precipice"), shared by ``dqn plot`` and its Atari 100k tables."""

from __future__ import annotations

import numpy as np

BOOTSTRAP = 2000  # bootstrap resamples


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per run)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), float(values.mean())
    means = values[rng.integers(0, values.size, size=(BOOTSTRAP, values.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def mean_ci(values: np.ndarray, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """rliable's percentile bootstrap interval of the mean of ``values`` (one per run; with one
    task its stratified bootstrap is the plain one), for the tables."""
    from rliable import library

    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), float(values.mean())
    np.random.seed(seed)  # (rliable draws from numpy's global generator)
    _, ci = library.get_interval_estimates(
        {"x": values[:, None]}, lambda x: np.array([x.mean()]), reps=BOOTSTRAP, confidence_interval_size=level
    )
    return float(ci["x"][0, 0]), float(ci["x"][1, 0])


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of runs (scipy's trim_mean(x, 0.25), as rliable)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())
