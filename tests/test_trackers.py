"""Experiment trackers through the real `dqn` entrypoint and the real libraries (no mocks): W&B in
offline mode (its run file read back record by record) and MLflow on a SQLite store (read back
through its client), against the run's own summary.json and evals.csv; resume continues the same
tracker run; a stop by signal, a finished run and a tracker that cannot start."""

from __future__ import annotations

import csv
import json
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, TINY, compose, run_dqn, tb_steps

pytest.importorskip("wandb", reason="the wandb extra is not installed")
pytest.importorskip("mlflow", reason="the mlflow extra is not installed")

WANDB = ["tracker=wandb", "tracker.wandb.mode=offline", "tracker.wandb.tags=[ci]"]


def mlflow_args(tmp_path: Path) -> list[str]:
    return ["tracker=mlflow", f"tracker.mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]


def wandb_records(path: Path) -> list:
    """The protobuf Records of a W&B run file (run-ID.wandb): a 7-byte header (":W&B", a magic,
    a version), then LevelDB's log format: 32 KiB blocks of chunks, each a crc32, a length and a
    type (1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    pos, out, pending = 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too short for a chunk header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
        elif kind == 0 and length == 0:
            pending = b""
    return out


def wandb_run(run_dir: Path) -> dict:
    """What the offline W&B runs under ``run_dir`` hold: ids, config, history rows, summary."""
    ids, config, history, summary = set(), {}, [], {}
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
                config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
                tags, group = list(record.run.tags), record.run.run_group
            elif kind == "config":
                config.update({u.key: json.loads(u.value_json) for u in record.config.update})
            elif kind == "history":
                history.append(
                    {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
                )
            elif kind == "summary":
                summary.update(
                    {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in record.summary.update}
                )
    return {"ids": ids, "config": config, "history": history, "summary": summary, "tags": tags, "group": group}


def evals(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "evals.csv") as f:
        return {int(r["env_step"]): float(r["mean_return"]) for r in csv.DictReader(f)}


def test_wandb_offline_holds_the_config_curves_and_summary_and_a_resume_continues_the_run(tmp_path):
    run = tmp_path / "run"
    first = run_dqn("train", *TINY, *WANDB, "optimizer.lr=2e-3", "eval.video=true", f"hydra.run.dir={run}", timeout=180)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_dqn("train", f"resume={run}", "total_steps=800", timeout=180)
    assert again.returncode == 0, again.stderr[-3000:]

    w = wandb_run(run)
    assert len(w["ids"]) == 1, w["ids"]  # the resume continued the same W&B run
    keys = [k for k in w["config"] if not k.startswith("_")]
    assert w["config"]["optimizer.lr"] == 2e-3 and keys[0] == "total_steps"  # the given keys first
    assert w["config"]["run_dir"] == str(run) and "optimizer.lr=2e-3" in w["config"]["overrides"]
    assert {"dqn", "CartPole-v1", "seed=1", "ci"} <= set(w["tags"])
    steps = [row["_step"] for row in w["history"]]
    assert steps == sorted(set(steps)) and steps[-1] == 800  # no repeated or forked points
    logged = {row["_step"]: row["eval/mean_return"] for row in w["history"] if "eval/mean_return" in row}
    assert logged == pytest.approx(evals(run))  # every evaluation, at its env step
    assert any("charts/episodic_return" in row for row in w["history"])
    summary = json.loads((run / "summary.json").read_text())
    assert w["summary"]["final_eval_mean_return"] == pytest.approx(summary["final_eval_mean_return"])
    assert w["summary"]["total_steps"] == 800
    videos = [row for row in w["history"] if row.get("eval/video/_type") == "video-file"]  # every evaluation's
    assert [row["_step"] for row in videos] == [200, 400, 600, 800]  # episode, as TensorBoard's GIF
    assert sorted(p.name for p in (run / "videos").glob("*.gif"))[-1] == "eval_000000800.gif"


def test_mlflow_holds_params_curves_and_summary_marks_the_end_and_a_resume_continues_the_run(tmp_path):
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    args = [*TINY, *mlflow_args(tmp_path), "total_steps=100000", "torch_threads=1", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dqn_cli", "train", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while (
        "checkpoints/step_000000400.pt" not in (run / "train.log").read_text() if (run / "train.log").exists() else True
    ):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # stopped: resumable, so MLflow marks it KILLED
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "dqn"]
    (stopped,) = client.search_runs([experiment.experiment_id])
    assert stopped.info.status == "KILLED" and stopped.info.run_name == "run"
    assert stopped.data.params["optimizer.lr"] == "0.001" and stopped.data.tags["env"] == "CartPole-v1"

    again = run_dqn("train", f"resume={run}", "total_steps=1400", timeout=180)
    assert again.returncode == 0, again.stderr[-3000:]
    (finished,) = client.search_runs([experiment.experiment_id])  # the same run, continued
    assert finished.info.run_id == stopped.info.run_id and finished.info.status == "FINISHED"
    history = client.get_metric_history(finished.info.run_id, "charts/epsilon")
    steps = sorted(p.step for p in history)
    assert steps == tb_steps(run / "tb")["charts/epsilon"]  # as TensorBoard's: no repeated or forked points
    curve = {p.step: p.value for p in client.get_metric_history(finished.info.run_id, "eval/mean_return")}
    assert curve == pytest.approx(evals(run))
    summary = json.loads((run / "summary.json").read_text())
    assert finished.data.metrics["summary/final_eval_mean_return"] == pytest.approx(summary["final_eval_mean_return"])


def test_a_sweep_is_an_mlflow_parent_run_of_its_jobs_and_one_wandb_group(tmp_path):
    from mlflow.tracking import MlflowClient

    sweep = tmp_path / "sweep"
    proc = run_dqn(
        "train", "-m", "seed=1,2", *TINY, *WANDB, "tracker=[wandb,mlflow]",
        f"tracker.mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dqn")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == sweep.name]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and parent.info.status == "FINISHED"
    assert sorted(r.data.tags["seed"] for r in children) == ["1", "2"]
    assert all(r.info.status == "FINISHED" and "eval/mean_return" in r.data.metrics for r in children)
    groups = {wandb_run(job)["group"] for job in sweep.iterdir() if (job / "wandb").is_dir()}
    assert groups == {sweep.name}


def test_a_tracker_that_cannot_start_is_one_warning_and_the_run_goes_on(tmp_path):
    run = tmp_path / "run"
    proc = run_dqn(
        "train", *TINY, "tracker=mlflow", "tracker.mlflow.tracking_uri=http://127.0.0.1:9", f"hydra.run.dir={run}",
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "2"}, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [ln for ln in (run / "train.log").read_text().splitlines() if "tracker mlflow" in ln]
    assert len(warnings) == 1 and "could not start" in warnings[0] and "the run goes on" in warnings[0]
    assert json.loads((run / "summary.json").read_text())["total_steps"] == 400


def test_a_tracker_that_fails_mid_run_is_dropped_after_one_warning(caplog):
    from dqn_cli.run.trackers import Trackers

    class Failing:
        name, run_id, calls = "broken", "x", 0

        def log(self, points):
            self.calls += 1
            raise OSError(28, "No space left on device")

    class Recording:
        name, run_id = "fine", "y"

        def __init__(self):
            self.points = []

        def log(self, points):
            self.points += points

    failing, recording = Failing(), Recording()
    trackers = Trackers([failing, recording])
    for step in (1, 2, 3):
        trackers.add(step, "charts/epsilon", 1.0 / step)
        trackers.flush(force=True)
    assert failing.calls == 1 and [p[0] for p in recording.points] == [1, 2, 3]
    assert sum("tracker broken failed" in r.getMessage() for r in caplog.records) == 1


def test_choosing_a_tracker_that_is_not_installed_is_refused_before_anything_starts(monkeypatch):
    import importlib.util

    from dqn_cli.config import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tracker=wandb needs the wandb package: pip install 'dqn-cli\[wandb\]'"):
        compose("tracker=wandb")
    compose("tracker=mlflow")  # the other one is installed
