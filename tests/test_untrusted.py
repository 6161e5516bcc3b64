"""Untrusted run dirs and checkpoints are data (no code they name runs), one process per run dir,
and bad input ends in one line (issue: safe to open, impossible to corrupt)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import ROOT, run_dqn

import dqn_cli
from dqn_cli.config import ConfigError
from dqn_cli.run.lock import run_dir_lock

PAYLOAD = "import pathlib, os; pathlib.Path(os.environ['PWNED_MARK']).write_text('ran')\n"


def _tamper(run: Path, **env_keys) -> None:
    """Set env keys in both the run's .hydra/config.yaml and its checkpoints' stored configs."""
    cfg_path = run / ".hydra" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["env"].update(env_keys)
    cfg_path.write_text(yaml.safe_dump(cfg))
    for ckpt in (run / "checkpoints").glob("*.pt"):
        state = torch.load(ckpt, weights_only=True)
        state["config"]["env"].update(env_keys)
        torch.save(state, ckpt)


@pytest.fixture
def hostile(trained_run, tmp_path) -> tuple[Path, dict]:
    """A copy of a real run beside a payload module that is importable (cwd and PYTHONPATH)."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (tmp_path / "payload.py").write_text(PAYLOAD)
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "PWNED_MARK": str(tmp_path / "PWNED"), "SECRET": "hunter2"}
    return run, env


TAMPERINGS = {
    "env.imports": {"imports": ["payload"]},
    "module:EnvId": {"id": "payload:CartPole-v1"},
}


@pytest.mark.parametrize("what", list(TAMPERINGS))
def test_no_entrypoint_imports_what_a_stored_config_names(hostile, what, tmp_path):
    run, env = hostile
    _tamper(run, **TAMPERINGS[what])
    commands = [
        ["eval", f"checkpoint={run}", "episodes=1", f"hydra.run.dir={tmp_path / 'ev'}"],
        ["train", f"resume={run}", "total_steps=800"],
    ]
    for args in commands:
        proc = run_dqn(*args, cwd=tmp_path, env=env)
        assert proc.returncode == 2, proc.stderr[-2000:]
        line = proc.stderr.strip().splitlines()[-1]
        assert "Traceback" not in proc.stderr and "payload" in line and "never imports" in line
    code = f"import dqn_cli; dqn_cli.load({str(run)!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, **env}, capture_output=True)
    assert proc.returncode != 0 and b"never imports" in proc.stderr
    assert not (tmp_path / "PWNED").exists(), "the payload ran"


def test_an_allowed_import_is_the_callers_choice(hostile, monkeypatch):
    run, env = hostile
    _tamper(run, imports=["payload"])
    with pytest.raises(ConfigError, match="never imports"):
        dqn_cli.load(run)
    monkeypatch.syspath_prepend(str(run.parent))
    monkeypatch.setenv("PWNED_MARK", env["PWNED_MARK"])
    agent = dqn_cli.load(run, imports=["payload"])
    assert agent.config.env.imports == ["payload"]


def test_a_stored_resolver_is_never_resolved(hostile, tmp_path):
    run, env = hostile
    _tamper(run, name="${oc.env:SECRET}")
    for args in (["eval", f"checkpoint={run}", f"hydra.run.dir={tmp_path / 'ev'}"], ["train", f"resume={run}"]):
        proc = run_dqn(*args, cwd=tmp_path, env=env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "hunter2" not in proc.stderr + proc.stdout and "never resolved" in proc.stderr


def test_dqn_plot_reads_configs_as_data_and_names_damaged_files(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / ".hydra" / "config.yaml").write_text("seed: !!python/object/apply:os.system ['touch PWNED']\n")
    proc = run_dqn("plot", str(run), "--out", str(tmp_path / "p.png"), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "config" in proc.stderr
    assert not (tmp_path / "PWNED").exists()
    shutil.rmtree(run)
    shutil.copytree(trained_run, run)
    lines = (run / "episodes.csv").read_text().splitlines()
    (run / "episodes.csv").write_text("\n".join([lines[0], *lines[1:][::-1]]) + "\n")  # steps backwards
    proc = run_dqn("plot", str(run), "--out", str(tmp_path / "p.png"), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "episodes.csv" in proc.stderr and "backwards" in proc.stderr
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    proc = run_dqn("plot", str(text), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_one_process_per_run_dir(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "checkpoints" / ".replay.npz.abc123.tmp").write_bytes(b"left by a kill -9")
    first = subprocess.Popen(
        [sys.executable, "-m", "dqn_cli", "train", f"resume={run}", "total_steps=400000", "progress=off"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / ".lock").is_file() or (run / ".lock").read_text().strip() != str(first.pid):
            assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()
            time.sleep(0.2)
        assert not (run / "checkpoints" / ".replay.npz.abc123.tmp").exists(), "leftovers are removed at start"
        second = run_dqn("train", f"resume={run}", "total_steps=400000")
        assert second.returncode == 2 and "Traceback" not in second.stderr
        line = second.stderr.strip().splitlines()[-1]
        assert f"PID {first.pid}" in line and "in use" in line
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130
    finally:
        if first.poll() is None:
            first.kill()
    with run_dir_lock(run):  # the kernel released the first one's lock when it ended
        assert (run / ".lock").read_text().strip() == str(os.getpid())


@pytest.mark.parametrize(
    "override, key",
    [("+foo=1", "foo"), ("optimizer.lr=inf", "optimizer.lr"), ("network.v_max=inf", "network.v_max"),
     ("total_steps=1e23", "total_steps"), ("optimizr.lr=1e-3", "optimizr"), ("optimizer.lr=[1,", "cannot read"),
     ("foo", "not an override")],
)  # fmt: skip
def test_bad_values_are_one_line(override, key, tmp_path):
    proc = run_dqn("train", override, f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert key in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "r").exists()


def test_predict_keeps_a_batch_of_one_a_batch(trained_run):
    agent = dqn_cli.load(trained_run)
    one, _ = agent.predict(np.zeros(4, dtype=np.float32))
    batch, _ = agent.predict(np.zeros((1, 4), dtype=np.float32))
    assert isinstance(one, int) and batch.shape == (1,)


def test_a_sweep_checks_every_jobs_values_before_the_first_starts(tmp_path):
    proc = run_dqn("train", "-m", "optimizer.lr=1e-3,-1", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "optimizer.lr=-1" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "sweep").exists(), "no job started"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 600 KB tmpfs (root can mount one; skipped where that is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_and_claims_no_checkpoint_that_is_not_there(tiny_disk):
    run = tiny_disk / "run"
    proc = run_dqn("train", "total_steps=3000", "eval.episodes=2", "eval.every=0", "checkpoint.every=0",
                   "progress=off", f"hydra.run.dir={run}")  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert "ENOSPC" in line and "no earlier checkpoint exists" in line and "resume=" not in line
