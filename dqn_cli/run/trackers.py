"""Experiment trackers beside TensorBoard: Weights & Biases and MLflow (``tracker=wandb``,
``tracker=mlflow``, or both: ``tracker=[wandb,mlflow]``).

Each receives the run's resolved config (flattened keys, those given on the command line first),
every scalar the run logs against env steps, the evaluations' filmed episodes (``eval.video``),
its summary at the end, and the run dir's path; it
is named after the run dir and tagged with the algo, the env and the seed; the jobs of a
``--multirun`` sweep form one W&B group and are the child runs of one MLflow parent run (both
named after the sweep dir; the parent is made by the sweep's callback, ``app/sweep.py``).

Off the hot path: the run hands its scalars over as it logs them (the same calls that feed
TensorBoard) and they are buffered here, then sent in one batch at most every 10 seconds (at a
log line or an evaluation), and at the end (:meth:`Trackers.flush`). A resumed run continues the
same tracker runs (their ids are in the checkpoint); points at or before the last one a tracker
holds are not sent again, so a resumed curve neither repeats nor forks. A tracker that fails (network, disk) is reported once
as a warning and dropped: training goes on.

Status at the end: finished (the budget done), killed (stopped by a signal: resumable) or
failed (a fault). MLflow: FINISHED, KILLED, FAILED; W&B: exit code 0, a run marked preempting
with exit code 1, exit code 1.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from dqn_cli.config import TrainConfig

log = logging.getLogger("dqn")

Point = tuple[int, str, float]  # (env step, tag, value)


class Trackers:
    """The trackers a run uses (none: every call is a no-op)."""

    FLUSH_SECONDS = 10.0  # at most one batch per tracker this often (a SQLite commit costs milliseconds)

    def __init__(self, trackers: list):
        self.trackers = trackers
        self.pending: list[Point] = []
        self.flushed = time.monotonic()

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def add(self, step: int, tag: str, value: float) -> None:
        if self.trackers:
            self.pending.append((int(step), tag, float(value)))

    def flush(self, force: bool = False) -> None:
        """Send the buffered points: now with ``force``, else when FLUSH_SECONDS have passed."""
        if not force and time.monotonic() - self.flushed < self.FLUSH_SECONDS:
            return
        points, self.pending, self.flushed = self.pending, [], time.monotonic()
        if points:
            self._each("log", sorted(points, key=lambda p: p[0]))

    def summary(self, summary: dict) -> None:
        self.flush(force=True)
        self._each("summary", summary)

    def video(self, tag: str, path: Path, step: int) -> None:
        """An evaluation's episode (a GIF file, as TensorBoard shows it) at env step ``step``."""
        self.flush(force=True)
        self._each("video", tag, path, step)

    def finish(self, status: str) -> None:
        self.flush(force=True)
        self._each("finish", status)
        self.trackers = []

    def ids(self) -> dict[str, str]:
        """{tracker name: its run id}, for the checkpoint (a resume continues the same runs)."""
        return {t.name: t.run_id for t in self.trackers}

    def _each(self, method: str, *args) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # noqa: BLE001 - a tracker never stops training
                log.warning(
                    "tracker %s failed (%s: %s); it is off for the rest of this run, training goes on",
                    tracker.name,
                    type(err).__name__,
                    str(err).strip().splitlines()[0] if str(err).strip() else "",
                )
                self.trackers.remove(tracker)


def start_trackers(
    cfg: TrainConfig,
    run_dir: Path,
    env_label: str,
    params: dict,
    overrides: list[str],
    sweep_dir: Path | None,
    ids: dict,
) -> Trackers:
    """The trackers ``cfg.tracker`` turns on, started (or resumed: ``ids`` from the checkpoint).

    params: the run's config as {dotted key: value}, the keys given on the command line first.
    overrides: the command line's overrides; sweep_dir: the sweep of a --multirun job, else None.
    A tracker that cannot start is a warning, not an error: the run goes on without it."""
    trackers = []
    wanted = [("wandb", cfg.tracker.wandb.enabled, WandbTracker), ("mlflow", cfg.tracker.mlflow.enabled, MlflowTracker)]
    for name, enabled, kind in wanted:
        if not enabled:
            continue
        try:
            trackers.append(kind(cfg, run_dir, env_label, params, overrides, sweep_dir, ids.get(name)))
        except Exception as err:  # noqa: BLE001 - no network, a bad URI: the run goes on
            log.warning(
                "tracker %s could not start (%s: %s); the run goes on without it",
                name,
                type(err).__name__,
                str(err).strip().splitlines()[0] if str(err).strip() else "",
            )
    return Trackers(trackers)


def _tags(cfg: TrainConfig, env_label: str) -> dict[str, str]:
    return {"algo": cfg.algo, "env": env_label, "seed": str(cfg.seed)}


class WandbTracker:
    """A W&B run (``wandb.init``): its step is the env step, so W&B itself refuses a point at or
    before the last one it holds (a resumed run's orphans are never sent twice)."""

    name = "wandb"

    def __init__(self, cfg: TrainConfig, run_dir: Path, env_label: str, params, overrides, sweep_dir, run_id):
        import wandb

        w = cfg.tracker.wandb
        tags = _tags(cfg, env_label)
        self.run = wandb.init(
            project=w.project,
            entity=w.entity,
            mode=w.mode,
            dir=str(run_dir),
            id=run_id,  # None: a new run (W&B picks its id)
            resume="allow",
            name=run_dir.name,
            group=sweep_dir.name if sweep_dir is not None else None,
            tags=[tags["algo"], tags["env"], f"seed={tags['seed']}", *w.tags],
            config={**params, "run_dir": str(run_dir), "overrides": list(overrides)},
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        self.run_id = self.run.id

    def log(self, points: list[Point]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for step, tag, value in points:
            by_step.setdefault(step, {})[tag] = value
        for step, values in by_step.items():
            self.run.log(values, step=step)

    def summary(self, summary: dict) -> None:
        self.run.summary.update({k: v for k, v in summary.items() if v is not None})

    def video(self, tag: str, path: Path, step: int) -> None:
        import wandb

        self.run.log({tag: wandb.Video(str(path), format="gif")}, step=step)

    def finish(self, status: str) -> None:
        if status == "killed":
            self.run.mark_preempting()  # W&B's state for a run that will be resumed
        self.run.finish(exit_code=0 if status == "finished" else 1)


PARENT_FILE = ".mlflow_parent_run"  # in a sweep dir: the id of the sweep's MLflow parent run


def _experiment_id(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it first
        return client.get_experiment_by_name(name).experiment_id


def start_sweep_parent(tracking_uri: str, experiment: str, sweep_dir: Path, overrides: list[str]) -> str:
    """Before a --multirun's first job: the MLflow parent run of the sweep (named after its dir);
    its id goes into SWEEP_DIR/.mlflow_parent_run, where each job finds it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    tags = {"sweep_dir": str(sweep_dir), "overrides": " ".join(overrides)}
    run_id = client.create_run(_experiment_id(client, experiment), run_name=sweep_dir.name, tags=tags).info.run_id
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / PARENT_FILE).write_text(run_id + "\n")
    return run_id


def end_sweep_parent(tracking_uri: str, sweep_dir: Path) -> None:
    """After a --multirun's last job: its parent run marked finished."""
    from mlflow.tracking import MlflowClient

    if (sweep_dir / PARENT_FILE).is_file():
        MlflowClient(tracking_uri=tracking_uri).set_terminated((sweep_dir / PARENT_FILE).read_text().strip())


class MlflowTracker:
    """An MLflow run through ``MlflowClient`` (no global active run: the jobs a sweep runs in one
    process stay apart). A resumed run skips points up to the last step the run already holds."""

    name = "mlflow"
    BATCH = 1000  # metrics per log_batch call (MLflow's limit)

    def __init__(self, cfg: TrainConfig, run_dir: Path, env_label: str, params, overrides, sweep_dir, run_id):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        m = cfg.tracker.mlflow
        self.client = MlflowClient(tracking_uri=m.tracking_uri)
        self.last_step = -1
        if run_id is not None:
            self.client.get_run(run_id)  # (raises if it is gone: a warning, and the run goes on without)
            self.client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            held = self.client.get_run(run_id).data.metrics  # (latest values only: each key's history for its steps)
            self.last_step = max(
                (p.step for key in held for p in self.client.get_metric_history(run_id, key)), default=-1
            )
            return
        experiment_id = _experiment_id(self.client, m.experiment)
        tags = {**_tags(cfg, env_label), "run_dir": str(run_dir), "overrides": " ".join(overrides)}
        parent = sweep_dir / PARENT_FILE if sweep_dir is not None else None
        if parent is not None and parent.is_file():  # a job of a sweep: a child of the sweep's run
            tags["mlflow.parentRunId"] = parent.read_text().strip()
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id
        values = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(values), 100):  # (MLflow takes 100 parameters per call)
            self.client.log_batch(self.run_id, params=values[i : i + 100])

    def log(self, points: list[Point]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(tag, value, now, step)
            for step, tag, value in points
            if step > self.last_step and math.isfinite(value)
        ]
        for i in range(0, len(metrics), self.BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + self.BATCH])

    def summary(self, summary: dict) -> None:
        from mlflow.entities import Metric, RunTag

        now, step = int(time.time() * 1000), int(summary.get("total_steps") or 0)
        numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics = [Metric(f"summary/{k}", float(v), now, step) for k, v in numbers.items() if math.isfinite(v)]
        tags = [RunTag(f"summary/{k}", str(v)) for k, v in summary.items() if k not in numbers]
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)

    def video(self, tag: str, path: Path, step: int) -> None:
        if step > self.last_step:
            self.client.log_artifact(self.run_id, str(path), artifact_path="videos")

    def finish(self, status: str) -> None:
        self.client.set_terminated(
            self.run_id, status={"finished": "FINISHED", "killed": "KILLED"}.get(status, "FAILED")
        )
