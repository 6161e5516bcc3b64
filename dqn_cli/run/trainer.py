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

This module runs the loop and nothing else: :func:`dqn_cli.run.build.build_run` assembles
the parts it runs over.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dqn_cli.config import TrainConfig, to_dict
from dqn_cli.envs.autoreset import final_observations, info_array
from dqn_cli.envs.workers import EnvWorkerDied, close_envs, start_workers
from dqn_cli.files import atomic_write_text
from dqn_cli.run import checkpoint as ckpt
from dqn_cli.run import resume
from dqn_cli.run.build import Run, build_run, check_run
from dqn_cli.run.evaluate import eval_seeds, evaluate, make_eval_env
from dqn_cli.run.metrics import overridden_keys
from dqn_cli.run.signals import Abort, StopRequest, StopRequested
from dqn_cli.run.state import capture
from dqn_cli.runtime import int_seed

__all__ = ["Abort", "EnvWorkerDied", "NonFiniteLoss", "train"]
log = logging.getLogger("dqn")


def train(cfg: TrainConfig, run_dir: Path, multirun: bool = False, on_start: Callable[[], None] | None = None) -> dict:
    """Train one agent into ``run_dir``; return the summary (also written to summary.json).

    A SIGINT/SIGTERM stops it after the current step with a checkpoint and
    returns ``{"stopped": True, "signal": N, ...}`` instead (no summary.json).
    Raises ConfigError / CheckpointError for bad input (before any env starts,
    but for weights or a replay.npz that turn out not to fit on resume),
    NonFiniteLoss, EnvWorkerDied, CheckpointWriteError, or Abort (a second signal).
    ``on_start`` is called once the input has passed every check, before
    anything starts (the CLI records the run's config there).
    """
    run_dir = Path(run_dir)
    checked = check_run(cfg, run_dir)
    if on_start is not None:
        on_start()
    with StopRequest() as stop, build_run(cfg, run_dir, checked, multirun) as run:
        agent, replay, n, logger, E = run.agent, run.replay, run.n, run.logger, cfg.env.num_envs
        logger.message(f"training {run.spec.label} for {cfg.total_steps:,} env steps; results in {run_dir}")
        last_log, info = n.env_steps, None  # info: the last update's UpdateInfo
        while n.env_steps < cfg.total_steps and not stop:
            # 1. Act: epsilon-greedy over all envs at once.
            eps = run.epsilon(n.env_steps)
            actions = agent.act(run.obs, eps)
            # 2. Step the envs.
            frames, rewards, terminated, truncated, infos = run.envs.step(actions)
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
            if n.env_steps - last_log >= cfg.log_every:
                last_log = n.env_steps
                log_status(run, eps, info)
            if _crossed(n.env_steps, E, cfg.eval.every) and n.env_steps < cfg.total_steps:
                run_evaluation(run, stop)
            if _crossed(n.env_steps, E, cfg.checkpoint.every) and n.env_steps < cfg.total_steps:
                save(run)

        if not stop:
            run_evaluation(run, stop)  # the final evaluation, reported in summary.json
        if stop:  # SIGINT/SIGTERM: checkpoint where we are; `resume=` continues from here
            if run.saved_step != n.env_steps:
                save(run)
            logger.message(f"stopped at env step {n.env_steps}; continue with: dqn train resume={run_dir}")
            return {"stopped": True, "signal": stop.signal, "total_steps": n.env_steps}
        n.finished = True
        save(run)
        summary = summarize(run)
        logger.writer.add_text("summary", "```\n" + json.dumps(summary, indent=2) + "\n```", n.env_steps)
        logger.hparams(to_dict(cfg), summary, first=overridden_keys(_overrides(run_dir)))
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    log.info(
        "%s; %d env steps in %.1f s (%.0f steps/s); results in %s",
        _result_text(summary),
        n.env_steps,
        summary["wall_seconds"],
        summary["env_steps_per_second"],
        run_dir,
    )
    if not multirun:  # (a sweep prints its summary table instead)
        log.info(
            "next: dqn eval checkpoint=%s [which=best] | tensorboard --logdir %s | dqn plot %s",
            run_dir,
            run_dir,
            run_dir,
        )
    return summary


# ---------------------------------------------------------------- the phases
def log_episodes(run: Run, infos: dict, rewards: np.ndarray, ended: np.ndarray) -> None:
    """One point per finished game (raw reward, all lives): env i's part of this vector step
    is env step n + i + 1, so no two points share a step."""
    game_over = info_array(infos, "game_over", ended, ended)
    raw_rewards = info_array(infos, "raw_reward", rewards, ended)
    finished = run.stats.update(raw_rewards, game_over)
    for i, (episodic_return, length) in zip(np.flatnonzero(game_over), finished):
        run.logger.episode(episodic_return, length, run.n.env_steps + int(i) + 1)


def learn(run: Run):
    """The gradient steps due by now: one per train_every env steps after learning_starts.
    Steps owed while the buffer cannot yet fill a batch are dropped, never run in one burst.
    Returns the last step's UpdateInfo, or None when none ran."""
    cfg, n, replay, agent = run.cfg, run.n, run.replay, run.agent
    due = (n.env_steps - cfg.learning_starts) // cfg.train_every - n.updates_dropped
    if n.updates < due and not replay.can_sample(cfg.batch_size):
        n.updates_dropped += due - n.updates
        due = n.updates
    info = None
    while n.updates < due:
        agent.set_learning_rate(run.learning_rate(n.env_steps))
        batch = replay.sample(cfg.batch_size, beta=run.beta(n.env_steps))
        info = agent.update(batch)
        replay.update_priorities(batch.indices, info.td_errors)
        n.updates += 1
        if not np.isfinite(info.td_loss):
            raise NonFiniteLoss(n.env_steps, info.td_loss)
    return info


def log_status(run: Run, eps: float, info) -> None:
    """TensorBoard scalars and the status line (every log_every env steps)."""
    n, logger = run.n, run.logger
    sps, ups = logger.rates(n.env_steps, n.updates)
    logger.scalars(
        {
            "charts/epsilon": eps,
            "charts/learning_rate": run.learning_rate(n.env_steps),
            "perf/env_steps_per_second": sps,
            "perf/updates_per_second": ups,
        },
        n.env_steps,
    )
    if info is not None:  # an update ran in this process (a resumed run may not have one yet)
        logger.scalars(
            {
                f"losses/{info.loss_name}": info.td_loss,
                "losses/q_values": info.q_values,
                "losses/grad_norm": info.grad_norm,
            },
            n.env_steps,
        )
        logger.scalars(run.replay.metrics(), n.env_steps)
    logger.status(n.env_steps, eps, sps)


def run_evaluation(run: Run, stop: StopRequest) -> None:
    """Evaluate the greedy policy on fresh start states (eval.episodes; none when 0), log it,
    and film one episode into TensorBoard with eval.video. A signal drops it at once."""
    cfg, n, logger = run.cfg, run.n, run.logger
    episodes, cap = cfg.eval.episodes, cfg.eval.max_episode_steps
    if episodes == 0:
        return
    env_seeds, policy_seed = eval_seeds(cfg.seed, episodes, n.evaluations)
    try:
        with stop.abandoning():  # an evaluation can take minutes
            if run.eval_envs is None:
                run.eval_envs = start_workers(make_eval_env, cfg.env, episodes, policy_seed, cap)
            logger.evaluating(0, episodes, n.env_steps)
            result = evaluate(
                run.agent.q_network,
                run.eval_envs,
                run.spec,
                episodes,
                env_seeds,
                policy_seed,
                cfg.eval.epsilon,
                run.device,
                max_episode_steps=cap,
                on_episode=lambda done, total: logger.evaluating(done, total, n.env_steps),
            )
            video = None
            if cfg.eval.video:
                from dqn_cli.run.video import record_episode_frames

                video = record_episode_frames(
                    run.agent.q_network,
                    cfg.env,
                    run.spec,
                    int_seed(cfg.seed, "video", n.evaluations),
                    cfg.eval.epsilon,
                    run.device,
                )
    except StopRequested:
        close_envs(run.eval_envs, force=True)
        run.eval_envs = None
        logger.message(f"evaluation at step {n.env_steps} abandoned")
        return
    s = result.summary()
    n.evaluations += 1
    n.last_eval_mean, n.last_eval_std, n.last_eval_cut = s["mean_return"], s["std_return"], s["episodes_cut"]
    improved = s["mean_return"] > n.best_eval_return
    if improved:
        n.best_eval_return, n.best_eval_step = s["mean_return"], n.env_steps
    logger.evaluation(s, n.env_steps, n.best_eval_return)
    if improved:  # checkpoints/best.pt: the network with the best evaluation so far (as SB3's EvalCallback)
        ckpt.save_best(run.run_dir / "checkpoints", checkpoint_state(run))
    if video is not None:
        logger.video("eval/video", video, n.env_steps)


def save(run: Run) -> None:
    """Checkpoint the run at this env step (and its replay buffer with checkpoint.save_replay)."""
    cfg, n = run.cfg, run.n
    if not all(bool(torch.isfinite(p).all()) for p in run.agent.q_network.parameters()):
        raise NonFiniteLoss(n.env_steps, float("nan"), "the network's parameters")
    path = ckpt.save_checkpoint(run.run_dir / "checkpoints", n.env_steps, checkpoint_state(run), cfg.checkpoint.keep)
    if cfg.checkpoint.save_replay:
        ckpt.save_replay(run.run_dir / "checkpoints", run.replay.state_dict(), n.env_steps)
    run.saved_step = n.env_steps
    run.logger.message(f"checkpoint {path}")


def checkpoint_state(run: Run) -> dict:
    """What a checkpoint of the run holds now (run.state.capture)."""
    run.n.wall_seconds = run.wall_seconds()
    envs = resume.capture_envs(run.envs, run.stacker, run.cfg.env)
    return capture(run.cfg, run.spec, run.n, run.agent, run.stats, envs)


def summarize(run: Run) -> dict:
    """summary.json. Without evaluations (eval.episodes=0) their figures are null and the
    run's ``objective`` (what ``dqn train`` returns to a sweeper) is the mean return of the
    last 100 training episodes, else the final evaluation's mean return."""
    cfg, n, logger = run.cfg, run.n, run.logger
    evaluated = cfg.eval.episodes > 0 and n.evaluations > 0
    last_100 = float(np.mean(logger.last_100_returns)) if logger.last_100_returns else None
    final = n.last_eval_mean if evaluated else None
    return {
        "total_steps": n.env_steps,
        "updates": n.updates,
        "wall_seconds": round(n.wall_seconds, 3),
        "env_steps_per_second": round(n.env_steps / max(n.wall_seconds, 1e-9), 1),
        "final_eval_mean_return": final,
        "final_eval_std_return": n.last_eval_std if evaluated else None,
        "final_eval_episodes_cut": n.last_eval_cut if evaluated else None,
        "best_eval_mean_return": n.best_eval_return if evaluated else None,
        "best_eval_step": n.best_eval_step if evaluated and n.best_eval_step >= 0 else None,
        "train_last100_mean_return": last_100,
        "train_episodes": len(logger.episodes_csv.kept) + logger.episodes_logged,
        "objective": final if evaluated else last_100,
        "objective_is": "final_eval_mean_return" if evaluated else "train_last100_mean_return",
        "replay_bytes_per_transition": round(run.replay.bytes_per_transition, 1),
        "env": run.spec.label,
        "algo": cfg.algo,
        "seed": cfg.seed,
    }


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, value: float, what: str = "the TD loss"):
        super().__init__(
            f"{what} became {value} at env step {step}; training stopped, the last good checkpoint is kept "
            "(try a lower optimizer.lr, loss=huber, or optimizer.max_grad_norm=10)"
        )


def _overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides, as Hydra recorded them (none when it did not)."""
    import yaml

    try:
        return list(yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or [])
    except (OSError, yaml.YAMLError):
        return []


def _crossed(step: int, stride: int, every: int) -> bool:
    """True when the last vector step (``stride`` env steps) crossed a multiple of ``every``."""
    return every > 0 and step // every > (step - stride) // every


def _result_text(summary: dict) -> str:
    if summary["final_eval_mean_return"] is not None:
        return (
            f"final eval return {summary['final_eval_mean_return']:.1f} +- {summary['final_eval_std_return']:.1f} "
            f"(best {summary['best_eval_mean_return']:.1f})"
        )
    last = summary["train_last100_mean_return"]
    return (
        f"no evaluation (eval.episodes=0): the objective is the mean training return of the last "
        f"100 episodes, {'n/a' if last is None else f'{last:.1f}'}"
    )
