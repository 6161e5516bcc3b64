"""CartPole-v1: the default `dqn train` against Stable-Baselines3's DQN, side by side.

SB3 runs with rl-baselines3-zoo's tuned CartPole-v1 hyperparameters (50k
steps); dqn runs its defaults. Both on the same seeds, one after the other in
this process tree, and both judged the same way: the mean return of a final
greedy evaluation over 20 episodes, solved at >= 475.

Both are timed the same two ways: the whole process, from its start to its exit
(imports, training and every evaluation: dqn's five of 20 episodes, SB3's final
one), and training alone (dqn's summary ``wall_seconds``, which still includes
its periodic evaluations; SB3's ``model.learn``). Both use one torch thread.

    .venv/bin/pip install stable-baselines3     # benchmark-only dependency
    .venv/bin/python scripts/bench_cartpole.py --seeds 1 2 3 4 5

Prints a table and, as its last line, a JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOLVED = 475.0

# rl-baselines3-zoo hyperparams/dqn.yml, CartPole-v1
ZOO = dict(
    learning_rate=2.3e-3,
    batch_size=64,
    buffer_size=100_000,
    learning_starts=1000,
    gamma=0.99,
    target_update_interval=10,
    train_freq=256,
    gradient_steps=128,
    exploration_fraction=0.16,
    exploration_final_eps=0.04,
    policy_kwargs=dict(net_arch=[256, 256]),
)


def sb3_child(seed: int, steps: int) -> None:
    """Train and evaluate SB3's DQN in this process; print the result as JSON."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)
    start = time.perf_counter()
    model = DQN("MlpPolicy", gym.make("CartPole-v1"), seed=seed, verbose=0, device="cpu", **ZOO)
    model.learn(total_timesteps=steps)
    train = time.perf_counter() - start
    mean, std = evaluate_policy(model, gym.make("CartPole-v1"), n_eval_episodes=20, deterministic=True)
    print(json.dumps({"train_seconds": train, "final_eval_mean_return": float(mean)}))


def run_sb3(seed: int, steps: int) -> dict:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--sb3-child", str(seed), str(steps)], capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return {"seed": seed, "wall_seconds": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def run_dqn(seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "dqn_cli", "train", f"seed={seed}", "progress=off", f"hydra.run.dir={tmp}", *extra],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        summary = json.loads((Path(tmp) / "summary.json").read_text())
    return {
        "seed": seed,
        "wall_seconds": wall,
        "train_seconds": summary["wall_seconds"],
        "final_eval_mean_return": summary["final_eval_mean_return"],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--sb3-child":
        sb3_child(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--sb3-steps", type=int, default=50_000)
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("dqn_overrides", nargs="*", help="extra overrides for dqn train")
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        ours = run_dqn(seed, args.dqn_overrides)
        theirs = None if args.skip_sb3 else run_sb3(seed, args.sb3_steps)
        rows.append((seed, ours, theirs))
        print(
            f"seed {seed}: dqn {ours['final_eval_mean_return']:.1f} in {ours['wall_seconds']:.1f}s"
            f" (training {ours['train_seconds']:.1f}s)"
            + (
                ""
                if theirs is None
                else f" | sb3 {theirs['final_eval_mean_return']:.1f} in {theirs['wall_seconds']:.1f}s"
                f" (training {theirs['train_seconds']:.1f}s)"
            ),
            flush=True,
        )
    print()
    print(f"{'seed':>4} | {'dqn return':>10} | {'dqn s':>6} | {'sb3 return':>10} | {'sb3 s':>6}")
    for seed, ours, theirs in rows:
        t = theirs or {"final_eval_mean_return": float("nan"), "wall_seconds": float("nan")}
        print(
            f"{seed:>4} | {ours['final_eval_mean_return']:>10.1f} | {ours['wall_seconds']:>6.1f} | "
            f"{t['final_eval_mean_return']:>10.1f} | {t['wall_seconds']:>6.1f}"
        )
    result = {
        "seeds": args.seeds,
        "dqn_solved": sum(o["final_eval_mean_return"] >= SOLVED for _, o, _ in rows),
        "dqn_mean_wall_seconds": sum(o["wall_seconds"] for _, o, _ in rows) / len(rows),
    }
    if not args.skip_sb3:
        result["sb3_solved"] = sum(t["final_eval_mean_return"] >= SOLVED for _, _, t in rows)
        result["sb3_mean_wall_seconds"] = sum(t["wall_seconds"] for _, _, t in rows) / len(rows)
        result["wall_time_ratio_dqn_over_sb3"] = result["dqn_mean_wall_seconds"] / result["sb3_mean_wall_seconds"]
        result["dqn_mean_train_seconds"] = sum(o["train_seconds"] for _, o, _ in rows) / len(rows)
        result["sb3_mean_train_seconds"] = sum(t["train_seconds"] for _, _, t in rows) / len(rows)
        result["train_time_ratio_dqn_over_sb3"] = result["dqn_mean_train_seconds"] / result["sb3_mean_train_seconds"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
