"""What the tests share: the real configs composed from the YAML, tiny budgets, and runners for the
real `dqn` entrypoint. (Pytest puts this folder on the path of every test module.)"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dqn_cli.app.cli import config_dir
from dqn_cli.config import TrainConfig, register_configs, to_train_config, validate

ROOT = Path(__file__).resolve().parents[1]

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

# the TensorBoard scalars every training run logs
TRAINING_TAGS = [
    "charts/episodic_return",
    "charts/episodic_length",
    "losses/td_loss",
    "losses/q_values",
    "charts/epsilon",
    "eval/mean_return",
    "perf/env_steps_per_second",
    "perf/updates_per_second",
]

# deterministic CPU training: one thread, explicit device, replay saved beside the checkpoints
# The split runs start with total_steps=200 and resume to 400: the learning rate's annealing horizon is
# fixed when a run starts (like replay.beta_steps), so it is pinned to the full budget for both.
EXACT = [
    *TINY,
    "device=cpu",
    "torch_threads=1",
    "checkpoint.save_replay=true",
    "target_update_period=50",
    "optimizer.lr_decay_steps=400",
]

# Seconds-long sweep jobs on 2 shared cores; torch_threads=1 keeps parallel jobs off each other's cores.
SWEEP_TINY = [
    "total_steps=300",
    "learning_starts=100",
    "replay.capacity=1000",
    "network.hidden_sizes=[16]",
    "eval.episodes=1",
    "eval.every=0",
    "checkpoint.every=0",
    "torch_threads=1",
]


def compose(*overrides: str, check: bool = True) -> TrainConfig:
    """The config ``dqn train OVERRIDES`` runs, composed from the real YAML through Hydra's Compose API
    (``check``: validated as the CLI validates it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = to_train_config(hydra_compose("train", overrides=list(overrides)))
    return validate(cfg) if check else cfg


def tiny(*overrides: str) -> TrainConfig:
    """A seconds-long in-process run of the default config: ``compose(*TINY-like budget, *overrides)``."""
    base = [
        "total_steps=200",
        "learning_starts=50",
        "batch_size=16",
        "replay.capacity=1000",
        "network.hidden_sizes=[8]",
        "env.max_episode_steps=30",
        "eval.episodes=3",
        "eval.every=0",
        "checkpoint.every=0",
        "progress=off",
    ]
    return compose(*base, *overrides)


def without(args: list[str], key: str) -> list[str]:
    return [a for a in args if not a.startswith(key + "=")]


def run_dqn(
    *args: str, cwd: Path | None = None, timeout: float = 120, env: dict | None = None
) -> subprocess.CompletedProcess:
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


def load_replay(ckpt_dir: Path) -> dict | None:
    """All arrays of a run's ``replay.npz`` in memory, or None when there is none."""
    from dqn_cli.run.checkpoint import open_replay

    with open_replay(ckpt_dir) as saved:
        return None if saved is None else {k: saved[1][k] for k in saved[1]}


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file a run or sweep wrote (evals.csv, summary.csv), as dicts of strings."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def last_json_line(stdout: str) -> dict:
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    return json.loads(lines[-1])


def train_run(tmp_path_factory, name: str, overrides: list[str]) -> Path:
    """A `dqn train` through the real entrypoint into a fresh run dir; fails the test if it fails."""
    run_dir = tmp_path_factory.mktemp(name) / "cartpole"
    proc = run_dqn("train", *overrides, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def sweep(tmp_path: Path, *overrides: str, timeout: float = 150) -> tuple[Path, subprocess.CompletedProcess]:
    """A tiny `dqn train -m OVERRIDES` into tmp_path/sweep, run from tmp_path."""
    sweep_dir = tmp_path / "sweep"
    proc = run_dqn(
        "train", "-m", *overrides, *SWEEP_TINY, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, timeout=timeout
    )
    return sweep_dir, proc


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name.split("_")[0]))


def tb_steps(tb_dir: Path) -> dict[str, list[int]]:
    """Every scalar tag of a run's TensorBoard dir, as TensorBoard itself reads it (purges applied)."""
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_no_repeated_or_forked_points(tb_dir: Path) -> dict[str, list[int]]:
    steps = tb_steps(tb_dir)
    assert steps, f"no scalars in {tb_dir}"
    for tag, s in steps.items():
        assert all(a < b for a, b in zip(s, s[1:])), f"{tag}: steps not strictly increasing: {s}"
    return steps


def snapshot(run_dir: Path) -> dict[str, tuple[int, int, str]]:
    """(size, mtime_ns, sha256) of every file in a run dir."""

    def facts(p: Path) -> tuple[int, int, str]:
        return p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()

    return {str(p.relative_to(run_dir)): facts(p) for p in sorted(run_dir.rglob("*")) if p.is_file()}
