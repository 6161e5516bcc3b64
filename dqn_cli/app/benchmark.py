"""Scores across the games of a benchmark: human-normalised scores and their aggregates.

For runs of ``env=atari100k`` (``env.suite``), ``dqn plot`` writes beside its usual figure:

* a table per game: each configuration's final score (the last evaluation's mean return, 100
  episodes at the end of an Atari 100k run), its mean over seeds with a 95% bootstrap interval,
  beside the published DER and DrQ(eps) scores (:mod:`dqn_cli.app.atari_scores`);
* the aggregate table: the interquartile mean, median, mean and optimality gap of the
  human-normalised scores over games, each with a 95% stratified bootstrap interval, beside the
  published aggregates;
* a performance profile: the fraction of runs above each human-normalised score, with its
  95% band;
* each run: its final score (raw, human-normalised, and as a share of DrQ(eps)'s published
  score) and what it cost: its wall time, the part in gradient steps and in evaluations, its CPU.

Human-normalised score: (score - random) / (human - random), with the random and human scores of
each game as published. The aggregates and their intervals are rliable's (Agarwal et al. 2021,
"Deep Reinforcement Learning at the Edge of the Statistical Precipice"; github.com/google-research/
rliable): resampling runs within each game (stratified bootstrap), 2,000 resamples.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from dqn_cli.app import atari_scores
from dqn_cli.app.stats import mean_ci

AGGREGATES = ("iqm", "median", "mean", "optimality_gap")
REPS = 2000  # bootstrap resamples


def human_normalized(score: float, game: str) -> float:
    """(score - random) / (human - random) for one of the benchmark's games."""
    random, human = atari_scores.RANDOM[game], atari_scores.HUMAN[game]
    return (score - random) / (human - random)


def aggregate(scores: np.ndarray) -> np.ndarray:
    """IQM, median, mean and optimality gap (threshold 1) of ``scores`` (runs, games), float64 (4,).

    The median is of the games' mean scores, the IQM the mean of the middle 50% of all run x game
    scores, the optimality gap the mean of max(1 - score, 0): rliable's definitions.
    """
    from rliable import metrics

    return np.array(
        [
            metrics.aggregate_iqm(scores),
            metrics.aggregate_median(scores),
            metrics.aggregate_mean(scores),
            metrics.aggregate_optimality_gap(scores),
        ]
    )


@dataclass
class Suite:
    """One configuration's final scores on the benchmark's games."""

    label: str
    scores: dict[str, list[float]]  # game -> final raw score of each seed, by seed

    def blocks(self) -> list[Block]:
        """The score matrices rliable can take: one per number of runs ``c`` some game has, of
        every game with at least ``c`` runs, its first ``c`` seeds (the stratified bootstrap
        needs as many runs in every game); the most runs first. A suite growing game by game
        (8 games x 3 seeds, then a 9th with 1) keeps its 8 x 3 beside the 9 x 1."""
        counts = sorted({len(v) for v in self.scores.values()}, reverse=True)
        out = []
        for c in counts:
            games = sorted(g for g, v in self.scores.items() if len(v) >= c)
            matrix = np.array([[human_normalized(self.scores[g][i], g) for g in games] for i in range(c)])
            owner = self.label if len(counts) == 1 else f"{self.label} with {c} run{'s' if c > 1 else ''}"
            out.append(Block(self.label, f"{self.label}|{c}", owner, games, matrix))
        return out

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """(games, human-normalised scores (runs, games)) of the block with the most scores."""
        best = max(self.blocks(), key=lambda b: (b.scores.size, len(b.games)))
        return best.games, best.scores


@dataclass
class Block:
    """Human-normalised scores of one configuration: ``scores`` (runs, games), float64."""

    label: str  # the configuration's
    key: str  # unique among the blocks of all configurations: label|runs
    owner: str  # whose games, in the published rows: the label, with the runs when it has several blocks
    games: list[str]
    scores: np.ndarray


def finished(runs: list) -> list:
    """The runs that reached their final evaluation (the benchmark's score: summary.json holds it);
    a run still training, or stopped, has only its periodic evaluations so far."""
    return [r for r in runs if r.summary.get("final_eval_mean_return") is not None and len(r.evals)]


def seed_of(run) -> int:
    """A finished run's seed, as its summary.json records it (the plot's config leaves seeds out)."""
    return int(run.summary.get("seed", 0))


def suites(groups) -> list[Suite]:
    """The plot's groups (one per env and configuration) gathered by configuration across games:
    runs of env.suite=atari100k only, labelled by their algo and what else tells them apart."""
    by_config: dict[tuple, Suite] = {}
    for g in groups:
        config = g.runs[0].config
        if json.loads(config.get("env.suite", "null")) != "atari100k":
            continue
        key = tuple(sorted((k, v) for k, v in config.items() if k not in ("env.game", "env.id")))
        label = json.loads(config.get("algo", '"dqn"'))
        suite = by_config.setdefault(key, Suite(label, {}))
        runs = sorted(finished(g.runs), key=seed_of)
        if runs:
            suite.scores[g.env] = [float(r.evals[-1, 1]) for r in runs]
    out = list(by_config.values())
    labels = [s.label for s in out]
    for i, s in enumerate(out):  # two configurations of one algo: number them
        if labels.count(s.label) > 1:
            s.label = f"{s.label} #{labels[: i + 1].count(s.label)}"
    return out


def interval_estimates(suite_list: list[Suite], seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Block key -> (aggregates (4,), 95% intervals (2, 4)) by rliable's stratified bootstrap,
    for every block of every suite (:meth:`Suite.blocks`)."""
    from rliable import library

    np.random.seed(seed)  # (rliable draws from numpy's global generator)
    scores = {b.key: b.scores for s in suite_list for b in s.blocks()}
    points, intervals = library.get_interval_estimates(scores, aggregate, reps=REPS)
    return {key: (points[key], intervals[key]) for key in scores}


def games_markdown(suite_list: list[Suite]) -> str:
    """The per-game table: mean raw score over seeds with its 95% bootstrap CI, beside the published."""

    games = sorted({g for s in suite_list for g in s.scores})
    published = list(atari_scores.PUBLISHED)
    head = " | ".join(f"{s.label} (mean [95% CI], runs)" for s in suite_list)
    lines = [
        "Atari 100k: final score per game (100 evaluation episodes at the end of each run; raw game score)",
        "",
        f"| game | random | human | {head} | " + " | ".join(f"{p} (published)" for p in published) + " |",
        "| --- | ---: | ---: | "
        + " | ".join("---:" for _ in suite_list)
        + " | "
        + " | ".join("---:" for _ in published)
        + " |",
    ]
    for game in games:
        cells = []
        for s in suite_list:
            x = np.asarray(s.scores.get(game, []), dtype=np.float64)
            if x.size == 0:
                cells.append("")
                continue
            if x.size == 1:  # no interval from one run
                cells.append(f"{x[0]:.1f}, 1")
                continue
            lo, hi = mean_ci(x)
            cells.append(f"{x.mean():.1f} [{lo:.1f}, {hi:.1f}], {x.size}")
        refs = [atari_scores.PUBLISHED[p].get(game) for p in published]
        lines.append(
            f"| {game} | {atari_scores.RANDOM[game]:g} | {atari_scores.HUMAN[game]:g} | "
            + " | ".join(cells)
            + " | "
            + " | ".join("n/a" if r is None else f"{r:g}" for r in refs)
            + " |"
        )
    return "\n".join(lines) + "\n"


def runs_markdown(groups) -> str:
    """Each Atari 100k run: its final score, human-normalised and as a share of DrQ(eps)'s
    published score on its game, then what it cost from its summary.json: wall time, the part of it
    in gradient steps and in evaluations, and the CPU it ran on (blank where a run predates that)."""
    drq_eps = atari_scores.PUBLISHED["DrQ(eps)"]
    rows = []
    for g in groups:
        for r in finished(g.runs):
            if json.loads(r.config.get("env.suite", "null")) != "atari100k":
                continue
            s = r.summary
            algo, seed = str(s.get("algo", "dqn")), seed_of(r)
            score = float(r.evals[-1, 1])  # the final evaluation, as the per-game table's
            wall, updates = float(s.get("wall_seconds") or 0), float(s.get("update_seconds") or 0)
            cells = [
                algo,
                g.env,
                str(seed),
                f"{score:.1f}",
                f"{human_normalized(score, g.env):.3f}",
                f"{score / drq_eps[g.env]:.0%}" if g.env in drq_eps else "n/a",
                f"{wall / 60:.0f}" if wall else "",
                f"{updates / 60:.0f}" if updates else "",  # (runs before update_seconds existed)
                f"{wall / updates:.2f}x" if wall and updates else "",
                f"{float(s.get('eval_seconds') or 0):.0f}",
                f"{s['cpu']}, {s.get('torch_threads', '?')} torch thread(s)" if s.get("cpu") else "",
            ]
            rows.append((algo, g.env, seed, "| " + " | ".join(cells) + " |"))
    lines = [
        "Atari 100k: each run's final score (100 episodes at the end) and what it cost (the whole run's"
        " wall time; of it, the gradient steps and the evaluations)",
        "",
        "| algo | game | seed | score | human-normalised | of DrQ(eps) (published) | wall (min) | updates (min)"
        " | wall / updates | evaluations (s) | CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    return "\n".join(lines + [row for *_, row in sorted(rows)]) + "\n"


def published_on(games: list[str]) -> dict[str, np.ndarray]:
    """The published per-game scores' aggregates over ``games`` alone (no intervals: one number a game)."""
    out = {}
    for name, table in atari_scores.PUBLISHED.items():
        if all(table.get(g) is not None for g in games):
            out[name] = aggregate(np.array([[human_normalized(table[g], g) for g in games]]))
    return out


def aggregate_markdown(suite_list: list[Suite], estimates: dict) -> str:
    """The aggregate table: this tool's configurations over the games they ran, the published
    agents' per-game scores over the same games (all those run, and each configuration's own set
    where it is smaller), and the published 26-game aggregates."""
    names = ("IQM", "median", "mean", "optimality gap")
    lines = [
        "Atari 100k: human-normalised score over games (95% stratified bootstrap CI over runs, where every game has"
        " several; optimality gap: lower is better)",
        "",
        "| agent | games | runs per game | " + " | ".join(names) + " |",
        "| --- | ---: | ---: | " + " | ".join("---" for _ in names) + " |",
    ]
    games_run = sorted({g for s in suite_list for g in s.scores})
    blocks = [b for s in suite_list for b in s.blocks()]
    for b in blocks:
        point, ci = estimates[b.key]
        if b.scores.shape[0] == 1:  # one run a game: nothing to resample, no interval
            cells = [f"{point[i]:.3f}" for i in range(4)]
        else:
            cells = [f"{point[i]:.3f} [{ci[0, i]:.3f}, {ci[1, i]:.3f}]" for i in range(4)]
        lines.append(f"| {b.label} (this tool) | {len(b.games)} | {b.scores.shape[0]} | " + " | ".join(cells) + " |")
    # the published agents over every game run here, and over each block's own games where it
    # has fewer (DER on 2 of the 8), so each row of this tool has its like-for-like
    game_sets = [games_run] + [b.games for b in blocks]
    for i, games in enumerate(game_sets):
        if games in game_sets[:i]:
            continue
        owners = [b.owner for b in blocks if b.games == games]
        which = "same games" if i == 0 else f"the games of {' / '.join(owners)}: {', '.join(games)}"
        for name, point in published_on(games).items():
            cells = [f"{v:.3f}" for v in point]
            lines.append(
                f"| {name} (published per-game means, {which}) | {len(games)} | - | " + " | ".join(cells) + " |"
            )
    for name, table in atari_scores.PUBLISHED_AGGREGATES.items():
        cells = []
        for key in AGGREGATES:
            v = table.get(key)
            if v is None:
                cells.append("n/a")
            else:
                cells.append(f"{v[0]:.3f}" + ("" if v[1] is None else f" [{v[1]:.3f}, {v[2]:.3f}]"))
        lines.append(f"| {name} (published, all 26 games) | 26 | - | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def draw_profile(suite_list: list[Suite], out, seed: int = 0) -> None:
    """The performance profile (rliable): the fraction of runs with a human-normalised score above
    tau, for tau in [0, 2], with a 95% stratified bootstrap band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library

    np.random.seed(seed)
    taus = np.linspace(0.0, 2.0, 81)
    scores = {s.label: s.matrix()[1] for s in suite_list}  # each configuration's largest block
    profiles, cis = library.create_performance_profile(scores, taus, reps=REPS)
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for label in scores:
        runs, games = scores[label].shape
        (line,) = ax.plot(
            taus, profiles[label], label=f"{label} ({games} games, {runs} run{'s' if runs > 1 else ''} each)"
        )
        ax.fill_between(taus, cis[label][0], cis[label][1], color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("human-normalised score (tau)")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_title("Atari 100k: performance profile", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write(groups, out) -> list:
    """Write ``OUT_games.md``, ``OUT_aggregate.md``, ``OUT_runs.md`` and ``OUT_profile.png``
    beside the plot's PNG ``out`` when the groups hold Atari 100k runs; returns the paths written
    (none otherwise)."""
    suite_list = [s for s in suites(groups) if s.scores]
    if not suite_list:
        return []
    stem = out.with_suffix("")
    paths = [stem.with_name(stem.name + f"_{table}.md") for table in ("games", "aggregate", "runs")]
    paths[0].write_text(games_markdown(suite_list))
    paths[1].write_text(aggregate_markdown(suite_list, interval_estimates(suite_list)))
    paths[2].write_text(runs_markdown(groups))
    profile = stem.with_name(stem.name + "_profile.png")
    draw_profile(suite_list, profile)
    return paths + [profile]
