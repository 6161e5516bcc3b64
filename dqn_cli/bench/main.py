"""``dqn bench [all|envs|update|replay] [--quick] [--device D]``: measure this machine.

Prints a table of env steps/s (CartPole and Breakout, per backend and
num_envs), gradient updates/s of the default networks on the device (``update``
alone also measures them under compile=true, beside eager, in the same run), replay
sampling speeds, a one-line verdict on the bottleneck with a suggested
``env.num_envs``, and as its last line one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from dqn_cli.runtime import available_cpus, cpu_name


def _timed(fn, seconds: float, min_calls: int = 3) -> tuple[int, float]:
    """Call ``fn`` repeatedly for about ``seconds``; return (calls, elapsed)."""
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return calls, time.perf_counter() - start


def env_steps_per_second(env_cfg, num_envs: int, seconds: float) -> float:
    """Random-action env steps/s (summed over envs) of a vector env."""
    from dqn_cli.envs.vector import make_vector_env

    envs = make_vector_env(env_cfg, num_envs, seed=0, training=True)
    try:
        envs.reset(seed=list(range(num_envs)))
        rng = np.random.default_rng(0)
        n = int(envs.single_action_space.n)
        step = lambda: envs.step(rng.integers(n, size=num_envs))  # noqa: E731
        for _ in range(10):
            step()
        calls, elapsed = _timed(step, seconds)
        return calls * num_envs / elapsed
    finally:
        envs.close()


def atari_update_parts(net_name: str):
    """(NetworkConfig, OptimizerConfig, double_q) of an Atari preset's update: nature_cnn is
    env=breakout's (double DQN), drq_eps and der are env=atari100k algo=drq_eps's and algo=der's
    (tests/test_bench checks them against the composed presets)."""
    from dqn_cli.config import NetworkConfig, OptimizerConfig

    atari = dict(name="nature_cnn", cnn_hidden=512, v_min=-10.0, v_max=10.0)
    atari100k_optimizer = OptimizerConfig(lr=1e-4, eps=1.5e-4, max_grad_norm=None)  # Dopamine clips nothing
    return {
        "nature_cnn": (NetworkConfig(**atari), OptimizerConfig(lr=1e-4), True),
        "drq_eps": (NetworkConfig(**atari, dueling=True, augment=True), atari100k_optimizer, True),
        "der": (
            NetworkConfig(**atari, dueling=True, distributional="c51", atoms=51, noisy=True, noisy_std=0.5),
            atari100k_optimizer,
            True,
        ),
    }[net_name]


def _update_setup(net_name: str, device, batch_size: int, compile: bool = False):
    """(agent, batch, step) for one update as ``net_name``'s preset does it: mlp (CartPole),
    minatar_cnn (MinAtar, Breakout's 4 channels), or an Atari preset's (:func:`atari_update_parts`):
    nature_cnn (a target network of its own), drq_eps (DrQ's augmentation of s and s', the online
    network as its own target) or der (C51, noisy nets, a target network of its own).
    ``step()`` runs one update (and the target sync the training loop does after it)."""
    from dqn_cli.config import NetworkConfig, OptimizerConfig
    from dqn_cli.core.agent import DQNAgent
    from dqn_cli.core.augment import Augmentation
    from dqn_cli.core.networks import build_network
    from dqn_cli.replay.storage import Batch

    rng = np.random.default_rng(0)
    optimizer_cfg, double_q = OptimizerConfig(), True
    if net_name == "mlp":
        obs_shape, n_actions, net_cfg = (1, 4), 2, NetworkConfig(name="mlp")
        obs = rng.standard_normal((batch_size, *obs_shape)).astype(np.float32)
    elif net_name == "minatar_cnn":  # the MinAtar preset's width; 0/1 cells stored as uint8
        obs_shape, n_actions, net_cfg = (1, 4, 10, 10), 6, NetworkConfig(name="minatar_cnn", cnn_hidden=128)
        obs = (rng.random((batch_size, *obs_shape)) < 0.1).astype(np.uint8)
    else:
        obs_shape, n_actions = (4, 84, 84), 4
        net_cfg, optimizer_cfg, double_q = atari_update_parts(net_name)
        obs = rng.integers(0, 255, size=(batch_size, *obs_shape), dtype=np.uint8)
    batch = Batch(
        obs,
        rng.integers(n_actions, size=batch_size),
        np.ones(batch_size, np.float32),
        obs.copy(),
        np.full(batch_size, 0.99, np.float32),
        np.arange(batch_size),
        np.ones(batch_size, np.float32),
    )
    net = build_network(net_cfg, obs_shape, n_actions).to(device)
    augmentation = Augmentation(net_cfg.augment_pad, net_cfg.augment_intensity, 0, device) if net_cfg.augment else None
    shared_target = net_name == "drq_eps"  # its target period of 1 (run.build.shares_target)
    agent = DQNAgent(
        net,
        optimizer_cfg,
        n_actions,
        double_q,
        "huber",
        device,
        compile=compile,
        augmentation=augmentation,
        shared_target=shared_target,
    )

    def step():
        agent.update(batch)
        if shared_target:
            agent.update_target(1.0)

    return agent, batch, step


def updates_per_second(net_name: str, device, seconds: float, batch_size: int, compile: bool = False) -> float:
    """Gradient steps/s of ``net_name``'s update (:func:`_update_setup`), eager or
    torch.compile'd (compile=true; its compilation, in the warm-up, is not timed)."""
    import torch

    _, _, step = _update_setup(net_name, device, batch_size, compile)
    for _ in range(5):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    calls, elapsed = _timed(step, seconds)
    sync()
    return calls / elapsed


def update_flops(net_name: str, device, batch_size: int) -> int:
    """Floating-point operations of one update (forward, backward), counted by torch's
    FlopCounterMode over the convolutions and matrix products (the optimizer's and the
    elementwise ops' few FLOPs are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    _, _, step = _update_setup(net_name, device, batch_size)
    step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def matmul_gflops(device, seconds: float, n: int = 2048) -> float:
    """Sustained GFLOP/s of an n x n float32 matrix product on ``device`` with the current threads:
    the machine's practical limit for the update's convolutions and matrix products."""
    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    calls, elapsed = _timed(lambda: a @ b, seconds)
    sync()
    return 2 * n**3 * calls / elapsed / 1e9


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="dqn bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", nargs="?", default="all", choices=["all", "envs", "update", "replay"])
    parser.add_argument("--quick", action="store_true", help="shorter measurements (a few seconds each part)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (for update throughput)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for the updates (0 = all cores)")
    parser.error = lambda message: parser.exit(2, f"dqn bench: error: {message} (see dqn bench --help)\n")
    args = parser.parse_args(argv)

    from dqn_cli.config import ConfigError, EnvConfig, check_device
    from dqn_cli.runtime import resolve_device

    try:
        check_device(args.device)
        device = resolve_device(args.device)
    except ConfigError as err:
        parser.exit(2, f"dqn bench: error: {err}\n")
    import torch

    from dqn_cli.runtime import keep_freed_memory, torch_threads_for

    torch.set_num_threads(torch_threads_for(args.threads, 0))
    keep_freed_memory()
    seconds = 0.5 if args.quick else 1.0
    figures: dict = {
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_count": available_cpus(),
        "torch_threads": torch.get_num_threads(),
        "quick": args.quick,
    }
    rows: list[tuple[str, str]] = []

    if args.what in ("all", "envs"):
        import importlib.util

        # EnvPool is an optional extra: its rows appear where it is installed
        envpool = ("envpool",) if importlib.util.find_spec("envpool") is not None else ()
        cartpole = EnvConfig()
        for backend in ("sync", "async", *envpool):
            for num_envs in (1, 4, 8) if not args.quick else (4,):
                cartpole.vectorization = backend
                sps = env_steps_per_second(cartpole, num_envs, seconds)
                figures[f"cartpole_{backend}_{num_envs}_env_steps_per_second"] = round(sps, 1)
                rows.append((f"CartPole-v1 {backend:7s} x{num_envs}", f"{sps:,.0f} env steps/s"))
        breakout = _atari_env_config()
        if breakout is not None:
            for backend in ("sync", "async", "ale", *envpool):
                for num_envs in (4, 8) if not args.quick else (8,):
                    breakout.vectorization = backend
                    sps = env_steps_per_second(breakout, num_envs, seconds)
                    figures[f"breakout_{backend}_{num_envs}_env_steps_per_second"] = round(sps, 1)
                    rows.append((f"Breakout {backend:7s} x{num_envs}", f"{sps:,.0f} env steps/s"))

    if args.what in ("all", "update"):
        limit = matmul_gflops(device, seconds)
        figures["matmul_gflops"] = round(limit, 1)
        rows.append((f"matmul 2048x2048 float32 on {device}", f"{limit:,.1f} GFLOP/s"))
        # MinAtar: its preset's batch; the Atari presets' updates as atari_update_parts gives them
        for net, batch in (("mlp", 64), ("minatar_cnn", 256), ("nature_cnn", 32), ("drq_eps", 32), ("der", 32)):
            ups = updates_per_second(net, device, seconds, batch)
            figures[f"{net}_updates_per_second"] = round(ups, 1)
            rows.append((f"update {net} batch {batch} on {device}", f"{ups:,.1f} updates/s"))
            if net in ("nature_cnn", "drq_eps"):  # the Atari updates against the machine's limit
                gflops = update_flops(net, device, batch) * ups / 1e9
                figures[f"{net}_update_gflops"] = round(gflops, 1)
                rows.append(("  achieved", f"{gflops:,.1f} GFLOP/s ({gflops / limit:.0%} of matmul)"))
            if args.what == "update":  # compile=true beside eager, in the same run (compiling takes a while)
                compiled = updates_per_second(net, device, seconds, batch, compile=True)
                figures[f"{net}_compiled_updates_per_second"] = round(compiled, 1)
                rows.append(("  compile=true", f"{compiled:,.1f} updates/s ({compiled / max(ups, 1e-9):.2f}x eager)"))

    if args.what in ("all", "replay"):
        from dqn_cli.bench import replay as bench_replay

        replay_figures = bench_replay.run(quick=args.quick)
        figures.update(replay_figures)
        for key, value in replay_figures.items():
            if key.endswith("_us"):
                rows.append((f"replay {key[:-3].replace('_', ' ')}", f"{value:,.1f} us"))
        for kind in ("uniform", "per"):
            rows.append(
                (
                    f"replay {kind} memory, Atari transition",
                    f"{replay_figures[f'{kind}_bytes_per_transition']:,.0f} B "
                    f"({replay_figures[f'{kind}_gib_at_2_20']} GiB at 2^20)",
                )
            )

    verdict = _verdict(figures)
    if verdict:
        figures["verdict"] = verdict
    width = max((len(r[0]) for r in rows), default=10)
    print(f"dqn bench on {available_cpus()} CPU cores ({cpu_name()}), device {device}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>22}")
    if verdict:
        print(f"verdict: {verdict}")
    print(json.dumps(figures))
    return 0


def _atari_env_config():
    try:
        from dqn_cli.config import EnvConfig

        cfg = EnvConfig(name="breakout", kind="atari", game="Breakout", frame_stack=4)
        from dqn_cli.envs.vector import describe_env

        describe_env(cfg)
        return cfg
    except Exception:  # Atari unavailable: skip its rows
        return None


def _verdict(f: dict) -> str:
    """Where the time goes for Atari-style training (updates every 4 env steps)."""
    env_keys = {k: v for k, v in f.items() if k.startswith("breakout_") and k.endswith("_env_steps_per_second")}
    if not env_keys or "nature_cnn_updates_per_second" not in f:
        env_keys = {k: v for k, v in f.items() if k.startswith("cartpole_") and k.endswith("_env_steps_per_second")}
        if not env_keys or "mlp_updates_per_second" not in f:
            return ""
        best = max(env_keys, key=env_keys.get)
        need = env_keys[best]  # CartPole default: one update per env step at most
        ups = f["mlp_updates_per_second"]
        game, train_every = "CartPole", 1
    else:
        best = max(env_keys, key=env_keys.get)
        ups = f["nature_cnn_updates_per_second"]
        game, train_every = "Breakout", 4
        need = env_keys[best] / train_every
    _, backend, num_envs, *_ = best.split("_")
    if ups < need:
        bound = (
            f"learner-bound: {game} envs give {env_keys[best]:,.0f} steps/s but the network trains at "
            f"{ups:,.0f} updates/s (needs {need:,.0f} at train_every={train_every}); "
            "a GPU (device=cuda) or a larger train_every helps more than more envs"
        )
    else:
        bound = (
            f"env-bound: {game} envs give {env_keys[best]:,.0f} steps/s and the network keeps up ({ups:,.0f} updates/s)"
        )
    return f"{bound}; suggested env.vectorization={backend} env.num_envs={num_envs}"
