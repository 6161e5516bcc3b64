"""The training loop: Deep Q-learning with experience replay (Mnih et al. 2015, Algorithm 1).

    for each vector step:
        a_t   = epsilon-greedy(Q(s_t))                          agent.act
        s_t+1, r_t, terminated, truncated = envs.step(a_t)
        store (s_t, a_t, r_t, terminated, truncated, s_final)   replay.add
        every train_every env steps, after learning_starts:
            sample a batch, minimise (y - Q(s, a))^2 (Huber)   agent.update
        every target_update_period env steps:
            target <- tau * online + (1 - tau) * target         agent.update_target
        periodically: evaluate greedily, log, checkpoint

This module is the only one that knows the order of things; everything it
calls is a small object that knows nothing of the config as a whole.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dqn_cli.config import TrainConfig, to_dict
from dqn_cli.core.agent import DQNAgent
from dqn_cli.core.networks import build_network
from dqn_cli.core.schedules import beta_schedule, epsilon_schedule, learning_rate_schedule
from dqn_cli.envs.vector import (
    EpisodeStats,
    FrameStacker,
    describe_env,
    final_observations,
    info_array,
    make_vector_env,
)
from dqn_cli.envs.workers import WORKER_GONE, EnvWorkerDied, close_envs, start_workers
from dqn_cli.replay.build import build_replay, estimate_replay_bytes
from dqn_cli.run import checkpoint as ckpt
from dqn_cli.run import resume
from dqn_cli.run.evaluate import eval_seeds, evaluate, make_eval_env
from dqn_cli.run.metrics import RunLogger
from dqn_cli.runtime import check_fits_in_memory, int_seed, resolve_device, seed_globals, seeds, torch_threads_for

log = logging.getLogger("dqn")


class StopRequested(BaseException):
    """Raised by :class:`StopRequest` inside :meth:`StopRequest.abandoning`: the work in
    progress (an evaluation) is dropped so the run can checkpoint and exit now."""


class Abort(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: quit at once, without a checkpoint (the last complete one stays)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StopRequest:
    """SIGINT/SIGTERM handler: the first signal asks the loop to stop after the
    current step (checkpoint, clean exit with 128 + the signal number); a
    second one raises :class:`Abort` at once."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}
        self._abandon = False

    def __enter__(self) -> "StopRequest":
        # SIGUSR2: SLURM's warning before the time limit (submitit's --signal=USR2@120)
        for sig in (signal.SIGINT, signal.SIGTERM, *([signal.SIGUSR2] if hasattr(signal, "SIGUSR2") else [])):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise Abort(signum)  # second signal: stop now
        self.signal = signum
        log.warning("%s received: finishing this step and saving a checkpoint (again to quit at once)",
                    signal.Signals(signum).name)
        if self._abandon:
            raise StopRequested

    @contextmanager
    def abandoning(self):
        """Inside, the first signal also interrupts the work at once (it raises StopRequested)."""
        self._abandon = True
        try:
            yield
        finally:
            self._abandon = False

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __bool__(self) -> bool:
        return self.signal is not None


@dataclass
class Counters:
    """Where the run is: everything a schedule or a cadence needs (units in the names)."""

    env_steps: int = 0  # summed over envs
    updates: int = 0  # gradient steps
    updates_dropped: int = 0  # gradient steps owed while the buffer could not fill a batch (never run)
    target_updates: int = 0  # target periods passed once learning began (each applied to the target)
    evaluations: int = 0
    best_eval_return: float = float("-inf")
    last_eval_mean: float = float("nan")
    last_eval_std: float = float("nan")
    last_eval_cut: int = 0  # episodes of the last evaluation cut by eval.max_episode_steps
    wall_seconds: float = 0.0  # over all lives of the run
    finished: bool = False  # the final evaluation is done


def train(cfg: TrainConfig, run_dir: Path, multirun: bool = False,
          on_start: Callable[[], None] | None = None) -> dict:  # fmt: skip
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
    spec = describe_env(cfg.env)  # validates the env before any process starts
    E = cfg.env.num_envs
    check_fits_in_memory(estimate_replay_bytes(cfg, spec), cfg.replay.capacity)
    device = resolve_device(cfg.device)
    env_workers = E if cfg.env.vectorization in ("async", "ale") else 0
    torch.set_num_threads(torch_threads_for(cfg.torch_threads, env_workers))
    seed_globals(cfg.seed)

    resume_state = None
    if cfg.resume:  # refuse a bad or foreign checkpoint, or a finished run, before anything starts
        last = run_dir / "checkpoints" / "last.pt"
        resume_state = ckpt.load_checkpoint(last)
        resume.check_resumable(resume_state, cfg, last)
    if on_start is not None:
        on_start()

    envs = eval_envs = logger = None
    n = Counters()
    clean_exit = False
    with StopRequest() as stop:
        try:
            # Env processes start before CUDA initialises (RL_NOTES 4).
            *env_seeds, action_seed = seeds(cfg.seed, "train_envs", E + 1)
            envs = start_workers(make_vector_env, cfg.env, E, action_seed, training=True)
            q_network = build_network(cfg.network, spec.obs_shape, spec.n_actions).to(device)
            agent = DQNAgent(q_network, cfg.optimizer, spec.n_actions, cfg.double_q, cfg.loss, device,
                             seed=int_seed(cfg.seed, "exploration"))  # fmt: skip
            replay = build_replay(cfg, spec)
            epsilon = epsilon_schedule(cfg.schedule)
            beta = beta_schedule(cfg.replay)
            learning_rate = learning_rate_schedule(cfg.optimizer)
            stats = EpisodeStats(E)
            stacker = FrameStacker(E, spec.frame_stack, spec.frame_shape, spec.frame_dtype)
            if resume_state is not None:
                n = _restore(resume_state, agent, replay, run_dir)
                # fresh episodes when the envs cannot continue (resume.py)
                env_seeds = seeds(cfg.seed, "resume_envs", E, n.env_steps)
            frames, _ = envs.reset(seed=env_seeds)
            obs = stacker.reset(frames)
            if resume_state is not None:
                continued = resume.restore_envs(envs, stacker, resume_state.get("envs"))
                if continued:  # the episodes continue exactly
                    stats.load_state_dict(resume_state["episode_stats"])
                replay.resume_episodes(obs, continued)  # no stack or n-step window spans the resume
                resume.save_config(run_dir, cfg)  # the new budget / cadences, now that the resume is good
                log.info("resumed %s at env step %d (%d updates)", run_dir, n.env_steps, n.updates)

            logger = RunLogger(run_dir / "tb", cfg.total_steps, n.env_steps, _progress_mode(cfg, multirun))
            logger.message(f"training {spec.label} for {cfg.total_steps:,} env steps; results in {run_dir}")
            started = time.perf_counter()
            wall_before = n.wall_seconds
            last_log = n.env_steps
            saved_step = n.env_steps if resume_state is not None else -1

            def save() -> None:
                nonlocal saved_step
                if not all(bool(torch.isfinite(p).all()) for p in q_network.parameters()):
                    raise NonFiniteLoss(n.env_steps, float("nan"), "the network's parameters")
                n.wall_seconds = wall_before + time.perf_counter() - started
                state = _state(cfg, spec, n, agent, stats, resume.capture_envs(envs, stacker, cfg.env))
                path = ckpt.save_checkpoint(run_dir / "checkpoints", n.env_steps, state, cfg.checkpoint.keep)
                if cfg.checkpoint.save_replay:
                    ckpt.save_replay(run_dir / "checkpoints", replay.state_dict(), n.env_steps)
                saved_step = n.env_steps
                logger.message(f"checkpoint {path}")

            def run_eval() -> None:
                nonlocal eval_envs
                episodes, cap = cfg.eval.episodes, cfg.eval.max_episode_steps
                if episodes == 0:  # eval.episodes=0: no evaluations
                    return
                env_seeds, policy_seed = eval_seeds(cfg.seed, episodes, n.evaluations)  # fresh starts each time
                try:
                    with stop.abandoning():  # an evaluation can take minutes: a signal drops it
                        if eval_envs is None:
                            eval_envs = start_workers(make_eval_env, cfg.env, episodes, policy_seed, cap)
                        logger.evaluating(0, episodes, n.env_steps)
                        result = evaluate(q_network, eval_envs, spec, episodes, env_seeds, policy_seed,
                                          cfg.eval.epsilon, device, max_episode_steps=cap,
                                          on_episode=lambda done, total: logger.evaluating(done, total, n.env_steps))  # fmt: skip
                        video = None
                        if cfg.eval.video:  # one rendered episode into TensorBoard's Images tab
                            from dqn_cli.run.video import record_episode_frames

                            video = record_episode_frames(q_network, cfg.env, spec,
                                                          int_seed(cfg.seed, "video", n.evaluations),
                                                          cfg.eval.epsilon, device)  # fmt: skip
                except StopRequested:
                    close_envs(eval_envs, force=True)
                    eval_envs = None
                    logger.message(f"evaluation at step {n.env_steps} abandoned")
                    return
                s = result.summary()
                n.evaluations += 1
                n.last_eval_mean, n.last_eval_std = s["mean_return"], s["std_return"]
                n.last_eval_cut = s["episodes_cut"]
                n.best_eval_return = max(n.best_eval_return, s["mean_return"])
                logger.evaluation(s, n.env_steps)
                if video is not None:
                    logger.video("eval/video", video, n.env_steps)

            info = None  # the last update's UpdateInfo
            while n.env_steps < cfg.total_steps and not stop:
                # Act: epsilon-greedy over all envs at once, then step them.
                eps = epsilon(n.env_steps)
                actions = agent.act(obs, eps)
                frames, rewards, terminated, truncated, infos = envs.step(actions)
                ended = terminated | truncated
                # Store s_t, a_t, r_t and the true final frame of episodes that ended.
                replay.add(obs, actions, rewards, terminated, truncated, final_observations(infos, ended, frames))
                game_over = info_array(infos, "game_over", ended, ended)
                raw_rewards = info_array(infos, "raw_reward", rewards, ended)
                # env i's part of this vector step is env step n + i + 1: at most one point per step
                finished = stats.update(raw_rewards, game_over)
                for i, (episodic_return, length) in zip(np.flatnonzero(game_over), finished):
                    logger.episode(episodic_return, length, n.env_steps + int(i) + 1)
                obs = stacker.step(frames, ended)
                n.env_steps += E

                # Learn: one gradient step per train_every env steps after learning_starts.
                # Steps owed while the buffer cannot yet fill a batch are dropped, never run in one burst.
                due = (n.env_steps - cfg.learning_starts) // cfg.train_every - n.updates_dropped
                if n.updates < due and not replay.can_sample(cfg.batch_size):
                    n.updates_dropped += due - n.updates
                    due = n.updates
                while n.updates < due:
                    agent.set_learning_rate(learning_rate(n.env_steps))
                    batch = replay.sample(cfg.batch_size, beta=beta(n.env_steps))
                    info = agent.update(batch)
                    replay.update_priorities(batch.indices, info.td_errors)
                    n.updates += 1
                    if not np.isfinite(info.td_loss):
                        raise NonFiniteLoss(n.env_steps, info.td_loss)
                periods = n.env_steps // cfg.target_update_period - n.target_updates
                if n.updates > 0 and periods > 0:  # (before the first update target == online)
                    agent.update_target(cfg.tau, times=periods)
                    n.target_updates += periods

                logger.advance(n.env_steps, eps)
                if n.env_steps - last_log >= cfg.log_every:
                    last_log = n.env_steps
                    sps, ups = logger.rates(n.env_steps, n.updates)
                    logger.scalars({"charts/epsilon": eps, "charts/learning_rate": learning_rate(n.env_steps),
                                    "perf/env_steps_per_second": sps,
                                    "perf/updates_per_second": ups}, n.env_steps)  # fmt: skip
                    if info is not None:  # an update ran in this process (a resumed run may not have one yet)
                        logger.scalars({"losses/td_loss": info.td_loss, "losses/q_values": info.q_values,
                                        "losses/grad_norm": info.grad_norm}, n.env_steps)  # fmt: skip
                        logger.scalars(replay.metrics(), n.env_steps)
                    logger.status(n.env_steps, eps, sps)
                if _crossed(n.env_steps, E, cfg.eval.every) and n.env_steps < cfg.total_steps:
                    run_eval()
                if _crossed(n.env_steps, E, cfg.checkpoint.every) and n.env_steps < cfg.total_steps:
                    save()

            if not stop:
                run_eval()  # the final evaluation, reported in summary.json
            if stop:  # SIGINT/SIGTERM: checkpoint where we are; `resume=` continues from here
                if saved_step != n.env_steps:
                    save()
                logger.message(f"stopped at env step {n.env_steps}; continue with: dqn train resume={run_dir}")
                clean_exit = True
                return {"stopped": True, "signal": stop.signal, "total_steps": n.env_steps}
            n.finished = True
            save()
            summary = _summary(cfg, spec, n, replay, logger)
            logger.writer.add_text("summary", "```\n" + json.dumps(summary, indent=2) + "\n```", n.env_steps)
            logger.hparams(to_dict(cfg), summary)
            clean_exit = True
        except WORKER_GONE as err:  # an env subprocess died: name it, do not hang on it
            raise EnvWorkerDied(err, cfg.env, n.env_steps, run_dir, envs=envs, eval_envs=eval_envs) from None
        finally:  # after an error or a second signal, workers are killed rather than waited for
            close_envs(eval_envs, force=not clean_exit)
            close_envs(envs, force=not clean_exit)
            if logger is not None:
                logger.close()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if summary["final_eval_mean_return"] is not None:
        result = (f"final eval return {summary['final_eval_mean_return']:.1f} +- {summary['final_eval_std_return']:.1f} "
                  f"(best {summary['best_eval_mean_return']:.1f})")  # fmt: skip
    else:
        last = summary["train_last100_mean_return"]
        result = (f"no evaluation (eval.episodes=0): the objective is the mean training return of the last "
                  f"100 episodes, {'n/a' if last is None else f'{last:.1f}'}")  # fmt: skip
    log.info("%s; %d env steps in %.1f s (%.0f steps/s); results in %s", result, n.env_steps,
             summary["wall_seconds"], summary["env_steps_per_second"], run_dir)  # fmt: skip
    return summary


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, value: float, what: str = "the TD loss"):
        super().__init__(
            f"{what} became {value} at env step {step}; training stopped, the last good checkpoint is kept "
            "(try a lower optimizer.lr, loss=huber, or optimizer.max_grad_norm=10)"
        )


def _crossed(step: int, stride: int, every: int) -> bool:
    """True when the last vector step (``stride`` env steps) crossed a multiple of ``every``."""
    return every > 0 and step // every > (step - stride) // every


def _progress_mode(cfg: TrainConfig, multirun: bool) -> str:
    from dqn_cli.run.metrics import use_progress_bar

    if cfg.progress == "off":
        return "off"
    return "bar" if use_progress_bar(cfg.progress, multirun) else "log"


def _summary(cfg: TrainConfig, spec, n: Counters, replay, logger: RunLogger) -> dict:
    """summary.json. Without evaluations (eval.episodes=0) their figures are null and the
    run's ``objective`` (what ``dqn train`` returns to a sweeper) is the mean return of the
    last 100 training episodes, else the final evaluation's mean return."""
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
        "train_last100_mean_return": last_100,
        "train_episodes": len(logger.episodes_csv.kept) + logger.episodes_logged,
        "objective": final if evaluated else last_100,
        "objective_is": "final_eval_mean_return" if evaluated else "train_last100_mean_return",
        "replay_bytes_per_transition": round(replay.bytes_per_transition, 1),
        "env": spec.label,
        "seed": cfg.seed,
    }


# --------------------------------------------------------------- checkpoints
def _state(cfg: TrainConfig, spec, n: Counters, agent: DQNAgent, stats: EpisodeStats, envs: dict | None) -> dict:
    """Everything needed to continue the run: tensors, plain containers and numbers only."""
    np_state = np.random.get_state()
    rng = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and agent.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "config": to_dict(cfg),
        "spec": {"frame_shape": list(spec.frame_shape), "frame_stack": spec.frame_stack,
                 "n_actions": spec.n_actions, "frame_dtype": str(spec.frame_dtype)},  # fmt: skip
        "counters": dict(vars(n)),
        "agent": agent.state_dict(),
        "episode_stats": stats.state_dict(),
        "rng": rng,
        "envs": envs,  # the envs' simulator state where it can be restored exactly (resume.capture_envs)
    }


def _restore(state: dict, agent: DQNAgent, replay, run_dir: Path) -> Counters:
    """Networks, optimizer, counters, RNGs and (when replay.npz matches) the replay buffer of ``state``."""
    try:
        agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError, ValueError) as err:
        first = str(err).strip().splitlines()
        raise ckpt.CheckpointError(
            f"checkpoint {run_dir / 'checkpoints' / 'last.pt'} does not fit this run's network or optimizer "
            f"({(first[1] if len(first) > 1 else first[0]).strip()[:160] if first else type(err).__name__})"
        ) from None
    known = {f.name for f in fields(Counters)}
    n = Counters(**{k: v for k, v in state["counters"].items() if k in known})
    n.finished = False
    rng = state["rng"]
    random.setstate(_as_tuple(rng["python"]))
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():  # per GPU, for as many as this machine has
        for index, cuda_state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    with ckpt.open_replay(run_dir / "checkpoints") as saved:
        if saved is None:
            log.info("no replay.npz: the replay buffer starts empty (checkpoint.save_replay=true keeps it)")
        elif saved[0] != n.env_steps:
            log.warning("replay.npz is from env step %d, last.pt from %d: the replay buffer starts empty",
                        saved[0], n.env_steps)  # fmt: skip
        else:
            try:
                replay.load_state_dict(saved[1])
            except (ValueError, KeyError) as err:
                raise ckpt.CheckpointError(
                    f"{run_dir / 'checkpoints' / 'replay.npz'} does not fit this run's replay buffer ({err}); "
                    "delete it to resume with an empty buffer"
                ) from None
            log.info("replay buffer restored: %d transitions", len(replay))
    return n


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
