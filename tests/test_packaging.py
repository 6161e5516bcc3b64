"""The configs reach an installed wheel: `pip install .` (not editable), then `dqn train` anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_configs_and_trains_from_an_unrelated_directory(tmp_path):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(wheels)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "warning" not in (build.stdout + build.stderr).lower(), build.stderr[-3000:]  # a quiet install
    wheel = next(wheels.glob("dqn_cli-*.whl"))
    # The dependencies are those of this venv; the package itself comes only from the wheel.
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    assert (site / "dqn_cli" / "configs" / "train.yaml").is_file()
    assert (site / "dqn_cli" / "configs" / "env" / "cartpole.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import dqn_cli.app.cli as c; print(c.__file__); print(c.config_dir())"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    module_file, configs = where.stdout.split()
    assert module_file.startswith(str(site)) and configs.startswith(str(site))
    proc = subprocess.run(
        [
            str(site / "bin" / "dqn"),
            "train",
            "total_steps=200",
            "learning_starts=50",
            "batch_size=8",
            "replay.capacity=500",
            "network.hidden_sizes=[8]",
            "eval.episodes=1",
            "env.max_episode_steps=20",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (summary,) = elsewhere.glob("outputs/*/*_cartpole/summary.json")
    assert json.loads(summary.read_text())["total_steps"] == 200
