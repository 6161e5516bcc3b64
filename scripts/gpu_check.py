"""The GPU check's steps (run by scripts/gpu_check.sh): each a command with its own timeout,
its figures merged into one JSON file as soon as the step ends, and a table at the end.

    python scripts/gpu_check.py --out DIR [--dry]

--dry runs the same steps on the CPU with tiny budgets (what this repository's CI machine can do).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def steps(dry: bool) -> list[dict]:
    """name, command (after `python`), timeout in seconds, and the run dir whose summary.json holds its figures."""
    device = "cpu" if dry else "cuda"
    scale = (lambda full, tiny: tiny) if dry else (lambda full, tiny: full)
    quiet = ["progress=log", "eval.episodes=0", "checkpoint.every=0", f"device={device}"]
    train = ["-m", "dqn_cli", "train"]
    return [
        {"name": "cuda tests", "cmd": ["-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py"], "timeout": 60},
        {
            "name": "dqn bench update",
            "cmd": ["-m", "dqn_cli", "bench", "update", "--quick", f"--device={device}"],  # eager and compile=true
            "timeout": 120,
        },
        {
            "name": "Breakout DQN",
            "run": "breakout_dqn",
            "timeout": scale(45, 90),
            "cmd": [
                *train,
                "env=breakout",
                "env.vectorization=ale",
                f"env.num_envs={scale(16, 4)}",
                f"total_steps={scale(30_000, 600)}",
                f"learning_starts={scale(5_000, 200)}",
                f"log_every={scale(5_000, 200)}",
                "replay.capacity=50000",
                *quiet,
            ],
        },
        {
            "name": "Breakout PQN",
            "run": "breakout_pqn",
            "timeout": scale(45, 90),
            "cmd": [
                *train,
                "env=breakout",
                "algo=pqn",
                f"env.num_envs={scale(128, 8)}",
                f"total_steps={scale(65_536, 512)}",
                f"log_every={scale(8_192, 256)}",
                *quiet,
            ],
        },
        {
            "name": "MinAtar DQN 200k",
            "run": "minatar_dqn",
            "timeout": scale(90, 90),
            "cmd": [
                *train,
                "env=minatar",
                "env.game=Breakout",
                f"total_steps={scale(200_000, 2_000)}",
                f"learning_starts={scale(5_000, 500)}",
                f"log_every={scale(20_000, 500)}",
                *quiet,
            ],
        },
    ]


def figures_of(step: dict, run_dir: Path | None, stdout: str) -> dict:
    """What a step measured: a run's env steps/s and updates/s, bench's JSON line, the tests' counts."""
    if run_dir is not None:
        summary = run_dir / "summary.json"
        if summary.is_file():
            s = json.loads(summary.read_text())
            return {
                "env_steps": s["total_steps"],
                "env_steps_per_second": s["env_steps_per_second"],
                "updates_per_second": round(s["updates"] / max(s["wall_seconds"], 1e-9), 1),
            }
        rates = re.findall(
            r"([\d,]+) steps/s", (run_dir / "train.log").read_text() if (run_dir / "train.log").is_file() else ""
        )
        return {"env_steps_per_second_last_log": float(rates[-1].replace(",", ""))} if rates else {}
    if step["name"] == "dqn bench update":
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    counts = dict((word, int(n)) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", stdout))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dry", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / "gpu_check.json"
    report: dict = {"dry": args.dry, "python": sys.version.split()[0], "steps": {}}
    try:
        import torch

        report["torch"] = torch.__version__
        report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        report["torch"] = None
    report["cpu_count"] = os.cpu_count()
    ok = True
    for step in steps(args.dry):
        run_dir = args.out / "runs" / step["run"] if "run" in step else None
        cmd = [sys.executable, *step["cmd"], *([f"hydra.run.dir={run_dir}"] if run_dir else [])]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=step["timeout"])
            status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
            stdout, stderr = proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as err:
            status = f"timeout after {step['timeout']} s"
            stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
        ok &= status == "ok"
        entry = {
            "status": status,
            "seconds": round(time.perf_counter() - start, 1),
            **figures_of(step, run_dir, stdout),
        }
        if status != "ok":
            entry["stderr_tail"] = stderr[-1500:]
        report["steps"][step["name"]] = entry
        report_path.write_text(json.dumps(report, indent=2) + "\n")  # as it goes: a cut-off check keeps what ran
        print(f"gpu_check: {step['name']}: {status} ({entry['seconds']} s)", flush=True)
    print(f"\n{'step':<20} {'status':<22} {'s':>6}  figures")
    for name, entry in report["steps"].items():
        figures = {k: v for k, v in entry.items() if k not in ("status", "seconds", "stderr_tail")}
        print(f"{name:<20} {entry['status']:<22} {entry['seconds']:>6}  {json.dumps(figures)}")
    print(f"\n{report_path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
