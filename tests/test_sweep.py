"""Sweeps: `dqn train --multirun` grids, Optuna, joblib and submitit launchers, the sweep summary.

The end-to-end tests go through the real entrypoint (`python -m dqn_cli train -m ...`)
with budgets of a few hundred env steps; every sweep writes under tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import job_dirs, read_csv, run_dqn, sweep
from omegaconf import OmegaConf


def table(sweep_dir: Path) -> list[dict]:
    return read_csv(sweep_dir / "summary.csv")


def returns(sweep_dir: Path) -> list[float]:
    return [json.loads((d / "summary.json").read_text())["final_eval_mean_return"] for d in job_dirs(sweep_dir)]


def assert_complete_job(job: Path) -> None:
    """A job dir of a sweep is a full run dir."""
    assert (job / ".hydra" / "config.yaml").is_file() and (job / ".hydra" / "overrides.yaml").is_file()
    saved = OmegaConf.load(job / ".hydra" / "config.yaml")  # the run's config as it ran: validated, resolved
    assert saved.replay.beta_steps == 300 and "${" not in OmegaConf.to_yaml(saved)
    assert (job / "checkpoints" / "last.pt").is_file()
    assert list((job / "tb").glob("events.out.tfevents.*")), f"no TensorBoard events in {job}"
    assert (job / "train.log").is_file() and "final eval return" in (job / "train.log").read_text()
    summary = json.loads((job / "summary.json").read_text())
    assert summary["total_steps"] == 300
    assert json.loads((job / ".hydra" / "job_return.json").read_text())["status"] == "completed"


def assert_summary_table(sweep_dir: Path, n_jobs: int) -> list[dict]:
    rows = table(sweep_dir)
    assert len(rows) == n_jobs
    assert [r["status"] for r in rows] == ["ok"] * n_jobs
    best = [r for r in rows if r["best"] == "*"]
    assert len(best) == 1
    assert float(best[0]["final_eval_mean_return"]) == max(float(r["final_eval_mean_return"]) for r in rows)
    md = (sweep_dir / "summary.md").read_text()
    assert sum(line.startswith("| ") for line in md.splitlines()) == n_jobs + 1  # header + one row per job
    assert md.count("**best**") == 1 and "Best job:" in md
    return rows


def assert_complete_sweep(sweep_dir: Path, proc, n_jobs: int) -> tuple[list[Path], list[dict]]:
    """The sweep succeeded: n_jobs complete job dirs and a summary table listing them."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_dirs(sweep_dir)
    assert len(jobs) == n_jobs
    for job in jobs:
        assert_complete_job(job)
    return jobs, assert_summary_table(sweep_dir, n_jobs)


# --------------------------------------------------------------- end to end
def test_grid_runs_every_combination_into_named_job_dirs_and_a_summary(tmp_path):
    sweep_dir, proc = sweep(tmp_path, "seed=1,2", "optimizer.lr=1e-4,3e-4")
    jobs, rows = assert_complete_sweep(sweep_dir, proc, 4)
    # the job dir names show the overrides (seed included) and stay plain Hydra values / shell words
    names = [j.name for j in jobs]
    assert names[0].startswith("0_") and "optimizer.lr-0.0001" in names[0] and "seed-1" in names[0]
    assert "optimizer.lr-0.0003" in names[3] and "seed-2" in names[3]
    assert not any(c in name for name in names for c in "=,: '\"")
    assert not any("checkpoint.every" in name or "torch_threads" in name for name in names)
    assert {(r["seed"], r["optimizer.lr"]) for r in rows} == {
        ("1", "0.0001"),
        ("1", "0.0003"),
        ("2", "0.0001"),
        ("2", "0.0003"),
    }
    assert [r["dir"] for r in rows] == names
    assert "| job | optimizer.lr | seed |" in proc.stdout  # the table is printed
    assert "\r" not in (jobs[0] / "train.log").read_text()  # no progress bar under multirun


def test_optuna_maximises_the_returned_eval_return(tmp_path):
    # plain hydra/sweeper=optuna (the plugin's default direction is minimize)
    sweep_dir, proc = sweep(
        tmp_path,
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=1",
        "optimizer.lr=interval(1e-5,1e-3)",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Directions: ['maximize']" in proc.stderr + proc.stdout
    results = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert len(job_dirs(sweep_dir)) == 3
    assert results.best_value == max(returns(sweep_dir))
    rows = assert_summary_table(sweep_dir, 3)
    assert len({r["optimizer.lr"] for r in rows}) == 3
    assert "optimization_results.yaml" in (sweep_dir / "summary.md").read_text()


def test_joblib_runs_jobs_in_parallel_and_warns_past_the_cores(tmp_path):
    sweep_dir, proc = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2", "env.num_envs=2")
    assert_complete_sweep(sweep_dir, proc, 2)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    warned = "parallel jobs x env.num_envs=2" in proc.stderr + proc.stdout
    assert warned == (2 * 2 > cores)


@pytest.mark.slow
def test_submitit_local_runs_each_job_in_its_own_process(tmp_path):
    sweep_dir, proc = sweep(tmp_path, "hydra/launcher=submitit_local", "seed=1,2", timeout=240)
    assert_complete_sweep(sweep_dir, proc, 2)
    assert (sweep_dir / ".submitit").is_dir()


def test_a_sweep_with_a_bad_value_is_refused_before_any_job_starts(tmp_path):
    """Every job's values are checked up front: a bad one anywhere in the sweep starts nothing."""
    sweep_dir, proc = sweep(tmp_path, "optimizer.lr=1e-4,-1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1] == "dqn train: error: optimizer.lr=-1: optimizer.lr must be > 0, got -1.0"
    )
    assert not sweep_dir.exists()


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["+search=cartpole"],
            {
                "sweeper._target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
                "sweeper.direction": "maximize",
                "sweeper.params.batch_size": "choice(32, 64, 128)",
            },
        ),
        (
            ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            {
                "launcher._target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
                "launcher.partition": "gpu",
                "launcher.gpus_per_node": 1,
                "launcher.array_parallelism": 16,
            },
        ),
        (
            [],
            {
                "callbacks.sweep_summary._target_": "dqn_cli.app.sweep.SweepSummary",
                "callbacks.sweep_setup._target_": "dqn_cli.app.sweep.SweepSetup",
            },
        ),
    ],
    ids=["search-preset", "slurm-preset", "callbacks"],
)
def test_presets_compose(tmp_path, overrides, expected):
    proc = run_dqn("train", *overrides, "--cfg", "hydra", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = OmegaConf.create(proc.stdout).hydra
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, key


# ---------------------------------------------------------------- units
def test_importing_the_callbacks_has_no_side_effects():
    code = (
        "import sys, atexit, logging, hydra.experimental.callback; from omegaconf import OmegaConf; "
        "n = atexit._ncallbacks(); import dqn_cli.app.sweep as s; "
        "heavy = [m for m in ('torch', 'optuna', 'submitit', 'joblib', 'gymnasium') if m in sys.modules]; "
        "assert not heavy, heavy; assert atexit._ncallbacks() == n; "
        "s.SweepSummary(); s.SweepSetup(); print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


def _fake_job(sweep_dir: Path, num: int, overrides: list[str], summary: dict | None, record: dict | None) -> Path:
    job = sweep_dir / f"{num}_x"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n")
    if summary is not None:
        (job / "summary.json").write_text(json.dumps(summary))
    if record is not None:
        (job / ".hydra" / "job_return.json").write_text(json.dumps(record))
    return job


def test_summary_marks_the_best_job_and_lists_failed_and_stopped_ones(tmp_path):
    from dqn_cli.app.sweep import collect_jobs, write_summary

    def result(ret):
        return {
            "final_eval_mean_return": ret,
            "final_eval_std_return": 0.0,
            "best_eval_mean_return": ret + 1,
            "total_steps": 100,
            "wall_seconds": 1.5,
            "env_steps_per_second": 66.7,
        }

    sw = tmp_path
    _fake_job(sw, 0, ["seed=1", "total_steps=100"], result(10.0), {"status": "completed", "return_value": 10.0})
    _fake_job(sw, 1, ["seed=2", "total_steps=100"], result(30.0), None)
    _fake_job(sw, 2, ["seed=3", "total_steps=100"], None, {"status": "failed", "error": "RuntimeError: env died"})
    _fake_job(sw, 3, ["seed=4", "total_steps=100"], None, {"status": "completed", "return_value": None})
    _fake_job(sw, 10, ["seed=5", "total_steps=100"], None, None)
    (sw / ".submitit" / "1234").mkdir(parents=True)  # submitit's folder is not a job

    assert [r.status for r in collect_jobs(sw, final=False)] == ["ok", "ok", "failed", "stopped", "running"]
    rows, md = write_summary(sw, final=True)
    assert [r.num for r in rows] == [0, 1, 2, 3, 10]
    assert [r.status for r in rows] == ["ok", "ok", "failed", "stopped", "failed"]
    assert [r.best for r in rows] == [False, True, False, False, False]
    csv_rows = table(sw)
    assert list(csv_rows[0])[:4] == ["job", "best", "status", "seed"]  # total_steps is common: no column
    assert [r["best"] for r in csv_rows] == ["", "*", "", "", ""]
    assert csv_rows[2]["error"] == "RuntimeError: env died"
    assert "Common overrides: `total_steps=100`" in md
    assert "| 1 | 2 | 30.00 | 31.00 | 100 | 1.5 | ok | **best** |" in md
    assert "failed: RuntimeError: env died" in md
    assert "5 jobs: 2 ok, 1 stopped, 2 failed." in md

    # a failed job resumed to the end later (`dqn train resume=JOB_DIR`) counts as ok again
    job = _fake_job(sw, 11, ["seed=6", "total_steps=100"], result(50.0), {"status": "failed", "error": "X: timeout"})
    os.utime(job / ".hydra" / "job_return.json", (1e9, 1e9))  # the sweep's record is older than summary.json
    rows = collect_jobs(sw)
    assert (rows[-1].status, rows[-1].best, rows[1].best) == ("ok", True, False)
    os.utime(job / "summary.json", (1e8, 1e8))  # but a summary older than the failure is stale
    assert collect_jobs(sw)[-1].status == "failed"


def _config(launcher: dict, n_jobs_sweep: str = "seed=1,2,3,4", num_envs: int = 4, sweeper: dict | None = None):
    return OmegaConf.create(
        {
            "env": {"num_envs": num_envs},
            "torch_threads": 0,
            "hydra": {
                "launcher": launcher,
                "sweeper": sweeper or {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"},
                "overrides": {"task": [n_jobs_sweep, "total_steps=100"], "hydra": []},
            },
        }
    )


JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def test_oversubscription_warning_counts_parallel_jobs_times_envs():
    from dqn_cli.app.sweep import oversubscription_warning, parallel_jobs

    assert parallel_jobs(_config({"_target_": JOBLIB, "n_jobs": -1}), cpus=8) == 4  # capped by the 4-job grid
    assert parallel_jobs(_config({"_target_": JOBLIB, "n_jobs": -2}, "seed=range(100)"), cpus=8) == 7
    message = oversubscription_warning(_config({"_target_": JOBLIB, "n_jobs": 2}), cpus=4)
    assert message.startswith("2 parallel jobs x env.num_envs=4 = 8 environments but only 4 CPU cores")
    assert "hydra.launcher.n_jobs" in message and "torch_threads=1" in message
    assert oversubscription_warning(_config({"_target_": JOBLIB, "n_jobs": 2}, num_envs=2), cpus=4) is None
    basic = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
    assert oversubscription_warning(_config(basic), cpus=1) is None  # one job at a time
    optuna = {
        "_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
        "n_jobs": 3,
        "n_trials": 20,
    }
    assert parallel_jobs(_config({"_target_": JOBLIB, "n_jobs": 8}, "optimizer.lr=0.1", sweeper=optuna), cpus=16) == 3


def test_optuna_is_set_to_maximise_unless_the_command_line_says_otherwise():
    from dqn_cli.app.sweep import optuna_direction_fix

    optuna = {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "direction": "minimize"}
    cfg = _config({"_target_": JOBLIB}, sweeper=dict(optuna))
    assert optuna_direction_fix(cfg) and cfg.hydra.sweeper.direction == "maximize"
    cfg = _config({"_target_": JOBLIB}, sweeper=dict(optuna))
    cfg.hydra.overrides.hydra = ["hydra.sweeper.direction=minimize"]
    assert optuna_direction_fix(cfg) is None and cfg.hydra.sweeper.direction == "minimize"
    assert optuna_direction_fix(_config({"_target_": JOBLIB})) is None  # basic sweeper: nothing to do
