#!/usr/bin/env python
"""Atari benchmarks on this machine (CPU unless --device says otherwise).

(a) collection: 8 Breakout envs stepped with random actions (the bare vector
    env) vs. with the Nature-CNN policy choosing every action greedily
    (FrameStacker + DQNAgent.act, no learning), and vs. the policy acting for
    one half of the envs while the other half steps (two vector envs of 4,
    step_async / step_wait), measured side by side in rotating blocks in one
    run, for the ``async`` and ``ale`` backends;
(b) batch assembly: time per ``sample(32)`` of stacked (4x84x84) transitions
    from a 2^20-capacity frame-deduplicated ReplayBuffer filled with synthetic
    episodes (~7.4 GB, allocated once and freed);
(c) end to end: a short ``dqn train env=breakout`` (updates every 4 steps),
    env steps/s from its summary.json and its steady-state log lines.

Prints a table and, as the last line, one JSON object with every number.

    .venv/bin/python scripts/bench_atari.py                # all, ~3 minutes
    .venv/bin/python scripts/bench_atari.py --only collect --seconds 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- collection
def bench_collection(backend: str, num_envs: int, seconds: float, rounds: int, device: str) -> dict:
    import torch

    from dqn_cli.config import EnvConfig, NetworkConfig, OptimizerConfig
    from dqn_cli.core.agent import DQNAgent
    from dqn_cli.core.networks import build_network
    from dqn_cli.envs.atari import describe, make_vector_env
    from dqn_cli.envs.vector import FrameStacker

    cfg = EnvConfig(
        name="breakout", kind="atari", game="Breakout", num_envs=num_envs, vectorization=backend, frame_stack=4
    )
    spec = describe(cfg)
    envs = make_vector_env(
        cfg, num_envs, seed=0, training=True
    )  # env processes before CUDA (a forked CUDA context is unusable)
    half = num_envs // 2  # the overlapped arm: two vector envs of half the envs each
    halves = [make_vector_env(cfg, half, seed=0, training=True) for _ in range(2)]
    dev = torch.device(device)
    net = build_network(NetworkConfig(name="nature_cnn"), spec.obs_shape, spec.n_actions).to(dev)
    agent = DQNAgent(net, OptimizerConfig(lr=1e-4), spec.n_actions, True, "huber", dev, seed=0)
    stacker = FrameStacker(num_envs, spec.frame_stack, spec.frame_shape, spec.frame_dtype)
    rng = np.random.default_rng(0)
    frames, _ = envs.reset(seed=list(range(num_envs)))
    obs = stacker.reset(frames)
    half_stackers = [FrameStacker(half, spec.frame_stack, spec.frame_shape, spec.frame_dtype) for _ in range(2)]
    half_obs = [
        st.reset(h.reset(seed=list(range(g * half, (g + 1) * half)))[0])
        for g, (st, h) in enumerate(zip(half_stackers, halves))
    ]

    def random_block(budget: float) -> tuple[int, float]:
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < budget:
            envs.step(rng.integers(0, spec.n_actions, size=num_envs))
            steps += num_envs
        return steps, time.perf_counter() - start

    def policy_block(budget: float) -> tuple[int, float]:
        nonlocal obs
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < budget:
            actions = agent.act(obs, 0.0)  # greedy: the network runs every step
            frames, _, terminated, truncated, _ = envs.step(actions)
            obs = stacker.step(frames, terminated | truncated)
            steps += num_envs
        return steps, time.perf_counter() - start

    def overlapped_block(budget: float) -> tuple[int, float]:
        """Act for one half while the other half's envs step: act(0), send(0), act(1), send(1), wait both."""
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < budget:
            for g in range(2):
                halves[g].step_async(agent.act(half_obs[g], 0.0))
            for g in range(2):
                frames, _, terminated, truncated, _ = halves[g].step_wait()
                half_obs[g] = half_stackers[g].step(frames, terminated | truncated)
            steps += 2 * half
        return steps, time.perf_counter() - start

    arms = {"random": random_block, "policy": policy_block, "overlapped": overlapped_block}
    try:
        for fn in arms.values():  # warm up every path
            fn(0.5)
        totals = {name: [0, 0.0] for name in arms}
        block = seconds / rounds
        for r in range(rounds):  # rotate the order, so drift in machine load hits every arm alike
            names = list(arms)[r % 3 :] + list(arms)[: r % 3]
            for name in names:
                steps, dt = arms[name](block)
                totals[name][0] += steps
                totals[name][1] += dt
    finally:
        envs.close()
        for h in halves:
            h.close()
    sps = {name: steps / dt for name, (steps, dt) in totals.items()}
    return {
        "backend": backend,
        "num_envs": num_envs,
        "random_steps_per_s": round(sps["random"], 1),
        "policy_steps_per_s": round(sps["policy"], 1),
        "ratio": round(sps["policy"] / sps["random"], 3),
        "overlapped_steps_per_s": round(sps["overlapped"], 1),
        "overlapped_ratio": round(sps["overlapped"] / sps["random"], 3),
        "act_ms_per_vector_step": round(1000 * num_envs * (1 / sps["policy"] - 1 / sps["random"]), 3),
    }


# ----------------------------------------------------------- batch assembly
def bench_sampling(capacity: int, num_envs: int, batch: int, iters: int, n_step: int) -> dict:
    from dqn_cli.replay.storage import ReplayBuffer, slot_bytes
    from dqn_cli.runtime import available_memory_bytes

    need = slot_bytes((84, 84), np.uint8) * capacity
    if need > 0.8 * available_memory_bytes():
        return {"skipped": f"needs {need / 2**30:.1f} GiB, only {available_memory_bytes() / 2**30:.1f} GiB available"}
    t0 = time.perf_counter()
    buf = ReplayBuffer(capacity, num_envs, (84, 84), np.uint8, frame_stack=4, n_step=n_step, gamma=0.99, seed=0)
    L, S, ep = buf.slots, buf.frame_stack, 1000
    # Synthetic episodes of ep-1 transitions + 1 final slot each, written straight into the arrays.
    t = np.arange(L)
    pos = (t % ep).astype(np.int32)
    for e in range(num_envs):
        buf.frames[e] = ((t * 7 + e) % 251).astype(np.uint8)[:, None, None]  # touches every page
        buf.pos[e] = pos
    buf.final[:] = pos == ep - 1
    buf.terminated[:] = pos == ep - 2
    buf.actions[:] = (t % 4).astype(np.int32)
    buf.rewards[:] = (t % 3 == 0).astype(np.float32)
    buf.valid[:] = ~buf.final
    buf.valid[:, : S - 1] = False  # head = 0: the oldest slots lost their frame history
    buf.valid[:, L - n_step :] = False  # the newest slots' n-step windows are not complete
    buf.head[:] = 0
    buf.size[:] = L
    buf.transitions_added = L * num_envs
    fill_s = time.perf_counter() - t0
    for _ in range(50):
        buf.sample(batch)
    times = np.empty(iters)
    for i in range(iters):
        start = time.perf_counter()
        b = buf.sample(batch)
        times[i] = time.perf_counter() - start
    assert b.obs.shape == (batch, 4, 84, 84) and b.obs.dtype == np.uint8
    result = {
        "capacity": capacity,
        "gib": round(buf.nbytes / 2**30, 2),
        "bytes_per_transition": round(buf.bytes_per_transition, 1),
        "fill_seconds": round(fill_s, 1),
        "batch": batch,
        "n_step": n_step,
        "median_us": round(float(np.median(times)) * 1e6, 1),
        "p90_us": round(float(np.percentile(times, 90)) * 1e6, 1),
        "mean_us": round(float(times.mean()) * 1e6, 1),
    }
    del buf, b
    gc.collect()
    return result


# ---------------------------------------------------------------- end to end
def bench_end_to_end(total_steps: int, learning_starts: int, backend: str, device: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        args = [
            sys.executable,
            "-m",
            "dqn_cli",
            "train",
            "env=breakout",
            f"env.vectorization={backend}",
            f"total_steps={total_steps}",
            f"learning_starts={learning_starts}",
            "replay.capacity=50000",
            "eval.episodes=1",
            "eval.every=0",
            "checkpoint.every=0",
            "env.max_episode_frames=4000",
            f"device={device}",
            f"torch_threads={threads}",
            "progress=log",
            f"log_every={max(total_steps // 10, 8)}",
            f"hydra.run.dir={run_dir}",
        ]
        start = time.perf_counter()
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
        summary = json.loads((run_dir / "summary.json").read_text())
    # steady state: the windowed rates the trainer logged once learning had started
    rates = [
        (int(m.group(1)), float(m.group(2)))
        for m in re.finditer(r"step (\d+)/\d+\s+(\d+) steps/s", proc.stdout + proc.stderr)
    ]
    learning = [sps for step, sps in rates if step > learning_starts + total_steps // 10]
    return {
        "backend": backend,
        "device": device,
        "torch_threads": threads,
        "total_steps": summary["total_steps"],
        "updates": summary["updates"],
        "summary_env_steps_per_second": summary["env_steps_per_second"],
        "learning_env_steps_per_second": round(float(np.median(learning)), 1) if learning else None,
        "process_wall_seconds": round(wall, 1),
    }


# ---------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("collect", "sample", "e2e"), action="append", help="run only these parts")
    p.add_argument("--seconds", type=float, default=12.0, help="collection: seconds per backend, all arms together")
    p.add_argument("--rounds", type=int, default=6, help="collection: alternating blocks per arm")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--capacity", type=int, default=2**20, help="sampling: replay capacity (2^20 ~ 7.4 GB)")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--e2e-steps", type=int, default=4000)
    p.add_argument("--e2e-learning-starts", type=int, default=800)
    p.add_argument("--device", default="cpu", help="torch device for the policy / learner (cpu, cuda)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in this process (0 = torch's default; on few cores shared with env "
        "workers, 1 avoids oversubscription: a batch-8 Nature CNN forward takes ~5 ms with 1 "
        "thread vs ~28 ms with 2 on a loaded 2-core box)",
    )
    a = p.parse_args()
    parts = a.only or ["collect", "sample", "e2e"]
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "device": a.device,
            "load_avg": [round(x, 2) for x in os.getloadavg()],
        },
    }
    if "collect" in parts:
        results["collection"] = [
            bench_collection(b, a.num_envs, a.seconds, a.rounds, a.device) for b in ("async", "ale")
        ]
    if "sample" in parts:
        results["sampling"] = [bench_sampling(a.capacity, a.num_envs, 32, a.iters, n) for n in (1, 3)]
    if "e2e" in parts:
        results["end_to_end"] = [bench_end_to_end(a.e2e_steps, a.e2e_learning_starts, "async", a.device, a.threads)]
    results["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]

    print(f"\nmachine: {results['machine']}")
    for r in results.get("collection", []):
        print(
            f"collection {r['backend']:>5} x{r['num_envs']}: random {r['random_steps_per_s']:8.1f} steps/s | "
            f"policy {r['policy_steps_per_s']:8.1f} steps/s | ratio {r['ratio']:.2f} "
            f"(act {r['act_ms_per_vector_step']:.2f} ms per vector step) | halves overlapped "
            f"{r['overlapped_steps_per_s']:8.1f} steps/s, ratio {r['overlapped_ratio']:.2f}"
        )
    for r in results.get("sampling", []):
        if "skipped" in r:
            print(f"sampling: skipped ({r['skipped']})")
        else:
            print(
                f"sample({r['batch']}) n_step={r['n_step']} from {r['capacity']:,} slots ({r['gib']} GiB, "
                f"{r['bytes_per_transition']} B/transition): median {r['median_us']} us, p90 {r['p90_us']} us"
            )
    for r in results.get("end_to_end", []):
        if "error" in r:
            print(f"end to end: error: {r['error']}")
        else:
            print(
                f"end to end Breakout ({r['backend']}, {r['device']}, train_every 4): "
                f"{r['summary_env_steps_per_second']} env steps/s overall (summary.json), "
                f"{r['learning_env_steps_per_second']} while learning; {r['updates']} updates"
            )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
