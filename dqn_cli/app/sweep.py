"""Sweeps (``dqn train --multirun``): Hydra callbacks, and the sweep's summary table.

``configs/train.yaml`` registers both callbacks under ``hydra.callbacks``.
They work with any sweeper (basic grid, Optuna) and any launcher (basic,
joblib, submitit local or SLURM), because what they report is read from the
sweep dir on disk rather than from the launcher.

:class:`SweepSetup`, before any job starts (on the submitting machine):

- makes ``hydra/sweeper=optuna`` maximise (``dqn train`` returns the final
  eval mean return; the plugin's default direction is minimize);
- warns when a local parallel launcher would run more jobs x env.num_envs
  environments at once than the machine has cores.

:class:`SweepSummary`:

- at the end of each job (in the job's own process, wherever that runs) it
  records how the job ended in ``<job dir>/.hydra/job_return.json`` and
  refreshes the table, so a sweep that dies half-way still leaves one;
- at the end of the multirun (or at exit, when the sweep stopped early) it
  writes ``summary.csv`` and ``summary.md`` into the sweep dir, one row per
  job (its overrides, final and best eval return, env steps, wall time,
  status), marks the best job, and prints the table.

``python -m dqn_cli.app.sweep SWEEP_DIR`` rewrites the table later (after a
``dqn train resume=JOB_DIR``, or when the submitting process was killed).

Importing this module has no side effects (Hydra imports it to instantiate the
callbacks, also inside joblib/submitit workers).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from dqn_cli.files import HYDRA_DIR, atomic_write_text, hydra_file, read_yaml_data

log = logging.getLogger("dqn.sweep")

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
JOB_RETURN = "job_return.json"  # written into each job's .hydra/ dir
OPTUNA_RESULTS = "optimization_results.yaml"

# summary.json keys reported per job, in table order
RESULT_KEYS = (
    "final_eval_mean_return",
    "final_eval_std_return",
    "best_eval_mean_return",
    "total_steps",
    "wall_seconds",
    "env_steps_per_second",
)
# what the sweep optimises (train's return value) picks the best job
OBJECTIVE = "final_eval_mean_return"


# ----------------------------------------------------------------- the table
@dataclass
class JobRow:
    num: int
    dir: str  # relative to the sweep dir
    overrides: list[str]
    status: str  # ok | stopped | failed | running
    error: str = ""
    results: dict[str, Any] = field(default_factory=dict)
    best: bool = False

    @property
    def objective(self) -> float:
        value = self.results.get(OBJECTIVE)
        try:
            value = float(value)
        except (TypeError, ValueError):
            return float("nan")
        return value


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job dir under the sweep dir: a dir holding .hydra/overrides.yaml (submitit's own folder skipped)."""
    found = []
    for marker in sweep_dir.rglob("overrides.yaml"):
        if marker.parent.name != HYDRA_DIR:
            continue
        job_dir = marker.parent.parent
        if job_dir == sweep_dir or ".submitit" in job_dir.relative_to(sweep_dir).parts:
            continue
        found.append(job_dir)
    return found


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _job_num(job_dir: Path) -> int:
    hydra_cfg = read_yaml_data(hydra_file(job_dir, "hydra.yaml"))
    try:
        return int(hydra_cfg["hydra"]["job"]["num"])
    except (TypeError, KeyError, ValueError):
        head = job_dir.name.split("_", 1)[0]
        return int(head) if head.isdigit() else -1


def collect_jobs(sweep_dir: Path, final: bool = True) -> list[JobRow]:
    """One row per job dir of ``sweep_dir``, sorted by job number, the best one marked.

    final: all jobs have ended (a job without summary.json and without a
    recorded return then failed; otherwise it may still be running).
    """
    sweep_dir = Path(sweep_dir)
    rows = []
    for job_dir in _job_dirs(sweep_dir):
        overrides = read_yaml_data(hydra_file(job_dir, "overrides.yaml")) or []
        summary = _read_json(job_dir / "summary.json")
        record = _read_json(hydra_file(job_dir, JOB_RETURN)) or {}
        if summary is not None:
            if _mtime(job_dir / "summary.json") >= _mtime(hydra_file(job_dir, JOB_RETURN)):
                record = {}  # finished (possibly later, by `dqn train resume=`): the summary has the last word
            elif record.get("status") == "failed":
                summary = None  # left by an earlier life of this dir; this time the job failed
        error = str(record.get("error", ""))
        if record.get("status") == "failed":
            status = "failed"
        elif summary is not None:
            status = "ok"
        elif record.get("status") == "completed":
            status = "stopped"  # returned without a final summary: interrupted, resumable
        else:
            status = "failed" if final else "running"
            if final and not error:
                error = "no summary.json: the job stopped early (see its train.log and the sweep's output)"
        rows.append(
            JobRow(
                num=_job_num(job_dir),
                dir=job_dir.relative_to(sweep_dir).as_posix(),
                overrides=[str(o) for o in overrides],
                status=status,
                error=error,
                results={k: summary[k] for k in RESULT_KEYS if k in summary} if summary else {},
            )
        )
    rows.sort(key=lambda r: (r.num, r.dir))
    scored = [r for r in rows if r.status == "ok" and math.isfinite(r.objective)]
    if scored:
        max(scored, key=lambda r: r.objective).best = True  # first of equals wins
    return rows


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def swept_keys(rows: list[JobRow]) -> tuple[list[str], list[str]]:
    """(keys whose value differs between jobs, overrides every job shares)."""
    values: dict[str, set] = {}
    for row in rows:
        seen = dict(_split(o) for o in row.overrides)
        for key in set(values) | set(seen):
            values.setdefault(key, set()).add(seen.get(key))
    swept = sorted(k for k, v in values.items() if len(v) > 1)
    common = sorted({o for row in rows for o in row.overrides if _split(o)[0] not in swept})
    return swept, common


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def render_csv(rows: list[JobRow]) -> str:
    swept, _ = swept_keys(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["job", "best", "status", *swept, *RESULT_KEYS, "dir", "overrides", "error"])
    for row in rows:
        kv = dict(_split(o) for o in row.overrides)
        writer.writerow(
            [
                row.num,
                "*" if row.best else "",
                row.status,
                *(kv.get(k, "") for k in swept),
                *(row.results.get(k, "") for k in RESULT_KEYS),
                row.dir,
                " ".join(row.overrides),
                row.error,
            ]
        )
    return out.getvalue()


def summary_markdown(rows: list[JobRow], sweep_dir: Path, optuna: dict | None = None) -> str:
    swept, common = swept_keys(rows)
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "stopped", "failed", "running")}
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines = [f"# Sweep {sweep_dir}", "", f"{len(rows)} job{'s' if len(rows) != 1 else ''}: {tally}."]
    if common:
        lines.append("Common overrides: `" + " ".join(common) + "`.")
    lines.append("")
    keys = swept or ["overrides"]
    header = ["job", *keys, "final return", "best return", "env steps", "wall s", "status", "best"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append(
        "|"
        + "|".join(
            "---:" if h in ("job", "final return", "best return", "env steps", "wall s") else "---" for h in header
        )
        + "|"
    )
    for row in rows:
        kv = dict(_split(o) for o in row.overrides)
        cells = [kv.get(k, "") for k in swept] if swept else [" ".join(row.overrides)]
        status = row.status if not row.error else f"{row.status}: {row.error}"
        r = row.results
        lines.append(
            "| "
            + " | ".join(
                [
                    str(row.num),
                    *cells,
                    _fmt(r.get("final_eval_mean_return")),
                    _fmt(r.get("best_eval_mean_return")),
                    _fmt(r.get("total_steps")),
                    _fmt(r.get("wall_seconds"), 1),
                    status.replace("|", "/"),
                    "**best**" if row.best else "",
                ]
            )
            + " |"
        )
    lines.append("")
    best = next((r for r in rows if r.best), None)
    if best is not None:
        lines.append(f"Best job: {best.num} (`{best.dir}`), {OBJECTIVE} {_fmt(best.objective)}.")
    else:
        lines.append("Best job: none (no job finished with a finite evaluation return).")
    if optuna:
        if "best_value" in optuna:
            lines.append(
                f"Optuna ({OPTUNA_RESULTS}): best value {optuna['best_value']} with {optuna.get('best_params')}."
            )
        else:
            lines.append(f"Optuna ({OPTUNA_RESULTS}): {optuna.get('solutions')}.")
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: Path, final: bool = True) -> tuple[list[JobRow], str]:
    """Write summary.csv and summary.md into ``sweep_dir``; return the rows and the Markdown."""
    sweep_dir = Path(sweep_dir)
    rows = collect_jobs(sweep_dir, final=final)
    optuna = read_yaml_data(sweep_dir / OPTUNA_RESULTS)
    markdown = summary_markdown(rows, sweep_dir, optuna if isinstance(optuna, dict) else None)
    atomic_write_text(sweep_dir / SUMMARY_CSV, render_csv(rows))
    atomic_write_text(sweep_dir / SUMMARY_MD, markdown)
    return rows, markdown


# -------------------------------------------------------- core oversubscription
def _sweep_size(config: Any) -> int | None:
    """How many jobs the sweep has, when that is known up front (grid sweeps); None otherwise."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    target = str(sweeper.get("_target_", ""))
    if "optuna" in target.lower():
        return int(min(sweeper.get("n_jobs", 1), sweeper.get("n_trials", 1)))  # trials asked at once
    if "basic_sweeper" not in target:
        return None
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
    size = 1
    for override in overrides:
        if override.is_sweep_override():
            size *= len(list(override.sweep_string_iterator()))
    return size


def parallel_jobs(config: Any, cpus: int | None = None) -> int | None:
    """Jobs a local parallel launcher runs at once (joblib, submitit_local); None for others."""
    from dqn_cli.runtime import available_cpus  # (runtime imports torch: only when a sweep runs)

    cpus = cpus or available_cpus()
    launcher = config.hydra.launcher
    target = str(launcher.get("_target_", ""))
    if "joblib" in target:
        n = int(launcher.get("n_jobs", -1))
        n = n if n > 0 else max(cpus + 1 + n, 1)  # joblib: -1 = all cores, -2 = all but one...
    elif "submitit" in target and "LocalLauncher" in target:
        n = int(launcher.get("array_parallelism", 256) or 256)
    else:
        return None
    try:
        size = _sweep_size(config)
    except Exception:  # an odd override; the cap is only a refinement
        size = None
    return min(n, size) if size else n


def oversubscription_warning(config: Any, cpus: int | None = None) -> str | None:
    """The warning for jobs x envs > cores, or None."""
    from dqn_cli.runtime import available_cpus  # (runtime imports torch: only when a sweep runs)

    cpus = cpus or available_cpus()
    jobs = parallel_jobs(config, cpus)
    if jobs is None:
        return None
    try:
        envs = int(config.env.num_envs)
    except Exception:
        return None
    if jobs * envs <= cpus:
        return None
    joblib = "joblib" in str(config.hydra.launcher.get("_target_", ""))
    knob = "hydra.launcher.n_jobs" if joblib else "the number of jobs (hydra.launcher.array_parallelism)"
    threads = "" if config.get("torch_threads", 0) == 1 else ", and torch_threads=1 keeps each job on one core"
    return (
        f"{jobs} parallel jobs x env.num_envs={envs} = {jobs * envs} environments but only {cpus} CPU cores: "
        f"the jobs will compete for cores and each runs slower; lower {knob} or env.num_envs{threads}"
    )


# ---------------------------------------------------------- Optuna direction
def optuna_direction_fix(config: Any) -> str | None:
    """Make the Optuna sweeper maximise ``dqn train``'s return value unless told otherwise.

    hydra-optuna-sweeper minimises by default, and its config cannot be
    shadowed by a YAML file of the same name (Hydra refuses schema matching
    with a defaults list), so this runs before the sweeper is instantiated.
    An explicit ``hydra.sweeper.direction=...`` on the command line, or a
    multi-objective list, is left alone. Returns a message when it changed
    something.
    """
    from omegaconf import open_dict, read_write

    sweeper = config.hydra.sweeper
    if "optuna" not in str(sweeper.get("_target_", "")).lower():
        return None
    explicit = any(str(o).lstrip("+~").startswith("hydra.sweeper.direction=") for o in config.hydra.overrides.hydra)
    direction = sweeper.get("direction")
    if explicit or str(getattr(direction, "name", direction)) != "minimize":
        return None
    with read_write(config.hydra), open_dict(config.hydra):
        sweeper.direction = "maximize"
    return "the Optuna sweeper maximises the final eval return (hydra.sweeper.direction=maximize)"


# ----------------------------------------------------------------- callbacks
class SweepSetup(Callback):
    """Hydra callback, before any job of a multirun starts (on the submitting machine):

    - hydra/sweeper=optuna maximises the returned eval return (the plugin's
      default is minimize), unless the command line sets hydra.sweeper.direction;
    - warns when a local parallel launcher (joblib, submitit_local) would run
      more jobs x env.num_envs environments than there are CPU cores.
    """

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        try:
            fixed = optuna_direction_fix(config)
        except Exception as err:  # leave the sweeper as configured
            log.warning("could not set the Optuna direction to maximize: %s", err)
            fixed = None
        if fixed:
            log.info(fixed)
        try:
            message = oversubscription_warning(config)
        except Exception as err:  # never stop a sweep over a warning
            log.debug("core check skipped: %s", err)
            return
        if message:
            log.warning(message)
        mlflow_cfg = config.get("tracker", {}).get("mlflow", {})
        if mlflow_cfg.get("enabled"):  # the sweep's MLflow parent run, before any job starts
            from dqn_cli.run.trackers import start_sweep_parent

            try:
                start_sweep_parent(
                    str(mlflow_cfg.tracking_uri),
                    str(mlflow_cfg.experiment),
                    Path(str(config.hydra.sweep.dir)),
                    list(config.hydra.overrides.task),
                )
            except Exception as err:  # the jobs still track themselves, without a parent
                log.warning("tracker mlflow: could not make the sweep's parent run (%s)", err)


class SweepSummary(Callback):
    """Hydra callback: one summary table of a multirun's jobs in its sweep dir.

    Args:
        print_table: print the Markdown table at the end of the multirun.
    """

    def __init__(self, print_table: bool = True) -> None:
        self.print_table = print_table
        self._sweep_dir: Path | None = None
        self._done = False

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        # A sweep that stops early (a job exits on bad input, Ctrl-C, a failed
        # job re-raised by the sweeper) never reaches on_multirun_end; the
        # table of what ran is still written when the process exits.
        self._sweep_dir = Path(str(config.hydra.sweep.dir))
        self._done = False
        import atexit

        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        if self._done or self._sweep_dir is None or not self._sweep_dir.is_dir():
            return
        self._done = True
        try:
            self._finish(self._sweep_dir)
        except Exception:  # the process is exiting anyway
            pass

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        from hydra.types import RunMode

        try:
            if config.hydra.mode != RunMode.MULTIRUN:
                return
            job_dir = Path(str(config.hydra.runtime.output_dir))
            if config.hydra.output_subdir is not None:
                atomic_write_text(
                    job_dir / str(config.hydra.output_subdir) / JOB_RETURN, json.dumps(_job_record(job_return)) + "\n"
                )
            # a sweep that fails half-way never reaches on_multirun_end: keep the table current
            write_summary(Path(str(config.hydra.sweep.dir)), final=False)
        except Exception as err:  # the job's own result matters more than its row
            log.warning("sweep summary: could not record job %s: %s", getattr(config.hydra.job, "num", "?"), err)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        self._done = True
        sweep_dir = Path(str(config.hydra.sweep.dir))
        mlflow_cfg = config.get("tracker", {}).get("mlflow", {})
        if mlflow_cfg.get("enabled"):
            from dqn_cli.run.trackers import end_sweep_parent

            try:
                end_sweep_parent(str(mlflow_cfg.tracking_uri), sweep_dir)
            except Exception as err:
                log.warning("tracker mlflow: could not end the sweep's parent run (%s)", err)
        if sweep_dir.is_dir():
            self._finish(sweep_dir)

    def _finish(self, sweep_dir: Path) -> None:
        if not _job_dirs(sweep_dir):
            return  # no job started (e.g. the launcher failed): nothing to tabulate
        try:
            _, markdown = write_summary(sweep_dir, final=True)
        except Exception as err:
            print(f"dqn: could not write the sweep summary in {sweep_dir}: {err}", flush=True)
            return
        if self.print_table:
            print("\n" + markdown + f"\n(also {sweep_dir / SUMMARY_CSV} and {sweep_dir / SUMMARY_MD})", flush=True)


def _job_record(job_return: Any) -> dict:
    from hydra.core.utils import JobStatus

    if job_return.status == JobStatus.COMPLETED:
        value = job_return.return_value
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = None
        if value is not None and not math.isfinite(value):
            value = None  # strict JSON; a stopped run returns nan
        return {"status": "completed", "return_value": value}
    try:
        job_return.return_value  # a failed job's return_value raises the exception the job raised
        error = RuntimeError("failed")
    except Exception as raised:
        error = raised
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return {"status": "failed", "error": f"{type(error).__name__}: {text}" if text else type(error).__name__}


# ----------------------------------------------------------------- re-tabulate
def main(argv: list[str] | None = None) -> int:
    """``python -m dqn_cli.app.sweep SWEEP_DIR...``: rewrite (and print) the summary of finished sweeps,
    e.g. after resuming one of their jobs with ``dqn train resume=JOB_DIR``."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m dqn_cli.app.sweep SWEEP_DIR [SWEEP_DIR ...]")
        return 0 if args else 2
    for arg in args:
        sweep_dir = Path(arg)
        if not sweep_dir.is_dir() or not _job_dirs(sweep_dir):
            print(
                f"dqn_cli.app.sweep: error: {arg} is not a sweep dir (no job dirs with .hydra/ in it)", file=sys.stderr
            )
            return 2
        _, markdown = write_summary(sweep_dir, final=True)
        print(markdown + f"\n(written to {sweep_dir / SUMMARY_CSV} and {sweep_dir / SUMMARY_MD})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
