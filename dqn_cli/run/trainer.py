"""The training loop: Deep Q-learning with experience replay (Mnih et al. 2015, Algorithm 1).

    for each vector step:
        1. act:    a_t = epsilon-greedy(Q(s_t))                       agent.act
        2. step:   s_t+1, r_t, terminated, truncated = envs.step(a_t)
        3. store:  (s_t, a_t, r_t, terminated, truncated, s_final)   replay.add
        4. learn:  every train_every env steps after learning_starts,
                   sample a batch, minimise the (Huber) TD error      agent.update
        5. sync:   every target_update_period env steps,
                   target <- tau * online + (1 - tau) * target        agent.update_target
        6. evaluate greedily, log, checkpoint, each on its cadence

algo=pqn runs its own loop (:mod:`dqn_cli.run.pqn_loop`) over the same parts. :func:`train` takes
a run from its composed config to its summary; :func:`dqn_cli.run.build.build_run` assembles the
parts, and :mod:`dqn_cli.run.phases` holds what both loops do besides learning.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dqn_cli.config import TrainConfig, to_dict, to_train_config, validate
from dqn_cli.envs.autoreset import final_observations
from dqn_cli.envs.workers import WORKER_GONE
from dqn_cli.errors import EnvWorkerDied, NonFiniteLoss
from dqn_cli.files import HYDRA_DIR, atomic_write_text
from dqn_cli.run.build import Run, build_run, check_run, restart_envs
from dqn_cli.run.lock import run_dir_lock
from dqn_cli.run.metrics import overridden_keys, run_overrides
from dqn_cli.run.phases import log_episodes, on_cadence, result_text, run_evaluation, save, summarize
from dqn_cli.run.pqn_loop import pqn_loop
from dqn_cli.run.resume import resumed_config
from dqn_cli.run.signals import Abort, StopRequest

__all__ = ["Abort", "EnvWorkerDied", "NonFiniteLoss", "train"]
log = logging.getLogger("dqn")


def train(
    cfg: TrainConfig | DictConfig,
    run_dir: Path,
    multirun: bool = False,
    on_start: Callable[[], None] | None = None,
    overrides: Sequence[str] = (),
    config_dir: str | None = HYDRA_DIR,
) -> dict:
    """Train one agent into ``run_dir``; return the summary (also written to summary.json).

    ``cfg`` is the composed config (Hydra's, or a TrainConfig): a new run's is validated
    (:func:`~dqn_cli.config.validate`); ``resume=RUN_DIR`` continues that run, its saved config
    merged with the command line's ``overrides`` (``["resume=...", "total_steps=200000"]``: only
    the keys named there change the saved config) by :func:`~dqn_cli.run.resume.resumed_config`.
    ``on_start`` is called once the input has passed every check, before anything starts (the CLI
    writes Hydra's files there); the run's config, resolved and validated, is recorded in
    ``RUN_DIR/CONFIG_DIR/config.yaml`` then (on resume: once the checkpoint is restored), unless
    ``config_dir`` is None (the user asked for no ``.hydra/``).

    A SIGINT/SIGTERM stops it after the current step with a checkpoint and
    returns ``{"stopped": True, "signal": N, ...}`` instead (no summary.json).
    Raises ConfigError / CheckpointError for bad input (before any env starts,
    but for weights or a replay.npz that turn out not to fit on resume),
    NonFiniteLoss, EnvWorkerDied, CheckpointWriteError, or Abort (a second signal).
    """
    run_dir = Path(run_dir)
    if cfg.resume:  # resume=RUN_DIR: that run's saved config, with the command line's changes
        cfg = resumed_config(cfg, run_dir, list(overrides))
    else:
        cfg = validate(cfg if isinstance(cfg, TrainConfig) else to_train_config(cfg, strict=True))
    checked = check_run(cfg, run_dir)
    with run_dir_lock(run_dir):  # one process per run dir, for the run's whole life
        if on_start is not None:
            on_start()
        if config_dir is not None and not cfg.resume:  # a new run's, once its input passed every check
            save_config(run_dir / config_dir, cfg)
        return _train(cfg, run_dir, checked, multirun, config_dir)


def _train(cfg: TrainConfig, run_dir: Path, checked, multirun: bool, config_dir: str | None) -> dict:
    with StopRequest() as stop, build_run(cfg, run_dir, checked, multirun) as run:
        n, logger = run.n, run.logger
        if config_dir is not None and cfg.resume:  # its new budget and cadences, now that the checkpoint is restored
            save_config(run_dir / config_dir, cfg)
        logger.message(f"training {run.spec.label} for {cfg.total_steps:,} env steps; results in {run_dir}")
        (pqn_loop if cfg.algo == "pqn" else dqn_loop)(run, stop)
        if not stop:
            run_evaluation(run, stop, final=True)  # the final evaluation, reported in summary.json
        if stop:  # SIGINT/SIGTERM: checkpoint where we are; `resume=` continues from here
            if run.saved_step != n.env_steps:
                save(run)
            logger.message(f"stopped at env step {n.env_steps}; continue with: dqn train resume={run_dir}")
            return {"stopped": True, "signal": stop.signal, "total_steps": n.env_steps}
        n.finished = True
        save(run)
        summary = summarize(run)
        logger.writer.add_text("summary", "```\n" + json.dumps(summary, indent=2) + "\n```", n.env_steps)
        logger.hparams(to_dict(cfg), summary, first=overridden_keys(run_overrides(run_dir)))
        logger.trackers.summary(summary)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    log.info(
        "%s; %d env steps in %.1f s (%.0f steps/s); results in %s",
        result_text(summary),
        n.env_steps,
        summary["wall_seconds"],
        summary["env_steps_per_second"],
        run_dir,
    )
    if not multirun:  # (a sweep prints its summary table instead)
        best = " [which=best]" if (run_dir / "checkpoints" / "best.pt").exists() else ""
        plot = f"dqn plot {run_dir}" + ("" if summary["final_eval_mean_return"] is not None else " --metric train")
        log.info("next: dqn eval checkpoint=%s%s | tensorboard --logdir %s | %s", run_dir, best, run_dir, plot)
    return summary


def save_config(config_dir: Path, cfg: TrainConfig) -> None:
    """The run's config in ``config_dir/config.yaml`` (the run's ``.hydra/``), resolved
    (ALE/Breakout-v5, not ${..}) and validated (replay.beta_steps fixed), atomically."""
    config_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def dqn_loop(run: Run, stop: StopRequest) -> None:
    """Algorithm 1 of Mnih et al. 2015, until total_steps or a stop signal."""
    cfg, agent, replay, n, logger, E = run.cfg, run.agent, run.replay, run.n, run.logger, run.cfg.env.num_envs
    run.logged_step, info = n.env_steps, None  # info: the last update's UpdateInfo
    while n.env_steps < cfg.total_steps and not stop:
        # 1. Act: epsilon-greedy over all envs at once.
        eps = run.epsilon(n.env_steps)
        actions = agent.act(run.obs, eps)
        # 2. Step the envs (an env worker that died: all restart in fresh episodes; nothing to store).
        try:
            frames, rewards, terminated, truncated, infos = run.envs.step(actions)
        except WORKER_GONE as err:
            restart_envs(run, err)
            continue
        ended = terminated | truncated
        # 3. Store s_t, a_t, r_t and the true final frame of episodes that ended.
        replay.add(run.obs, actions, rewards, terminated, truncated, final_observations(infos, ended, frames))
        log_episodes(run, infos, rewards, ended)
        run.obs = run.stacker.step(frames, ended)
        n.env_steps += E
        # 4. Learn: the gradient steps due by now.
        info = learn(run) or info
        # 5. Sync the target network, once per target period passed.
        periods = n.env_steps // cfg.target_update_period - n.target_updates
        if n.updates > 0 and periods > 0:  # (before the first update target == online)
            agent.update_target(cfg.tau, times=periods)
            n.target_updates += periods
        # 6. Evaluate, log and checkpoint, each on its cadence.
        logger.advance(n.env_steps, eps)
        on_cadence(run, stop, E, eps, info)


def learn(run: Run):
    """The gradient steps due by now: one per train_every env steps after learning_starts.
    Steps owed while the buffer cannot yet fill a batch are dropped, never run in one burst.
    Returns the last step's UpdateInfo, or None when none ran."""
    cfg, n, replay, agent = run.cfg, run.n, run.replay, run.agent
    due = (n.env_steps - cfg.learning_starts) // cfg.train_every - n.updates_dropped
    if n.updates < due and not replay.can_sample(cfg.batch_size):
        n.updates_dropped += due - n.updates
        due = n.updates
    info, started = None, time.perf_counter()
    while n.updates < due:
        agent.set_learning_rate(run.learning_rate(n.env_steps))
        batch = replay.sample(cfg.batch_size, beta=run.beta(n.env_steps))
        info = agent.update(batch)
        if replay.uses_priorities:  # (prioritized replay: the one host copy an update needs)
            replay.update_priorities(batch.indices, info.td_errors)
        n.updates += 1
        if not np.isfinite(info.td_loss):
            raise NonFiniteLoss(n.env_steps, info.td_loss)
    n.update_seconds += time.perf_counter() - started
    return info
