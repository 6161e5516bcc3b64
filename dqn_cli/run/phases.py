"""The phases both training loops (DQN's, trainer.py; PQN's, pqn_loop.py) share: logging
finished episodes and training scalars, greedy evaluation, checkpoints, and the summary."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from dqn_cli.envs.autoreset import info_array
from dqn_cli.envs.vector import capture_envs
from dqn_cli.envs.workers import close_envs, deaf_workers
from dqn_cli.errors import NonFiniteLoss
from dqn_cli.run import checkpoint as ckpt
from dqn_cli.run.build import Run
from dqn_cli.run.evaluate import eval_seeds, evaluate, make_eval_env
from dqn_cli.run.signals import StopRequest, StopRequested
from dqn_cli.run.state import capture
from dqn_cli.runtime import cpu_name, int_seed

log = logging.getLogger("dqn")


def log_episodes(run: Run, infos: dict, rewards: np.ndarray, ended: np.ndarray) -> None:
    """One point per finished game (raw reward, all lives): env i's part of this vector step
    is env step n + i + 1, so no two points share a step."""
    game_over = info_array(infos, "game_over", ended, ended)
    raw_rewards = info_array(infos, "raw_reward", rewards, ended)
    finished = run.stats.update(raw_rewards, game_over)
    for i, (episodic_return, length) in zip(np.flatnonzero(game_over), finished):
        run.logger.episode(episodic_return, length, run.n.env_steps + int(i) + 1)


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
        if run.replay is not None:
            logger.scalars(run.replay.metrics(), n.env_steps)
    logger.status(n.env_steps, eps, sps, learning=n.updates > 0)


def run_evaluation(run: Run, stop: StopRequest, final: bool = False) -> None:
    """Evaluate the greedy policy on fresh start states (eval.episodes; none when 0; the final
    one eval.final_episodes when set), log it, and film one episode into TensorBoard with
    eval.video. A signal drops it at once."""
    cfg, n, logger = run.cfg, run.n, run.logger
    episodes, cap = cfg.eval.episodes, cfg.eval.max_episode_steps
    if episodes == 0:
        return
    if final and cfg.eval.final_episodes is not None:
        episodes = cfg.eval.final_episodes
    env_seeds, policy_seed = eval_seeds(cfg.seed, episodes, n.evaluations)
    if run.eval_envs is not None and run.eval_envs.num_envs != len(env_seeds):  # (final_episodes: more envs)
        close_envs(run.eval_envs, force=False)
        run.eval_envs = None
    started = time.perf_counter()
    try:
        with stop.abandoning():  # an evaluation can take minutes
            if run.eval_envs is None:
                with deaf_workers(cfg.env.vectorization):
                    run.eval_envs = make_eval_env(cfg.env, episodes, policy_seed, cap)
            logger.evaluating(0, episodes, n.env_steps, envs=run.eval_envs.num_envs)
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
    n.eval_seconds += time.perf_counter() - started
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
    # the replay first (seconds for a large buffer), then the model files (a fraction of that): a
    # kill between the two writes, which leaves a replay.npz of another step than last.pt's, is
    # then rarely possible
    if cfg.checkpoint.save_replay and run.replay is not None:
        ckpt.save_replay(run.run_dir / "checkpoints", run.replay.state_dict(), n.env_steps)
    path = ckpt.save_checkpoint(run.run_dir / "checkpoints", n.env_steps, checkpoint_state(run), cfg.checkpoint.keep)
    run.saved_step = n.env_steps
    run.logger.message(f"checkpoint {path}")


def checkpoint_state(run: Run) -> dict:
    """What a checkpoint of the run holds now (run.state.capture)."""
    run.n.wall_seconds = run.wall_seconds()
    envs = capture_envs(run.envs, run.stacker, run.cfg.env)
    return {**capture(run.cfg, run.spec, run.n, run.agent, run.stats, envs), "trackers": run.logger.trackers.ids()}


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
        "eval_seconds": round(n.eval_seconds, 3),
        "update_seconds": round(n.update_seconds, 3),
        "env_restarts": n.env_restarts,
        "final_eval_mean_return": final,
        "final_eval_std_return": n.last_eval_std if evaluated else None,
        "final_eval_episodes_cut": n.last_eval_cut if evaluated else None,
        "best_eval_mean_return": n.best_eval_return if evaluated else None,
        "best_eval_step": n.best_eval_step if evaluated and n.best_eval_step >= 0 else None,
        "train_last100_mean_return": last_100,
        "train_episodes": len(logger.episodes_csv.kept) + logger.episodes_logged,
        "objective": final if evaluated else last_100,
        "objective_is": "final_eval_mean_return" if evaluated else "train_last100_mean_return",
        "replay_bytes_per_transition": round(run.replay.bytes_per_transition, 1) if run.replay is not None else None,
        "env": run.spec.label,
        "algo": cfg.algo,
        "seed": cfg.seed,
        # where the timings were taken (a resumed run: where it finished): the same work can take
        # twice as long on another CPU
        "cpu": cpu_name(),
        "device": str(run.device),
        "torch_threads": torch.get_num_threads(),
    }


def on_cadence(run: Run, stop: StopRequest, stepped: int, eps: float, info) -> None:
    """Log, evaluate and checkpoint, each when its cadence was crossed by the last ``stepped`` env
    steps (each loop's last step). At total_steps the run's end does the final evaluation and checkpoint.

    info: the last update's UpdateInfo or PQNInfo (None before the first)."""
    cfg, n = run.cfg, run.n
    if n.env_steps - run.logged_step >= cfg.log_every:
        run.logged_step = n.env_steps
        log_status(run, eps, info)
    if n.env_steps < cfg.total_steps:
        if crossed(n.env_steps, stepped, cfg.eval.every):
            run_evaluation(run, stop)
        if crossed(n.env_steps, stepped, cfg.checkpoint.every):
            save(run)


def crossed(step: int, stride: int, every: int) -> bool:
    """True when the last vector step (``stride`` env steps) crossed a multiple of ``every``."""
    return every > 0 and step // every > (step - stride) // every


def result_text(summary: dict) -> str:
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
