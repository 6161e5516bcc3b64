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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dqn_cli import checkpoint as ckpt
from dqn_cli.agent import DQNAgent
from dqn_cli.config import ConfigError, TrainConfig, to_dict
from dqn_cli.envs import EpisodeStats, FrameStacker, describe_env, final_observations, info_array, make_vector_env
from dqn_cli.evaluate import evaluate, make_eval_env
from dqn_cli.metrics import RunLogger
from dqn_cli.networks import build_network
from dqn_cli.replay import build_replay, check_fits_in_memory, estimate_replay_bytes
from dqn_cli.schedules import beta_schedule, epsilon_schedule

log = logging.getLogger("dqn")


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; refuses cuda when there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} but no CUDA device is available; use device=auto or device=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={name} but only {torch.cuda.device_count()} CUDA device(s) exist; use cuda:0..."
            )
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class StopRequest:
    """SIGINT/SIGTERM handler: the first signal asks the loop to stop after the
    current step (checkpoint, clean exit); a second one exits at once."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt  # second signal: stop now
        self.signal = signum
        log.warning("%s received: finishing this step and saving a checkpoint (again to quit at once)",
                    signal.Signals(signum).name)

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
    target_updates: int = 0
    evaluations: int = 0
    best_eval_return: float = float("-inf")
    last_eval_mean: float = float("nan")
    last_eval_std: float = float("nan")
    wall_seconds: float = 0.0  # over all lives of the run


def train(cfg: TrainConfig, run_dir: Path, multirun: bool = False) -> dict:
    """Train one agent into ``run_dir``; return the summary (also written to summary.json)."""
    run_dir = Path(run_dir)
    spec = describe_env(cfg.env)  # validates the env before any process starts
    E = cfg.env.num_envs
    check_fits_in_memory(estimate_replay_bytes(cfg, spec), cfg.replay.capacity)
    device = resolve_device(cfg.device)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)

    resume_state = None
    if cfg.resume:
        resume_state = ckpt.load_checkpoint(run_dir / "checkpoints" / "last.pt")

    # Env processes start before CUDA initialises (RL_NOTES 4).
    envs = make_vector_env(cfg.env, E, cfg.seed, training=True)
    eval_envs = None
    try:
        q_network = build_network(cfg.network, spec.obs_shape, spec.n_actions).to(device)
        agent = DQNAgent(q_network, cfg.optimizer, spec.n_actions, cfg.double_q, cfg.loss, device, seed=cfg.seed)
        replay = build_replay(cfg, spec)
        epsilon = epsilon_schedule(cfg.schedule)
        beta = beta_schedule(cfg.schedule, cfg.replay.beta_start, cfg.replay.beta_end, cfg.total_steps)
        stats = EpisodeStats(E)
        n = Counters()
        reset_seed = cfg.seed
        if resume_state is not None:
            n = _restore(resume_state, agent, stats, replay, run_dir, cfg)
            reset_seed = cfg.seed + n.env_steps  # fresh episodes, still reproducible
            stats = EpisodeStats(E)  # envs restart their episodes
            log.info("resumed %s at env step %d (%d updates)", run_dir, n.env_steps, n.updates)

        logger = RunLogger(run_dir / "tb", cfg.total_steps, n.env_steps, _progress_mode(cfg, multirun))
        stacker = FrameStacker(E, spec.frame_stack, spec.frame_shape, spec.frame_dtype)
        frames, _ = envs.reset(seed=[reset_seed + i for i in range(E)])
        obs = stacker.reset(frames)
        started = time.perf_counter()
        wall_before = n.wall_seconds
        last_log = n.env_steps

        def run_state() -> dict:
            n.wall_seconds = wall_before + time.perf_counter() - started
            return _state(cfg, spec, n, agent, stats)

        def save() -> None:
            path = ckpt.save_checkpoint(run_dir / "checkpoints", n.env_steps, run_state(), cfg.checkpoint.keep)
            if cfg.checkpoint.save_replay:
                ckpt.save_replay(run_dir / "checkpoints", replay.state_dict())
            logger.message(f"checkpoint {path}")

        def run_eval() -> None:
            nonlocal eval_envs
            if eval_envs is None:
                eval_envs = make_eval_env(cfg.env, cfg.eval.episodes, cfg.seed)
            result = evaluate(q_network, eval_envs, spec, cfg.eval.episodes, cfg.seed + 10_000,
                              cfg.eval.epsilon, device)  # fmt: skip
            s = result.summary()
            n.evaluations += 1
            n.last_eval_mean, n.last_eval_std = s["mean_return"], s["std_return"]
            n.best_eval_return = max(n.best_eval_return, s["mean_return"])
            logger.scalars({"eval/mean_return": s["mean_return"], "eval/std_return": s["std_return"],
                            "eval/mean_length": s["mean_length"]}, n.env_steps)  # fmt: skip
            logger.message(f"eval at step {n.env_steps}: return {s['mean_return']:.1f} +- {s['std_return']:.1f}")

        with StopRequest() as stop:
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
                for episodic_return, length in stats.update(raw_rewards, game_over):
                    logger.episode(episodic_return, length, n.env_steps + E)
                obs = stacker.step(frames, ended)
                n.env_steps += E

                # Learn: one gradient step per train_every env steps after learning_starts.
                due = (n.env_steps - cfg.learning_starts) // cfg.train_every
                while n.updates < due and replay.can_sample(cfg.batch_size):
                    batch = replay.sample(cfg.batch_size, beta=beta(n.env_steps))
                    info = agent.update(batch)
                    replay.update_priorities(batch.indices, info.td_errors)
                    n.updates += 1
                    if not np.isfinite(info.td_loss):
                        raise NonFiniteLoss(n.env_steps, info.td_loss)
                if n.updates > 0 and n.env_steps // cfg.target_update_period > n.target_updates:
                    agent.update_target(cfg.tau)
                    n.target_updates = n.env_steps // cfg.target_update_period

                logger.advance(n.env_steps, eps)
                if n.env_steps - last_log >= cfg.log_every:
                    last_log = n.env_steps
                    sps, ups = logger.rates(n.env_steps, n.updates)
                    logger.scalars({"charts/epsilon": eps, "perf/env_steps_per_second": sps,
                                    "perf/updates_per_second": ups}, n.env_steps)  # fmt: skip
                    if n.updates > 0:
                        logger.scalars({"losses/td_loss": info.td_loss, "losses/q_values": info.q_values,
                                        "losses/grad_norm": info.grad_norm}, n.env_steps)  # fmt: skip
                        logger.scalars(replay.metrics(), n.env_steps)
                    logger.status(n.env_steps, eps, sps)
                if _crossed(n.env_steps, E, cfg.eval.every) and n.env_steps < cfg.total_steps:
                    run_eval()
                if _crossed(n.env_steps, E, cfg.checkpoint.every) and n.env_steps < cfg.total_steps:
                    save()

            if stop:
                save()
                logger.message(f"stopped at env step {n.env_steps}; continue with: dqn train resume={run_dir}")
                logger.close()
                return {"stopped": True, "total_steps": n.env_steps}

            run_eval()  # the final evaluation, reported in summary.json
            save()
        summary = _summary(cfg, n, replay)
        logger.writer.add_text("summary", "```\n" + json.dumps(summary, indent=2) + "\n```", n.env_steps)
        logger.close()
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info("final eval return %.1f +- %.1f (best %.1f); %d env steps in %.1f s (%.0f steps/s)",
                 summary["final_eval_mean_return"], summary["final_eval_std_return"],
                 summary["best_eval_mean_return"], n.env_steps, summary["wall_seconds"],
                 summary["env_steps_per_second"])  # fmt: skip
        return summary
    finally:
        envs.close()
        if eval_envs is not None:
            eval_envs.close()


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, value: float):
        super().__init__(
            f"the TD loss became {value} at env step {step}; training stopped, the last good checkpoint is kept "
            "(try a lower optimizer.lr, loss=huber, or optimizer.max_grad_norm=10)"
        )


def _crossed(step: int, stride: int, every: int) -> bool:
    """True when the last vector step (``stride`` env steps) crossed a multiple of ``every``."""
    return every > 0 and step // every > (step - stride) // every


def _progress_mode(cfg: TrainConfig, multirun: bool) -> str:
    from dqn_cli.metrics import use_progress_bar

    if cfg.progress == "off":
        return "off"
    return "bar" if use_progress_bar(cfg.progress, multirun) else "log"


def _summary(cfg: TrainConfig, n: Counters, replay) -> dict:
    return {
        "total_steps": n.env_steps,
        "updates": n.updates,
        "wall_seconds": round(n.wall_seconds, 3),
        "env_steps_per_second": round(n.env_steps / max(n.wall_seconds, 1e-9), 1),
        "final_eval_mean_return": n.last_eval_mean,
        "final_eval_std_return": n.last_eval_std,
        "best_eval_mean_return": n.best_eval_return,
        "replay_bytes_per_transition": round(replay.bytes_per_transition, 1),
        "env": cfg.env.id if cfg.env.kind == "classic" else cfg.env.game,
        "seed": cfg.seed,
    }


# --------------------------------------------------------------- checkpoints
def _state(cfg: TrainConfig, spec, n: Counters, agent: DQNAgent, stats: EpisodeStats) -> dict:
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
    }


def _restore(state: dict, agent: DQNAgent, stats: EpisodeStats, replay, run_dir: Path, cfg: TrainConfig) -> Counters:
    agent.load_state_dict(state["agent"])
    n = Counters(**state["counters"])
    rng = state["rng"]
    random.setstate(_as_tuple(rng["python"]))
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if cfg.checkpoint.save_replay:
        arrays = ckpt.load_replay(run_dir / "checkpoints")
        if arrays is not None:
            replay.load_state_dict(arrays)
    return n


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
