"""dqn against CleanRL, side by side on this machine: CartPole-v1 time to solve, Breakout env steps/s.

Runs CleanRL's own scripts from a checkout outside this repository (none of its code is copied
here) and `dqn train` on the same seeds, one process after the other, and judges both with the
same greedy evaluation: dqn's own (:func:`dqn_cli.run.evaluate.evaluate`, 20 fresh episodes,
the start states a `dqn train seed=S` run evaluates on), run every 10k env steps inside the timed
process on both sides.

    .venv/bin/pip install stable-baselines3 tyro            # what CleanRL's scripts import
    .venv/bin/python scripts/bench_cleanrl.py --cleanrl ../cleanrl --seeds 1 2 3 4 5
    .venv/bin/python scripts/bench_cleanrl.py --cleanrl ../cleanrl --what breakout

Arms (each its own process, timed from its start, imports included):

* CartPole DQN: `dqn train` (its defaults) against CleanRL's `dqn.py` given dqn's settings where
  its command line has them: 50k env steps, one update of batch 384 every 6 env steps from step
  1,000, Adam 1e-3, Polyak tau 0.02 every 8 steps, epsilon 1 -> 0.05 over 10k steps (CleanRL does
  not anneal the rate; its network is its 120-84 MLP, no dueling, with the 1-step DQN target and
  MSE, where dqn runs a 128-128 dueling LayerNorm MLP with double Q, 3-step returns and Huber loss).
* The same, with dqn given CleanRL's agent (``DQN_AS_CLEANRL``: its network, target, loss and
  optimizer): the same work on both sides, so the two tools' speeds compare directly.
* CartPole PQN: `dqn train algo=pqn` against CleanRL's `pqn.py` with dqn's PQN settings: 200k
  env steps, 16 envs x 32 steps, 4 epochs of 4 minibatches, RAdam 2.5e-4 annealed to 0, epsilon
  1 -> 0.05 over 100k (CleanRL's network: 120-84 with LayerNorm; dqn's: 128-128 with LayerNorm;
  CleanRL has no reward scale, dqn's preset scales rewards by 0.1: the same work, other learning).
* Breakout: end-to-end env steps/s with learning on (one update of batch 32 every 4 steps from
  step ``--breakout-learning-starts``) of CleanRL's `dqn_atari.py` against `dqn train
  env=breakout` on each backend.

Both sides use one torch thread (dqn's CartPole preset does; CleanRL is given the same). The
speed columns (env steps/s, updates/s) leave out the evaluations' seconds, measured on both sides
(dqn's ``eval_seconds`` in summary.json; the hook's own timing for CleanRL): an evaluation of a
policy that balances the pole plays 20 x 500 steps, one that drops it a few hundred (20 envs at
once: 1-2 s of a run here, so the two columns differ little).

The adaptations CleanRL's scripts need on today's Gymnasium (1.x), applied at run time in the
CleanRL process by :func:`_adapt_cleanrl`, and nothing else:

1. ``gym.vector.SyncVectorEnv`` autoresets SAME_STEP, as the Gymnasium 0.29 its scripts were
   written for did (1.x defaults to NEXT_STEP), and its infos are given in 0.29's form:
   ``final_observation`` and a list of per-env ``final_info`` dicts.
2. ``import ale_py`` and ``gym.register_envs(ale_py)``, so ``BreakoutNoFrameskip-v4`` exists, and
   0.29's wrapper names for 1.x's ``GrayscaleObservation`` and ``FrameStackObservation``.
3. ``torch.set_num_threads(1)``; and ``SummaryWriter.add_scalar`` runs the greedy evaluation
   when the global step it is given passes the next multiple of 10k (it reads ``q_network``
   from the script's globals).

Prints a table and, as its last line, a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLVED = 475.0
EVAL_EVERY = 10_000
EVAL_EPISODES = 20

# dqn's CartPole preset (configs/env/cartpole.yaml) in CleanRL dqn.py's arguments
CLEANRL_DQN = [
    "--total-timesteps", "50000", "--learning-rate", "1e-3", "--buffer-size", "100000",
    "--batch-size", "384", "--learning-starts", "1000", "--train-frequency", "6",
    "--target-network-frequency", "8", "--tau", "0.02", "--exploration-fraction", "0.2",
    "--end-e", "0.05", "--gamma", "0.998",
]  # fmt: skip
# CleanRL dqn.py's agent in dqn's terms (its 120-84 MLP, the 1-step DQN target, MSE, Adam at a constant
# 1e-3 with eps 1e-8, no gradient clipping, no LayerNorm) at the settings above: the tools compared doing
# the same work
DQN_AS_CLEANRL = [
    "network.hidden_sizes=[120,84]", "network.norm=none", "network.dueling=false", "double_q=false", "replay.n_step=1", "loss=mse",
    "optimizer.lr_end=null", "optimizer.eps=1e-8", "optimizer.max_grad_norm=null", "tau=0.02",
    "target_update_period=8", "schedule.epsilon_decay_steps=10000",
]  # fmt: skip
# dqn's PQN CartPole preset (configs/algo_env/pqn_classic.yaml) in CleanRL pqn.py's arguments
CLEANRL_PQN = [
    "--total-timesteps", "200000", "--learning-rate", "2.5e-4", "--num-envs", "16", "--num-steps", "32",
    "--update-epochs", "4", "--num-minibatches", "4", "--exploration-fraction", "0.5", "--end-e", "0.05",
]  # fmt: skip


# ------------------------------------------------------------ the CleanRL side
def _greedy_eval(q_network, seed: int, evaluation: int) -> float:
    """dqn's greedy evaluation of a CleanRL CartPole Q-network: mean return of 20 episodes."""
    import torch

    from dqn_cli.config import EnvConfig
    from dqn_cli.envs.vector import describe_env
    from dqn_cli.run.evaluate import eval_seeds, evaluate, make_eval_env

    class Flat(torch.nn.Module):  # dqn feeds (E, frame_stack=1, 4); CleanRL's networks take (E, 4)
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, obs):
            return self.net(obs.flatten(1))

    cfg = EnvConfig()
    env_seeds, policy_seed = eval_seeds(seed, EVAL_EPISODES, evaluation)
    envs = make_eval_env(cfg, EVAL_EPISODES, policy_seed)
    try:
        result = evaluate(
            Flat(q_network), envs, describe_env(cfg), EVAL_EPISODES, env_seeds, policy_seed, 0.0, torch.device("cpu")
        )
    finally:
        envs.close()
    return float(sum(result.returns) / len(result.returns))


def _adapt_cleanrl(seed: int, evals: list, evaluate_cartpole: bool) -> None:
    """The run-time adaptations listed in the module docstring."""
    import gymnasium as gym
    import numpy as np
    import torch
    import torch.utils.tensorboard as tb
    from gymnasium.vector import AutoresetMode

    import dqn_cli.run.evaluate  # noqa: F401  (binds Gymnasium's own SyncVectorEnv before the patch below)

    torch.set_num_threads(1)

    class SyncVectorEnv029(gym.vector.SyncVectorEnv):
        def __init__(self, env_fns, **kwargs):
            super().__init__(env_fns, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)

        def step(self, actions):
            obs, rewards, terminated, truncated, infos = super().step(actions)
            ended = np.logical_or(terminated, truncated)
            if ended.any():
                final = infos.pop("final_info", {})
                infos["final_observation"] = infos.pop("final_obs")
                listed = []
                for i in range(self.num_envs):
                    if not ended[i]:
                        listed.append(None)
                        continue
                    one = {k: v[i] for k, v in final.items() if not k.startswith("_") and not isinstance(v, dict)}
                    if "episode" in final:
                        one["episode"] = {k: np.asarray([v[i]]) for k, v in final["episode"].items() if k[0] != "_"}
                    listed.append(one)
                infos["final_info"] = listed
            return obs, rewards, terminated, truncated, infos

    gym.vector.SyncVectorEnv = SyncVectorEnv029
    # 0.29's wrapper names (dqn_atari.py): 1.x renamed GrayScaleObservation and FrameStack
    gym.wrappers.GrayScaleObservation = gym.wrappers.GrayscaleObservation
    gym.wrappers.FrameStack = gym.wrappers.FrameStackObservation
    try:
        import ale_py

        gym.register_envs(ale_py)
    except ImportError:
        pass

    if not evaluate_cartpole:
        return
    add_scalar = tb.SummaryWriter.add_scalar

    def add_scalar_and_evaluate(self, tag, value, global_step=None, *args, **kwargs):
        if global_step is not None and global_step >= EVAL_EVERY * (len(evals) + 1):
            q_network = sys._getframe(1).f_globals["q_network"]
            started = time.time()
            mean = _greedy_eval(q_network, seed, len(evals))
            evals.append({"env_step": EVAL_EVERY * (len(evals) + 1), "mean_return": mean, "time": time.time()})
            evals[-1]["eval_seconds"] = evals[-1]["time"] - started
        return add_scalar(self, tag, value, global_step, *args, **kwargs)

    tb.SummaryWriter.add_scalar = add_scalar_and_evaluate


def cleanrl_child(script: str, out: str, seed: int, evaluate_cartpole: bool, args: list[str]) -> None:
    """Run one CleanRL script in this process (``runpy``), with the adaptations; write its evaluations."""
    import runpy

    sys.path[:0] = [str(ROOT), str(Path(script).resolve().parents[1])]  # dqn_cli; the checkout's cleanrl_utils
    evals: list = []
    _adapt_cleanrl(seed, evals, evaluate_cartpole)
    sys.argv = [script, "--seed", str(seed), "--no-cuda", *args]
    start = time.time()
    namespace = runpy.run_path(script, run_name="__main__")
    trained = time.time()
    result = {"train_seconds": trained - start, "evals": evals}
    if evaluate_cartpole:
        final = _greedy_eval(namespace["q_network"], seed, len(evals))
        result["final_eval_mean_return"] = final
        if not evals or evals[-1]["env_step"] < namespace["args"].total_timesteps:
            evals.append({"env_step": namespace["args"].total_timesteps, "mean_return": final, "time": time.time()})
        # as dqn's summary.json: the seconds spent evaluating, periodic and final
        result["eval_seconds"] = sum(e.get("eval_seconds", 0.0) for e in evals) + time.time() - trained
    result["end"] = time.time()
    Path(out).write_text(json.dumps(result))


def run_cleanrl(checkout: Path, name: str, seed: int, args: list[str], evaluate_cartpole: bool = True) -> dict:
    script = checkout / "cleanrl" / f"{name}.py"
    if not script.is_file():
        raise SystemExit(
            f"error: {script} does not exist; --cleanrl must be a CleanRL checkout (with cleanrl/{name}.py)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        child = [sys.executable, __file__, "--child", str(script), str(out), str(seed), str(int(evaluate_cartpole))]
        start = time.time()
        proc = subprocess.run([*child, "--", *args], cwd=tmp, capture_output=True, text=True)
        wall = time.time() - start
        if proc.returncode != 0:
            raise SystemExit(f"CleanRL {name} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(out.read_text())
    result["wall_seconds"] = wall
    result["evals"] = [{**e, "seconds": e["time"] - start} for e in result["evals"]]
    return result


# --------------------------------------------------------------- the dqn side
def run_dqn(seed: int, overrides: list[str]) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "dqn_cli", "train", f"seed={seed}", "progress=off", f"hydra.run.dir={tmp}"]
        start = time.time()
        proc = subprocess.run([*cmd, *overrides], capture_output=True, text=True, cwd=ROOT)
        wall = time.time() - start
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        summary = json.loads((Path(tmp) / "summary.json").read_text())
        events = EventAccumulator(str(Path(tmp) / "tb"), size_guidance={"scalars": 0})
        events.Reload()
        scalars = events.Scalars("eval/mean_return") if "eval/mean_return" in events.Tags()["scalars"] else []
        evals = [{"env_step": e.step, "mean_return": e.value, "seconds": e.wall_time - start} for e in scalars]
    return {**summary, "wall_seconds": wall, "evals": evals}


# ------------------------------------------------------------------- the table
def time_to_solve(result: dict) -> float | None:
    for e in result["evals"]:
        if e["mean_return"] >= SOLVED:
            return e["seconds"]
    return None


def cartpole(checkout: Path, seeds: list[int], only: list[str] | None = None) -> dict:
    arms = {
        "dqn train": lambda s: run_dqn(s, []),
        "dqn train, CleanRL's agent": lambda s: run_dqn(s, DQN_AS_CLEANRL),
        "CleanRL dqn.py": lambda s: run_cleanrl(checkout, "dqn", s, CLEANRL_DQN),
        "dqn train algo=pqn": lambda s: run_dqn(s, ["algo=pqn"]),
        "CleanRL pqn.py": lambda s: run_cleanrl(checkout, "pqn", s, CLEANRL_PQN),
    }
    arms = {k: v for k, v in arms.items() if only is None or k in only}
    updates = {"CleanRL dqn.py": (50_000 - 1_000) // 6, "CleanRL pqn.py": (200_000 // (16 * 32)) * 4 * 4}
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for seed in seeds:
        for arm, fn in arms.items():
            r = fn(seed)
            r.setdefault("updates", updates.get(arm))
            runs[arm].append(r)
            solved = time_to_solve(r)
            print(
                f"seed {seed} {arm:20s} final {r['evals'][-1]['mean_return']:6.1f}  solved at "
                f"{'-' if solved is None else f'{solved:.1f} s'}  wall {r['wall_seconds']:.1f} s",
                flush=True,
            )
    table = {}
    for arm, rs in runs.items():
        solve_times = [t for t in map(time_to_solve, rs) if t is not None]
        wall = statistics.median(r["wall_seconds"] for r in rs)
        # without the evaluations, whose cost grows with the policy's episode lengths: the same work
        train = statistics.median(r["wall_seconds"] - r["eval_seconds"] for r in rs)
        steps = rs[0]["evals"][-1]["env_step"]
        table[arm] = {
            "solved_final": sum(r["evals"][-1]["mean_return"] >= SOLVED for r in rs),
            "solved_ever": len(solve_times),
            "final_returns": [round(r["evals"][-1]["mean_return"], 1) for r in rs],
            "median_seconds_to_solve": statistics.median(solve_times) if solve_times else None,
            "median_wall_seconds": wall,
            "median_seconds_without_evaluations": train,
            "env_steps_per_second": steps / train,
            "updates_per_second": rs[0]["updates"] / train,
        }
    pairs = [("dqn train", "CleanRL dqn.py"), ("dqn train, CleanRL's agent", "CleanRL dqn.py")]
    for ours, theirs in [*pairs, ("dqn train algo=pqn", "CleanRL pqn.py")]:
        if ours in table and theirs in table:
            for key in ("median_wall_seconds", "median_seconds_without_evaluations"):
                table[ours][f"{key}_vs_cleanrl"] = table[ours][key] / table[theirs][key]
    return table


def breakout(checkout: Path, steps: int, learning_starts: int, backends: list[str]) -> dict:
    table = {}
    args = ["--total-timesteps", str(steps), "--learning-starts", str(learning_starts), "--buffer-size", "100000"]
    r = run_cleanrl(checkout, "dqn_atari", 1, args, evaluate_cartpole=False)
    table["CleanRL dqn_atari.py"] = {"env_steps_per_second": steps / r["train_seconds"]}
    for backend in backends:
        overrides = [
            "env=breakout",
            f"env.vectorization={backend}",
            f"total_steps={steps}",
            f"learning_starts={learning_starts}",
            "replay.capacity=100000",
            "eval.episodes=0",
            "checkpoint.every=0",
        ]
        summary = run_dqn(1, overrides)
        table[f"dqn train env=breakout ({backend})"] = {"env_steps_per_second": summary["env_steps_per_second"]}
    base = table["CleanRL dqn_atari.py"]["env_steps_per_second"]
    for row in table.values():
        row["ratio_vs_cleanrl"] = row["env_steps_per_second"] / base
    return table


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        script, out, seed, evaluate_cartpole, _, *args = sys.argv[2:]
        cleanrl_child(script, out, int(seed), bool(int(evaluate_cartpole)), args)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cleanrl", type=Path, required=True, help="a CleanRL checkout (has cleanrl/dqn.py)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--what", nargs="+", choices=("cartpole", "breakout"), default=["cartpole", "breakout"])
    parser.add_argument("--breakout-steps", type=int, default=20_000)
    parser.add_argument("--breakout-learning-starts", type=int, default=5_000)
    parser.add_argument("--backends", nargs="+", default=["sync", "async", "ale", "envpool"])
    parser.add_argument("--arms", nargs="+", help="CartPole arms to run (default: all), by their table names")
    args = parser.parse_args()
    if not (args.cleanrl / "cleanrl").is_dir():
        parser.error(f"--cleanrl {args.cleanrl}: not a CleanRL checkout (no cleanrl/ folder in it)")
    result: dict = {"machine": f"{os.cpu_count()} CPU cores", "seeds": args.seeds}
    if "cartpole" in args.what:
        result["cartpole"] = cartpole(args.cleanrl, args.seeds, args.arms)
        print()
        print(
            f"{'CartPole-v1':26s} | solved (final) | median s to solve | median wall s | without evaluations s "
            "| env steps/s | updates/s  (both without evaluations)"
        )
        for arm, row in result["cartpole"].items():
            t = row["median_seconds_to_solve"]
            print(
                f"{arm:26s} | {row['solved_final']}/{len(args.seeds):<12} | {'-' if t is None else f'{t:.1f}':>17} | "
                f"{row['median_wall_seconds']:13.1f} | {row['median_seconds_without_evaluations']:21.1f} | "
                f"{row['env_steps_per_second']:11.0f} | {row['updates_per_second']:9.1f}"
            )
    if "breakout" in args.what:
        result["breakout"] = breakout(args.cleanrl, args.breakout_steps, args.breakout_learning_starts, args.backends)
        print()
        for arm, row in result["breakout"].items():
            print(f"{arm:36s} {row['env_steps_per_second']:8.1f} env steps/s  ({row['ratio_vs_cleanrl']:.2f}x CleanRL)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
