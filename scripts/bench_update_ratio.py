"""Before/after of the Atari update's speed: the same `dqn bench update` measurements, alternated
between two source trees of dqn in one run on one machine (each in a fresh process).

    git worktree add /tmp/before <commit>
    .venv/bin/python scripts/bench_update_ratio.py /tmp/before . --threads 2 1 --rounds 2

Prints one JSON line per measurement: the tree, torch threads, the sustained matmul GFLOP/s (where
the tree's bench has it) and updates/s of the nature_cnn update (the DQN preset's double DQN,
batch 32) and, where the tree has it, drq_eps (env=atari100k algo=drq_eps's update). A tree whose
bench lacks drq_eps measures its nature_cnn update under that name: the same network, without
augmentation and with a separate target network.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

MEASURE = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(int(sys.argv[2]))
from dqn_cli.bench import main as b
try:
    from dqn_cli.runtime import keep_freed_memory
    keep_freed_memory()
except ImportError:
    pass
dev = torch.device("cpu")
out = {"tree": sys.argv[1], "threads": int(sys.argv[2])}
out["matmul_gflops"] = round(b.matmul_gflops(dev, 2.0), 1) if hasattr(b, "matmul_gflops") else None
for net in ("nature_cnn", "drq_eps"):
    out[net + "_updates_per_second"] = round(b.updates_per_second(net, dev, 6.0, 32), 2)
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for threads in args.threads:
        for _ in range(args.rounds):
            for tree in (args.before, args.after):
                subprocess.run([sys.executable, "-c", MEASURE, tree, str(threads)], check=True)


if __name__ == "__main__":
    main()
