"""Shared fixtures: tiny configs and a runner for the real `dqn` entrypoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# A budget small enough for seconds-long end-to-end runs on 2 CPU cores.
TINY = [
    "total_steps=400",
    "learning_starts=100",
    "batch_size=16",
    "train_every=1",
    "replay.capacity=1000",
    "network.hidden_sizes=[16]",
    "eval.episodes=2",
    "eval.every=200",
    "checkpoint.every=200",
    "log_every=100",
    "env.max_episode_steps=50",
    "progress=log",
]


def run_dqn(*args: str, cwd: Path | None = None, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m dqn_cli ARGS` as a user would; returns the completed process."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "dqn_cli", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def last_json_line(stdout: str) -> dict:
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    return json.loads(lines[-1])


def train_run(tmp_path_factory, name: str, overrides: list[str]) -> Path:
    """A `dqn train` through the real entrypoint into a fresh run dir; fails the test if it fails."""
    run_dir = tmp_path_factory.mktemp(name) / "cartpole"
    proc = run_dqn("train", *overrides, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny CartPole run through the real entrypoint, shared by read-only tests."""
    return train_run(tmp_path_factory, "run", TINY)
