"""Sweeps on a real SLURM cluster: the single-node SLURM 22.05 of scripts/slurm_local.sh (slurmctld,
slurmd, slurmdbd with MariaDB for sacct, on this machine), driven through hydra-submitit-launcher
exactly as the README's SLURM section says. `make test-slurm` runs this module (it starts the
cluster, installing the packages as root where they are missing); the default `make test` skips it.

The preset's cpus_per_task=8 and mem_gb=32 are more than a 2-core node can grant, so every sweep
here asks for 1 CPU and 1 GB, and no GPU.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SWEEP_TINY, assert_no_repeated_or_forked_points, job_dirs, run_dqn
from test_sweep import assert_complete_job, table

pytestmark = pytest.mark.slurm

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
ON_THE_NODE = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "device=cpu",
]


@pytest.fixture(scope="module")
def cluster():
    """SLURM_CONF of the running local cluster, started here if it is not up (skipped if it cannot)."""
    env = {**os.environ, "SLURM_LOCAL_DIR": os.environ.get("SLURM_LOCAL_DIR", "/tmp/dqn-slurm")}
    started = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, env=env, timeout=900)
    if started.returncode != 0:
        lines = (started.stderr or started.stdout).strip().splitlines()
        pytest.skip(f"no local SLURM cluster: {lines[-1] if lines else 'slurm_local.sh start failed'}")
    conf = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True, env=env, check=True)
    return {"SLURM_CONF": conf.stdout.strip().split("=", 1)[1]}


def slurm_sweep(tmp_path: Path, cluster: dict, *overrides: str, timeout: float = 600):
    sweep_dir = tmp_path / "sweep"
    proc = run_dqn(
        "train",
        "-m",
        *ON_THE_NODE,
        *overrides,
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
        timeout=timeout,
        env=cluster,
    )
    return sweep_dir, proc


def squeue_empty(cluster: dict) -> bool:
    out = subprocess.run(["squeue", "-h"], capture_output=True, text=True, env={**os.environ, **cluster})
    return out.returncode == 0 and not out.stdout.strip()


def test_a_seed_sweep_runs_as_a_job_array(tmp_path, cluster):
    sweep_dir, proc = slurm_sweep(tmp_path, cluster, "seed=1,2", *SWEEP_TINY, "hydra.launcher.timeout_min=10")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == 2
    for job in jobs:
        assert_complete_job(job)
    rows = table(sweep_dir)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    # the jobs ran under SLURM: submitit's logs of array tasks, and sacct knows them as COMPLETED
    logs = list((sweep_dir / ".submitit").glob("*_*/*_log.out"))
    assert len(logs) == 2, logs
    job_ids = {p.parent.name.split("_")[0] for p in logs}
    acct = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "State", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        env={**os.environ, **cluster},
    )
    assert acct.stdout.split() == ["COMPLETED", "COMPLETED"], acct.stdout + acct.stderr


def stopped_then_resumed(tmp_path: Path, cluster: dict, job: Path) -> None:
    """A job stopped by SIGUSR2: checkpointed at its step, listed `stopped`; resume= finishes it."""
    rows = table(job.parent)
    assert [r["status"] for r in rows] == ["stopped"], rows
    stopped_at = torch.load(job / "checkpoints" / "last.pt", weights_only=False)["counters"]["env_steps"]
    assert 0 < stopped_at < 10_000_000
    log = (job / "train.log").read_text()
    assert "SIGUSR2" in log, log[-2000:]
    total = stopped_at + 1000  # at least one more log_every=500 point
    again = run_dqn("train", f"resume={job}", f"total_steps={total}", cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert torch.load(job / "checkpoints" / "last.pt", weights_only=False)["counters"]["env_steps"] == total
    steps = assert_no_repeated_or_forked_points(job / "tb")
    assert stopped_at < steps["perf/env_steps_per_second"][-1] <= total


LONG = [*SWEEP_TINY, "total_steps=10_000_000", "eval.every=0", "log_every=500"]


def test_scancel_usr2_checkpoints_and_the_job_resumes(tmp_path, cluster):
    """The deterministic path: the warning signal sent by hand while the job trains."""
    sweep_dir = tmp_path / "sweep"
    cmd = [
        str(ROOT / ".venv" / "bin" / "python"),
        "-m",
        "dqn_cli",
        "train",
        "-m",
        *ON_THE_NODE,
        *LONG,
        "hydra.launcher.timeout_min=20",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {**os.environ, **cluster, "PYTHONUNBUFFERED": "1"}
    sweeper = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # until the job is training
            logs = list(sweep_dir.glob("0*/train.log"))
            if logs and "step 1000/" in logs[0].read_text():
                break
            time.sleep(1)
        else:
            pytest.fail("the SLURM job did not start training within 3 minutes")
        queued = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, check=True)
        (job_id,) = queued.stdout.split()  # the one job: "ID" or, as an array of one, "ID_0"
        subprocess.run(["scancel", "--signal=USR2", job_id], env=env, check=True)
        out, err = sweeper.communicate(timeout=300)
    finally:
        if sweeper.poll() is None:
            sweeper.kill()
            subprocess.run(["scancel", "--user=root"], env=env)  # nothing left running on the node
    assert sweeper.returncode == 0, err[-3000:]
    stopped_then_resumed(tmp_path, cluster, job_dirs(sweep_dir)[0])


def test_the_time_limit_warning_checkpoints_and_the_job_resumes(tmp_path, cluster):
    """SLURM's own warning: --signal=USR2@60 in a 2-minute job (sent up to a minute early)."""
    sweep_dir, proc = slurm_sweep(
        tmp_path, cluster, *LONG, "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=60", timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stopped_then_resumed(tmp_path, cluster, job_dirs(sweep_dir)[0])


def test_an_optuna_search_of_two_trials_through_slurm(tmp_path, cluster):
    sweep_dir, proc = slurm_sweep(
        tmp_path,
        cluster,
        "+search=cartpole",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.seed=0",
        *SWEEP_TINY,
        "hydra.launcher.timeout_min=10",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = table(sweep_dir)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert squeue_empty(cluster)
