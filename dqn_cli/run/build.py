"""``build_run``: check a run's input, then assemble the parts its loop runs over (envs, agent,
replay, schedules, logger, counters), restored from its checkpoint on resume, and close them
after (gently after a clean end, by force after an error or a second signal)."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from dqn_cli.config import TrainConfig, to_dict
from dqn_cli.core.agent import DQNAgent, QAgent
from dqn_cli.core.augment import Augmentation
from dqn_cli.core.networks import build_network, check_network_fits
from dqn_cli.core.pqn import PQNAgent
from dqn_cli.core.schedules import beta_schedule, epsilon_schedule, learning_rate_schedule
from dqn_cli.envs.spec import EnvSpec
from dqn_cli.envs.vector import EpisodeStats, FrameStacker, describe_env, make_vector_env
from dqn_cli.envs.workers import WORKER_GONE, close_envs, dead_workers_text, deaf_workers
from dqn_cli.errors import EnvWorkerDied
from dqn_cli.replay.from_config import build_replay, estimate_replay_bytes
from dqn_cli.replay.storage import ReplayBuffer
from dqn_cli.run import checkpoint as ckpt
from dqn_cli.run import resume
from dqn_cli.run.metrics import RunLogger, ordered_config, overridden_keys, run_overrides, use_progress_bar
from dqn_cli.run.signals import StopRequested
from dqn_cli.run.state import Counters
from dqn_cli.run.trackers import start_trackers
from dqn_cli.runtime import (
    check_fits_in_memory,
    int_seed,
    keep_freed_memory,
    resolve_device,
    seed_globals,
    seeds,
    torch_threads_for,
)

log = logging.getLogger("dqn")


@dataclass
class Checked:
    """What :func:`check_run` found: the env's spec, the device, the checkpoint to resume from."""

    spec: EnvSpec
    device: torch.device
    resume_state: dict | None


@dataclass
class Run:
    """The parts of one training run (each knows nothing of the config as a whole) and where it is."""

    cfg: TrainConfig
    run_dir: Path
    spec: EnvSpec
    device: torch.device
    envs: VectorEnv
    agent: QAgent  # DQNAgent, or PQNAgent for algo=pqn
    replay: ReplayBuffer | None  # None for algo=pqn, which learns from its rollouts
    epsilon: Callable[[int], float]  # env step -> exploration rate
    beta: Callable[[int], float]  # env step -> PER importance exponent
    learning_rate: Callable[[int], float]  # env step -> optimizer lr
    stats: EpisodeStats
    stacker: FrameStacker
    logger: RunLogger
    n: Counters
    obs: np.ndarray  # (E, S, *frame_shape): the stacked observation each env acts on next
    started: float  # time.perf_counter() when this life of the run began
    wall_before: float  # seconds the run's earlier lives took
    saved_step: int  # env step of the last checkpoint written (-1: none yet)
    eval_envs: VectorEnv | None = None  # started at the first evaluation
    logged_step: int = 0  # env step of the last status line (its cadence: log_every)

    def wall_seconds(self) -> float:
        return self.wall_before + time.perf_counter() - self.started


def shares_target(cfg: TrainConfig) -> bool:
    """Whether the target network can be the online network itself: a hard copy (tau 1) after
    every env step of one env, so every update (one per train_every >= 1 steps) reads the
    weights it would have copied (DrQ(eps)'s target_update_period 1). Noisy nets draw noise per
    network, so they keep a target of their own."""
    return cfg.tau == 1.0 and cfg.target_update_period == 1 and cfg.env.num_envs == 1 and not cfg.network.noisy


def check_run(cfg: TrainConfig, run_dir: Path) -> Checked:
    """Refuse bad input before anything starts: on resume the checkpoint, then the env, the
    replay buffer's memory, the device and the network's (ConfigError / CheckpointError)."""
    resume_state = None
    if cfg.resume:  # a bad or foreign checkpoint, or a finished run
        last = run_dir / "checkpoints" / "last.pt"
        resume_state = ckpt.load_checkpoint(last)
        resume.check_resumable(resume_state, cfg, last)
    spec = describe_env(cfg.env)
    if cfg.algo != "pqn":  # (PQN keeps one rollout: 128 envs x 32 steps of Atari stacks are 115 MB)
        check_fits_in_memory(estimate_replay_bytes(cfg, spec), cfg.replay.capacity)
    device = resolve_device(cfg.device)
    check_network_fits(cfg.network, spec.obs_shape, spec.n_actions, device)
    return Checked(spec, device, resume_state)


@contextmanager
def build_run(cfg: TrainConfig, run_dir: Path, checked: Checked, multirun: bool = False) -> Iterator[Run]:
    """The run's parts, from scratch or from ``checked.resume_state``; closed when the block ends.

    An env subprocess that dies inside the block surfaces as EnvWorkerDied, naming it.
    """
    spec, device, resume_state = checked.spec, checked.device, checked.resume_state
    E, shared_target = cfg.env.num_envs, shares_target(cfg)
    env_workers = E if cfg.env.vectorization in ("async", "ale", "envpool") else 0
    torch.set_num_threads(torch_threads_for(cfg.torch_threads, env_workers))
    keep_freed_memory()
    seed_globals(cfg.seed)
    *env_seeds, action_seed = seeds(cfg.seed, "train_envs", E + 1)
    envs = run = logger = None
    clean = interrupted = False
    try:
        # Env processes start before CUDA initialises: a forked CUDA context is unusable.
        with deaf_workers(cfg.env.vectorization):
            envs = make_vector_env(cfg.env, E, action_seed, training=True)
        q_network = build_network(cfg.network, spec.obs_shape, spec.n_actions).to(device)
        exploration_seed = int_seed(cfg.seed, "exploration")
        replay: ReplayBuffer | None = None
        if cfg.algo == "pqn":
            agent: DQNAgent | PQNAgent = PQNAgent(
                q_network, cfg.optimizer, spec.n_actions, device, exploration_seed, compile=cfg.compile
            )
        else:
            agent = DQNAgent(
                q_network,
                cfg.optimizer,
                spec.n_actions,
                cfg.double_q,
                cfg.loss,
                device,
                seed=exploration_seed,
                compile=cfg.compile,
                augmentation=(
                    Augmentation(
                        cfg.network.augment_pad,
                        cfg.network.augment_intensity,
                        int_seed(cfg.seed, "augment"),
                        device,
                    )
                    if cfg.network.augment
                    else None
                ),
                shared_target=shared_target,
            )
            replay = build_replay(cfg, spec)
        epsilon, beta, learning_rate = (
            epsilon_schedule(cfg.schedule),
            beta_schedule(cfg.replay),
            learning_rate_schedule(cfg.optimizer),
        )
        stats = EpisodeStats(E)
        stacker = FrameStacker(E, spec.frame_stack, spec.frame_shape, spec.frame_dtype)
        if resume_state is None:
            n, obs = Counters(), stacker.reset(envs.reset(seed=env_seeds)[0])
        else:
            n, obs = resume.continue_run(resume_state, cfg, run_dir, agent, replay, envs, stacker, stats)
        progress = "off" if cfg.progress == "off" else "bar" if use_progress_bar(cfg.progress, multirun) else "log"
        logger = RunLogger(run_dir / "tb", cfg.total_steps, n.env_steps, progress, start_updates=n.updates)
        if cfg.tracker.wandb.enabled or cfg.tracker.mlflow.enabled:  # (after the env processes: no fork inherits them)
            overrides = run_overrides(run_dir)
            params = ordered_config(to_dict(cfg), overridden_keys(overrides))
            ids = (resume_state or {}).get("trackers") or {}
            sweep_dir = run_dir.parent if multirun else None
            logger.trackers = start_trackers(cfg, run_dir, spec.label, params, overrides, sweep_dir, ids)
        run = Run(
            cfg,
            run_dir,
            spec,
            device,
            envs,
            agent,
            replay,
            epsilon,
            beta,
            learning_rate,
            stats,
            stacker,
            logger,
            n,
            obs,
            started=time.perf_counter(),
            wall_before=n.wall_seconds,
            saved_step=n.env_steps if resume_state is not None else -1,
        )
        yield run
        clean = True
    except (KeyboardInterrupt, StopRequested):  # a second signal: the trackers mark the run killed
        interrupted = True
        raise
    except WORKER_GONE as err:  # an env subprocess died (beyond env.worker_restarts): name it, do not hang on it
        step = run.n.env_steps if run is not None else 0
        envs = run.envs if run is not None else envs
        what = dead_workers_text(err, cfg.env, envs, run and run.eval_envs)
        raise EnvWorkerDied(what, step, run_dir) from None
    finally:  # after an error or a second signal, workers are killed rather than waited for
        close_envs(run.eval_envs if run is not None else None, force=not clean)
        close_envs(run.envs if run is not None else envs, force=not clean)
        if logger is not None:
            finished = clean and run is not None and run.n.finished
            logger.close("finished" if finished else "killed" if clean or interrupted else "failed")


def restart_envs(run: Run, err: BaseException) -> None:
    """After a training env worker died mid-step (``err``: its broken pipe), start the vector env
    afresh, every env in a new episode, unless ``env.worker_restarts`` restarts are spent (then
    ``err`` is raised: the run stops with EnvWorkerDied, its last checkpoint kept). The episodes
    under way end truncated in the replay buffer at the observations the envs were in (the step
    that failed is lost) and are left out of the episode statistics."""
    cfg, n, E = run.cfg, run.n, run.cfg.env.num_envs
    dead = dead_workers_text(err, cfg.env, run.envs)
    if n.env_restarts >= cfg.env.worker_restarts:
        raise err
    close_envs(run.envs, force=True)  # (the other workers' answers to the failed step are dropped)
    if run.replay is not None:
        run.replay.cut_episodes(np.arange(E), run.obs)
    run.stats.drop_open()
    n.env_restarts += 1
    *env_seeds, action_seed = seeds(cfg.seed, "restarted_envs", E + 1, n.env_restarts)
    with deaf_workers(cfg.env.vectorization):
        run.envs = make_vector_env(cfg.env, E, action_seed, training=True)
    run.obs = run.stacker.reset(run.envs.reset(seed=env_seeds)[0])
    run.logger.message(
        f"{dead} at env step {n.env_steps}; restarted the env workers, every env in a fresh episode "
        f"(restart {n.env_restarts} of at most {cfg.env.worker_restarts}: env.worker_restarts)"
    )
