"""Copy the small result files of runs into a results folder that is committed.

For each run dir under SOURCE (a run dir, or a sweep dir of them), copies
summary.json, evals.csv, episodes.csv and .hydra/config.yaml (as config.yaml)
into DEST/<name>/, where <name> is the run's seed (``seed_7``) unless
``--name-by-dir`` keeps the run dir's own name. `dqn plot DEST` then rebuilds
the figures from what is committed.

    python scripts/collect_results.py multirun/2026-12-02/14-00-00_cartpole results/cartpole
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

FILES = ("summary.json", "evals.csv", "episodes.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--name-by-dir", action="store_true")
    args = parser.parse_args()
    runs = sorted(p.parent for p in args.source.rglob("summary.json") if (p.parent / "evals.csv").is_file())
    if not runs:
        raise SystemExit(f"no finished runs (summary.json and evals.csv) under {args.source}")
    for run in runs:
        name = run.name if args.name_by_dir else f"seed_{json.loads((run / 'summary.json').read_text())['seed']}"
        out = args.dest / name
        out.mkdir(parents=True, exist_ok=True)
        for f in FILES:
            shutil.copy2(run / f, out / f)
        shutil.copy2(run / ".hydra" / "config.yaml", out / "config.yaml")
        print(out)


if __name__ == "__main__":
    main()
