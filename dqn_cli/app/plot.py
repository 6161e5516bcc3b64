"""``dqn plot PATH...``: learning curves over seeds, a PNG and a table.

Reads what runs write as they go (``evals.csv``, ``episodes.csv``, the config
and ``summary.json``) from run dirs, sweep dirs, or committed result folders
(any folder holding such runs, at any depth). Runs whose configs differ only
by ``seed`` (and by plumbing that does not change learning: device, cadences,
logging) are one configuration; each gets a curve of the mean over its seeds
with a 95% bootstrap confidence band, one panel per env.

``--metric eval`` (default): the evaluations' mean return against env steps.
``--metric train``: the mean return of the last 100 training episodes (the
MinAtar and CleanRL papers' curves) against env steps.

The table (Markdown and CSV beside the PNG) gives each configuration's final
score over its runs: the mean, the interquartile mean and a 95% percentile
bootstrap interval of the mean (Agarwal et al. 2021, "Deep Reinforcement
Learning at the Edge of the Statistical Precipice"; with one task the
stratified bootstrap of rliable is the plain bootstrap over runs). The final
score of a run is its final evaluation's mean return (eval) or the mean of
its last 100 training episodes (train).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dqn_cli.app.stats import bootstrap_ci, iqm, mean_ci
from dqn_cli.config import flat_items
from dqn_cli.errors import PlotError
from dqn_cli.files import UnreadableYaml, hydra_file, read_yaml_data

# config keys that do not change what is learned: runs differing only in these are one configuration
IGNORED = (
    "seed",
    "device",
    "progress",
    "log_every",
    "torch_threads",
    "resume",
    "checkpoint.",
    "eval.every",
    "eval.video",
    "eval.episodes",
    "eval.max_episode_steps",
    "eval.final_episodes",
    "env.name",
    "env.vectorization",
    "env.worker_restarts",
    "tracker.",
)
WINDOW = 100  # training episodes in the moving average of --metric train
POINTS = 60  # grid points of a --metric train curve


@dataclass
class RunRecord:
    path: Path
    env: str
    config: dict[str, str]
    evals: np.ndarray  # (K, 2): env_step, mean_return
    episodes: np.ndarray  # (M, 2): env_step, return
    summary: dict = field(default_factory=dict)


# ----------------------------------------------------------------- reading
def _read_csv(path: Path, x: str, y: str) -> np.ndarray:
    """(rows, 2) float64 of columns ``x`` and ``y``; PlotError for a file that is not such a CSV,
    or whose steps go backwards (two processes wrote it, or it was edited)."""
    if not path.is_file():
        return np.zeros((0, 2))
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or x not in reader.fieldnames or y not in reader.fieldnames:
                raise PlotError(f"{path}: not a dqn {path.name} (its header lacks {x} and {y})")
            rows = [(float(r[x]), float(r[y])) for r in reader if r.get(x) and r.get(y)]
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as err:
        if isinstance(err, PlotError):
            raise
        raise PlotError(f"{path}: damaged ({str(err).splitlines()[0][:120]}); each row is numbers under its header")
    data = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    if len(data) > 1 and (np.diff(data[:, 0]) < 0).any():
        at = int(np.flatnonzero(np.diff(data[:, 0]) < 0)[0]) + 2
        raise PlotError(f"{path}: damaged: {x} goes backwards at row {at} (two processes wrote to this run?)")
    return data


def _config(run_dir: Path) -> dict:
    for candidate in (hydra_file(run_dir, "config.yaml"), run_dir / "config.yaml"):  # a run; a results/ copy
        if candidate.is_file():
            try:
                data = read_yaml_data(candidate, strict=True) or {}
            except UnreadableYaml as err:
                raise PlotError(f"{candidate}: not a readable run config ({err})") from None
            if not isinstance(data, dict):
                raise PlotError(f"{candidate}: not a run config (a mapping of keys)")
            data.pop("hydra", None)
            return _with_defaults(data)
    return {}


def _with_defaults(config: dict) -> dict:
    """The config with the schema's defaults for the keys it lacks: a run saved before a key
    existed (network.noisy, algo) is one configuration with a newer run at that key's default.
    A config the schema does not take (other keys, other types) is kept as it is."""
    from omegaconf import OmegaConf

    from dqn_cli.config import TrainConfig

    try:
        return OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(TrainConfig), config))
    except Exception:
        return config


def _ignored(key: str) -> bool:
    return any(key == i or (i.endswith(".") and key.startswith(i)) for i in IGNORED)


def _env_label(config: dict, summary: dict) -> str:
    if summary.get("env"):  # canonical (MinAtar/SpaceInvaders, not the spelling given)
        return str(summary["env"])
    env = config.get("env", {})
    if env.get("kind") == "minatar":
        return f"MinAtar/{env.get('game')}"
    if env.get("kind") == "atari":
        return str(env.get("game"))
    return str(env.get("id") or summary.get("env") or "?")


def read_run(run_dir: Path) -> RunRecord:
    summary_path = run_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise PlotError(f"{summary_path}: not readable JSON ({str(err).splitlines()[0][:120]})") from None
    if not isinstance(summary, dict):
        raise PlotError(f"{summary_path}: not a run summary (a JSON object)")
    config = _config(run_dir)
    flat = {k: json.dumps(v) for k, v in flat_items(config).items() if not _ignored(k)}
    if flat.get("network.distributional") != json.dumps("c51"):  # the return range only C51 reads
        flat = {k: v for k, v in flat.items() if k not in ("network.v_min", "network.v_max")}
    return RunRecord(
        path=run_dir,
        env=_env_label(config, summary),
        config=flat,
        evals=_read_csv(run_dir / "evals.csv", "env_step", "mean_return"),
        episodes=_read_csv(run_dir / "episodes.csv", "env_step", "return"),
        summary=summary,
    )


def find_runs(paths: list[str]) -> list[RunRecord]:
    """Every run (a folder with evals.csv) under ``paths``. Raises PlotError for a bad path."""
    runs: list[RunRecord] = []
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise PlotError(f"{text}: no such file or directory; pass run dirs, sweep dirs or result folders")
        if path.is_file():
            path = path.parent
        found = sorted({p.parent for p in path.rglob("evals.csv")})
        if not found:
            raise PlotError(f"{text}: no runs in it (a run dir holds evals.csv, written by dqn train as it goes)")
        runs += [read_run(d) for d in found]
    return runs


def moving_average_curve(episodes: np.ndarray, grid: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Mean return of the last ``window`` training episodes ended by each grid step (nan before the first)."""
    steps, returns = episodes[:, 0], episodes[:, 1]
    csum = np.concatenate([[0.0], np.cumsum(returns)])
    ended = np.searchsorted(steps, grid, side="right")  # episodes ended by each grid step
    start = np.maximum(ended - window, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ended > 0, (csum[ended] - csum[start]) / (ended - start), np.nan)


def curve(run: RunRecord, metric: str, grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, values) of one run's curve."""
    if metric == "eval":
        return run.evals[:, 0], run.evals[:, 1]
    return grid, moving_average_curve(run.episodes, grid)


def final_score(run: RunRecord, metric: str) -> float:
    if metric == "eval":
        return float(run.evals[-1, 1]) if len(run.evals) else float("nan")
    return float(run.episodes[-WINDOW:, 1].mean()) if len(run.episodes) else float("nan")


@dataclass
class Group:
    env: str
    label: str
    runs: list[RunRecord]


def group_runs(runs: list[RunRecord]) -> list[Group]:
    """Runs of the same env whose configs agree (seed and plumbing aside) form one group."""
    by_key: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        by_key.setdefault((run.env, tuple(sorted(run.config.items()))), []).append(run)
    groups = []
    for (env, _), members in by_key.items():
        groups.append(Group(env, "", members))
    # with several algos in the plot, every line names its algo, also in a panel where only one ran
    algo_differs = len({g.runs[0].config.get("algo") for g in groups}) > 1
    for env in {g.env for g in groups}:  # label each group by the keys that tell it from its panel's others
        same_env = [g for g in groups if g.env == env]
        keys = sorted({k for g in same_env for k in g.runs[0].config})
        for g in same_env:
            # an algo names its switches: beside it, only what differs among the groups of the same algo
            algo = g.runs[0].config.get("algo")
            between = [h for h in same_env if h.runs[0].config.get("algo") == algo]
            differing = [k for k in keys if len({h.runs[0].config.get(k) for h in between}) > 1]
            parts = [f"{k}={json.loads(g.runs[0].config[k]) if k in g.runs[0].config else '-'}" for k in differing]
            if algo_differs:
                parts.insert(0, f"algo={json.loads(algo)}")
            g.label = ", ".join(parts) if parts else env
    return sorted(groups, key=lambda g: (g.env, g.label))


def group_curve(group: Group, metric: str, rng: np.random.Generator):
    """(steps, mean, lo, hi) over the group's runs: eval points every run has, or a common grid."""
    if metric == "eval":
        steps = np.array(sorted(set.intersection(*(set(run.evals[:, 0]) for run in group.runs))))
        values = np.stack([np.interp(steps, *curve(run, metric)) for run in group.runs])
    else:
        ends = [run.episodes[-1, 0] for run in group.runs if len(run.episodes)]
        end = min(ends) if ends else 0
        steps = np.linspace(end / POINTS, end, POINTS) if end else np.zeros(0)
        values = np.stack([curve(run, metric, steps)[1] for run in group.runs])
    if steps.size == 0:
        return steps, steps, steps, steps
    mean = np.nanmean(values, axis=0)
    bands = np.array(
        [bootstrap_ci(col[~np.isnan(col)], rng) if (~np.isnan(col)).any() else (np.nan, np.nan) for col in values.T]
    )
    return steps, mean, bands[:, 0], bands[:, 1]


# ----------------------------------------------------------------- output
TABLE_FIELDS = ("env", "configuration", "runs", "final_mean", "final_iqm", "ci95_low", "ci95_high", "reference")


def table_rows(groups: list[Group], metric: str, references: dict[str, float]) -> list[dict]:
    rows = []
    for g in groups:
        scores = np.array([final_score(run, metric) for run in g.runs])
        scores = scores[~np.isnan(scores)]
        lo, hi = mean_ci(scores) if scores.size else (float("nan"), float("nan"))
        rows.append(
            {
                "env": g.env,
                "configuration": g.label,
                "runs": int(scores.size),
                "final_mean": float(scores.mean()) if scores.size else float("nan"),
                "final_iqm": iqm(scores) if scores.size else float("nan"),
                "ci95_low": lo,
                "ci95_high": hi,
                "reference": references.get(g.env, ""),
            }
        )
    return rows


def scores_markdown(rows: list[dict], metric: str) -> str:
    what = "final evaluation mean return" if metric == "eval" else f"mean of the last {WINDOW} training episodes"
    lines = [
        f"Final score per configuration ({what}; mean, interquartile mean and 95% bootstrap CI over runs)",
        "",
        "| env | configuration | runs | mean | IQM | 95% CI | reference |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        ref = r["reference"] if r["reference"] != "" else ""
        lines.append(
            f"| {r['env']} | {r['configuration']} | {r['runs']} | {r['final_mean']:.2f} | {r['final_iqm']:.2f} "
            f"| [{r['ci95_low']:.2f}, {r['ci95_high']:.2f}] | {ref} |"
        )
    return "\n".join(lines) + "\n"


def draw(
    groups: list[Group],
    metric: str,
    out: Path,
    rng: np.random.Generator,
    references: dict[str, float],
    title: str | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({g.env for g in groups})
    cols = min(len(envs), 3)
    rows = (len(envs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    # one colour per configuration in every panel, also where a panel lacks one of them
    colors = {label: f"C{i % 10}" for i, label in enumerate(dict.fromkeys(g.label for g in groups))}
    for ax, env in zip(axes.flat, envs):
        for g in (g for g in groups if g.env == env):
            steps, mean, lo, hi = group_curve(g, metric, rng)
            if steps.size == 0:
                continue
            runs = f"{len(g.runs)} run{'s' if len(g.runs) > 1 else ''}"
            ax.plot(steps, mean, color=colors[g.label], label=f"{g.label} ({runs})")
            ax.fill_between(steps, lo, hi, color=colors[g.label], alpha=0.2, linewidth=0)
        if env in references:
            ax.axhline(
                references[env], color="black", linestyle="--", linewidth=1, label=f"reference {references[env]:g}"
            )
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval mean return" if metric == "eval" else f"train return ({WINDOW}-episode mean)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(envs) :]:
        ax.axis("off")
    if title:
        import textwrap

        fig.suptitle(textwrap.fill(title, width=55 * cols), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot(
    paths: list[str],
    out: Path | None = None,
    metric: str = "eval",
    references: dict[str, float] | None = None,
    title: str | None = None,
    seed: int = 0,
) -> tuple[Path, list[dict]]:
    """Write the PNG, ``.md`` and ``.csv`` table; return the PNG's path and the table rows."""
    runs = find_runs(paths)
    if metric == "eval" and not any(len(r.evals) for r in runs):
        raise PlotError("the runs have no evaluations (eval.episodes=0?); try --metric train")
    references = references or {}
    groups = group_runs(runs)
    rng = np.random.default_rng(seed)
    if out is None:
        first = Path(paths[0])
        out = (first if first.is_dir() else first.parent) / f"plot_{metric}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    draw(groups, metric, out, rng, references, title)
    rows = table_rows(groups, metric, references)
    out.with_suffix(".md").write_text(scores_markdown(rows, metric))
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    if metric == "eval":  # Atari 100k runs: human-normalised scores across games (benchmark.py)
        from dqn_cli.app import benchmark

        benchmark.write(groups, out)
    return out, rows


def _reference(text: str) -> tuple[str, float]:
    env, sep, value = text.rpartition("=")
    try:
        return env, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--reference takes ENV=VALUE, e.g. MinAtar/Breakout=9.5, got {text!r}"
        ) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"dqn plot: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def main(argv: list[str]) -> int:
    parser = _Parser(prog="dqn plot", description="Learning curves over seeds: a PNG and a table (mean, IQM, 95% CI).")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run dirs, sweep dirs or result folders")
    parser.add_argument(
        "--metric",
        choices=("eval", "train"),
        default="eval",
        help="eval: evaluation mean return (default); train: mean of the last 100 training episodes",
    )
    parser.add_argument("--out", type=Path, default=None, help="the PNG to write (default: PATH/plot_METRIC.png)")
    parser.add_argument(
        "--reference",
        type=_reference,
        action="append",
        default=[],
        metavar="ENV=VALUE",
        help="a dashed reference level on ENV's panel, e.g. MinAtar/Breakout=9.5 (repeatable)",
    )
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
        import rliable  # noqa: F401
    except ImportError:
        parser.error("dqn plot needs matplotlib and rliable: pip install 'dqn-cli[plot]'")
    try:
        out, rows = plot(args.paths, args.out, args.metric, dict(args.reference), args.title)
    except PlotError as err:
        parser.error(str(err))
    except OSError as err:  # the figure or tables cannot be written there (a read-only run dir, a full disk)
        where = err.filename or args.out
        parser.error(f"cannot write {where} ({err.strerror or err}); pass --out PATH.png somewhere writable")
    print(scores_markdown(rows, args.metric), end="")
    print(out)
    return 0
