"""What a tracker costs a run: `dqn train` (the CartPole preset) with no tracker, with W&B
(offline: no network in the timing) and with MLflow (its SQLite store), alternated round by
round in one process tree so the machine's noise falls on all three alike.

    .venv/bin/python scripts/bench_trackers.py --rounds 3
    .venv/bin/python scripts/bench_trackers.py --rounds 1 total_steps=20000    # quicker

Each run's training time is its summary's ``wall_seconds`` (tracker start-up, about a second,
happens before it and is reported apart as the process time). Prints a table and, as its last
line, a JSON object with the ratios to the run without a tracker (goal: under 1.03).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dqn_cli.runtime import cpu_name

ARMS = {
    "none": [],
    "wandb": ["tracker=wandb", "tracker.wandb.mode=offline"],
    "mlflow": ["tracker=mlflow"],
}


def run(arm: str, seed: int, extra: list[str], where: Path) -> dict:
    run_dir = where / f"{arm}_{seed}"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "dqn_cli", "train", f"seed={seed}", "progress=off", *ARMS[arm], *extra,
         f"hydra.run.dir={run_dir}"],
        cwd=where, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{arm}: dqn train failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"wall": summary["wall_seconds"], "process": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="extra overrides for dqn train")
    args = parser.parse_args()
    times: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(ARMS) if r % 2 == 0 else list(reversed(ARMS))
            for arm in order:
                times[arm].append(run(arm, r + 1, args.overrides, Path(tmp)))
                print(f"round {r + 1} {arm}: {times[arm][-1]['wall']:.1f} s training", flush=True)
    base = statistics.median(t["wall"] for t in times["none"])
    result = {"cpu": cpu_name(), "rounds": args.rounds, "overrides": args.overrides}
    print(f"\n{'tracker':8} {'training s':>11} {'ratio':>7} {'process s':>10}   ({result['cpu']})")
    for arm, ts in times.items():
        wall = statistics.median(t["wall"] for t in ts)
        process = statistics.median(t["process"] for t in ts)
        result[arm] = {
            "training_seconds": round(wall, 2),
            "ratio": round(wall / base, 3),
            "process_seconds": round(process, 2),
        }
        print(f"{arm:8} {wall:11.1f} {wall / base:7.3f} {process:10.1f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
