"""Exit 0 when a stopped run resumes exactly from its last checkpoint, else 1 with the reason.

Exactly: ``checkpoints/last.pt`` is readable and short of the run's total_steps, holds the
envs' state (classic-control envs; Atari on the sync and async backends without sticky
actions), and ``checkpoints/replay.npz`` is from the same env step (docs/resume.md).
scripts/atari100k.sh resumes a benchmark run only then, and starts it again otherwise, so no
committed result comes from a resume that was not exact.

    python scripts/resumable.py outputs/atari100k/drq_eps_Alien_seed_3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dqn_cli.errors import CheckpointError
from dqn_cli.run.checkpoint import load_checkpoint, open_replay


def reason_not(run_dir: Path) -> str | None:
    """Why ``run_dir`` does not resume exactly, or None when it does."""
    ckpt_dir = run_dir / "checkpoints"
    try:
        state = load_checkpoint(ckpt_dir / "last.pt")
        with open_replay(ckpt_dir) as replay:
            replay_step = None if replay is None else replay[0]
    except CheckpointError as err:
        return str(err)
    steps, total = state["counters"]["env_steps"], state["config"]["total_steps"]
    if steps >= total:
        return f"it reached its total_steps ({total})"
    if not state.get("envs"):
        return "its checkpoint holds no env state (those envs start fresh episodes on resume)"
    if replay_step != steps:
        return f"its replay.npz is from env step {replay_step}, its last.pt from {steps}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    reason = reason_not(parser.parse_args().run_dir)
    if reason is not None:
        print(f"not resumable exactly: {reason}")
        sys.exit(1)


if __name__ == "__main__":
    main()
