"""Evaluation rollouts: the (epsilon-)greedy policy on the evaluation protocol.

Episodes run in parallel over a vector env; each env plays a fixed quota of
episodes, so short episodes are not over-represented (taking the first N to
finish would bias the mean towards failures). For Atari the evaluation
protocol is the full game with raw rewards (no episodic life, no clipping).

``evaluate(..., record_actions=True)`` also keeps, for each scored episode,
its env's slot and the actions it played: with the slot's reset seed that is
all it takes to replay the very same episode on a rendering env
(:func:`dqn_cli.run.video.record_episodes`, ``dqn eval ... video=true``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from dqn_cli.config import EnvConfig
from dqn_cli.core.agent import EpsilonGreedy
from dqn_cli.envs.autoreset import info_array
from dqn_cli.envs.spec import EnvSpec
from dqn_cli.envs.vector import EpisodeStats, FrameStacker, make_vector_env
from dqn_cli.files import atomic_write_text
from dqn_cli.runtime import seeds


@dataclass
class EvalResult:
    """Scored episodes, in the order they finished.

    ``cut[k]``: episode ``k`` was truncated by the evaluation's step cap
    (``max_episode_steps``); its return is what it scored until then.
    With ``record_actions``: ``env_seeds[i]`` is the seed env ``i`` was first reset
    with; scored episode ``k`` was played by env ``env_index[k]`` (its episodes
    follow each other with unseeded autoresets) with the actions ``actions[k]``
    (int64, one per step: ``len(actions[k]) == lengths[k]``).
    """

    returns: list[float]
    lengths: list[int]
    cut: list[bool] = field(default_factory=list)
    env_seeds: list[int] = field(default_factory=list)
    env_index: list[int] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)

    def summary(self) -> dict:
        r = np.asarray(self.returns, dtype=np.float64)
        return {
            "mean_return": float(r.mean()),
            "std_return": float(r.std()),
            "min_return": float(r.min()),
            "max_return": float(r.max()),
            "episodes": int(r.size),
            "mean_length": float(np.mean(self.lengths)),
            "episodes_cut": int(sum(self.cut)),
            "returns": [float(x) for x in self.returns],
            "lengths": [int(x) for x in self.lengths],
        }


def eval_num_envs(episodes: int, cap: int = 20) -> int:
    """Envs of an evaluation: one per episode up to ``cap`` (CartPole's 20 episodes and MinAtar's or
    Atari's 10 all play at once, so an evaluation lasts one episode, not two)."""
    return max(1, min(episodes, cap))


def eval_seeds(seed: int, episodes: int, evaluation: int = 0) -> tuple[list[int], int]:
    """(one reset seed per evaluation env, the epsilon generator's seed) of evaluation number
    ``evaluation`` of run ``seed``: every evaluation plays fresh start states (runtime.STREAMS)."""
    n = eval_num_envs(episodes)
    drawn = seeds(seed, "eval_envs", n + 1, evaluation)
    return drawn[:n], drawn[n]


@torch.no_grad()
def evaluate(
    q_network: torch.nn.Module,
    envs: VectorEnv,
    spec: EnvSpec,
    episodes: int,
    env_seeds: list[int],
    policy_seed: int,
    epsilon: float,
    device: torch.device,
    record_actions: bool = False,
    max_episode_steps: int | None = None,
    on_episode: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Play ``episodes`` episodes with the epsilon-greedy policy of ``q_network``.

    envs: an evaluation vector env (:func:`make_eval_env`), reset here, env ``i`` with
    ``env_seeds[i]``; ``policy_seed`` seeds the epsilon draws. max_episode_steps: the
    evaluation's step cap the envs were made with (:func:`make_eval_env`); episodes
    truncated at it are counted as cut. record_actions: also keep what a replay of the
    scored episodes needs (see :class:`EvalResult`); it does not change what is played.
    on_episode(done, episodes): called after each scored episode (progress reports).
    """
    n = envs.num_envs
    quota = np.full(n, episodes // n) + (np.arange(n) < episodes % n)
    policy = EpsilonGreedy(spec.n_actions, policy_seed)
    frames, _ = envs.reset(seed=list(env_seeds))
    stacker = FrameStacker(n, spec.frame_stack, spec.frame_shape, spec.frame_dtype)
    obs = stacker.reset(frames)
    stats = EpisodeStats(n)
    done_count = np.zeros(n, dtype=np.int64)
    result = EvalResult([], [])
    playing: list[list[int]] = [[] for _ in range(n)]  # record_actions: each env's current episode
    if record_actions:
        result.env_seeds = list(env_seeds)
    # sync/async evaluation envs (gymnasium_vector_env(pausable=True)): one that has played its
    # quota stops stepping its game, and the network values only the envs still playing; every env
    # still draws its exploration, so the draws and the scored episodes are those of envs that all
    # play on
    pausable, paused = bool(getattr(envs.unwrapped, "pausable", False)), np.zeros(n, dtype=bool)

    def q_values() -> torch.Tensor:  # (n, A); a paused env's row is 0 (its action is not played)
        if not paused.any():
            return q_network(torch.from_numpy(obs).to(device))
        playing_envs = torch.from_numpy(~paused).to(device)
        q = q_network(torch.from_numpy(obs[~paused]).to(device))
        return q.new_zeros((n, q.shape[1])).index_put_((playing_envs,), q)

    was_training = q_network.training
    q_network.eval()
    try:
        while (done_count < quota).any():
            actions = policy(q_values, n, epsilon)
            if record_actions:
                for i in np.flatnonzero(done_count < quota):
                    playing[i].append(int(actions[i]))
            frames, rewards, terminated, truncated, infos = envs.step(actions)
            ended = terminated | truncated
            game_over = info_array(infos, "game_over", ended, ended)
            raw = info_array(infos, "raw_reward", rewards, ended)
            finished = stats.update(raw, game_over)
            for i, (ret, length) in zip(np.flatnonzero(game_over), finished):
                if done_count[i] < quota[i]:
                    result.returns.append(ret)
                    result.lengths.append(length)
                    result.cut.append(
                        bool(truncated[i]) and max_episode_steps is not None and length >= max_episode_steps
                    )
                    if record_actions:
                        result.env_index.append(int(i))
                        result.actions.append(np.asarray(playing[i], dtype=np.int64))
                        playing[i] = []
                    if on_episode is not None:
                        on_episode(len(result.returns), episodes)
                done_count[i] += 1
            full = done_count >= quota
            if pausable and (full & ~paused).any():  # envs that played their quota sit out the rest
                paused = full
                envs.unwrapped.set_attr("paused", paused.tolist())
            obs = stacker.step(frames, ended)
    finally:
        q_network.train(was_training)
    return result


def capped(cfg: EnvConfig, max_episode_steps: int | None) -> EnvConfig:
    """``cfg`` with its time limit lowered to the evaluation cap ``max_episode_steps`` (agent steps)."""
    if max_episode_steps is None:
        return cfg
    limit = max_episode_steps if cfg.max_episode_steps is None else min(cfg.max_episode_steps, max_episode_steps)
    return dataclasses.replace(cfg, max_episode_steps=int(limit))


def make_eval_env(cfg: EnvConfig, episodes: int, seed: int, max_episode_steps: int | None = None) -> VectorEnv:
    """The evaluation vector env: the full-game protocol, up to 20 envs (:func:`eval_num_envs`), episodes capped at
    ``max_episode_steps`` agent steps (besides ``cfg``'s own limits) when given."""
    return make_vector_env(capped(cfg, max_episode_steps), eval_num_envs(episodes), seed, training=False)


def every_10_s(log) -> Callable[[int, int], None]:
    """An ``on_episode`` callback logging ``evaluating: 3/10 episodes`` at most every 10 seconds."""
    import time

    last = [time.monotonic()]

    def note(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] >= 10.0:
            last[0] = now
            log.info("evaluating: %d/%d episodes", done, total)

    return note


def load_agent_network(state: dict, device: torch.device, source: str = "checkpoint", imports=()):
    """Rebuild the trained Q-network, its env config and spec from a checkpoint dict.

    The stored config is data (:func:`dqn_cli.config.check_stored`): modules it would import must
    be in ``imports``, given by the caller. Raises CheckpointError if the weights do not fit the
    network its config describes, ConfigError for a config that asks to run anything.
    """
    from dqn_cli.config import check_stored, to_train_config
    from dqn_cli.core.networks import build_network
    from dqn_cli.envs.vector import describe_env
    from dqn_cli.errors import CheckpointError

    if not isinstance(state, dict) or "config" not in state:
        raise CheckpointError(f"{source} has no config; it was not written by dqn train")
    check_stored(state["config"], source, imports)
    try:
        cfg = to_train_config(state["config"])
        weights = state["agent"]["q_network"]
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint has no usable config or weights ({err})") from None
    spec = describe_env(cfg.env)
    net = build_network(cfg.network, spec.obs_shape, spec.n_actions).to(device)
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise CheckpointError(
            f"checkpoint weights do not match the {cfg.network.name} network for {cfg.env.label} "
            f"its config describes ({first[1].strip() if len(first) > 1 else first[0]})"
        ) from None
    return net, cfg, spec


def eval_checkpoint(cfg, run_dir) -> dict:
    """``dqn eval``: play a checkpoint, print a summary and a JSON last line; return the summary.

    cfg: the eval command's config (checkpoint, episodes, seed, epsilon, video, device).
    """
    import json
    import logging
    from pathlib import Path

    from dqn_cli.config import validate_eval
    from dqn_cli.run.checkpoint import checkpoint_path, load_checkpoint
    from dqn_cli.runtime import resolve_device

    validate_eval(cfg)
    checkpoint = checkpoint_path(cfg.checkpoint, cfg.which)
    state = load_checkpoint(checkpoint)
    device = resolve_device(cfg.device)
    net, train_cfg, spec = load_agent_network(state, device, str(checkpoint), cfg.imports)
    epsilon = train_cfg.eval.epsilon if cfg.epsilon is None else float(cfg.epsilon)
    cap = train_cfg.eval.max_episode_steps if cfg.max_episode_steps is None else int(cfg.max_episode_steps)
    env_cfg = capped(train_cfg.env, cap)  # the video's replay envs get the same cap
    if cfg.video:
        from dqn_cli.run.video import check_video, record_episodes

        if env_cfg.vectorization in ("ale", "envpool"):
            # ale-py's and EnvPool's native vector envs seed their games their own way and cannot render:
            # play on Gymnasium's vector env of the same games, whose episodes a rendering env replays.
            env_cfg = dataclasses.replace(env_cfg, vectorization="async")
        check_video(env_cfg)  # a missing renderer fails now, not after the evaluation
    env_seeds, policy_seed = eval_seeds(cfg.seed, cfg.episodes)
    envs = make_eval_env(env_cfg, cfg.episodes, policy_seed)
    log = logging.getLogger("dqn")
    log.info("evaluating %s: %d episodes%s", checkpoint, cfg.episodes, f" of at most {cap} steps" if cap else "")
    try:
        result = evaluate(
            net,
            envs,
            spec,
            cfg.episodes,
            env_seeds,
            policy_seed,
            epsilon,
            device,
            record_actions=bool(cfg.video),
            max_episode_steps=cap,
            on_episode=every_10_s(log),
        )
    finally:
        envs.close()
    summary = result.summary()
    summary.update(
        checkpoint=str(checkpoint),
        env_steps=int(state.get("counters", {}).get("env_steps", 0)),
        epsilon=epsilon,
        seed=int(cfg.seed),
        max_episode_steps=cap,
    )
    if cfg.video:  # the scored episodes themselves, replayed on a rendering env
        summary["video"] = str(record_episodes(env_cfg, Path(run_dir), result))
    name = spec.label
    log.info("evaluated %s (%d env steps) on %s", checkpoint, summary["env_steps"], name)
    print(
        f"{name}: {summary['episodes']} episodes, return {summary['mean_return']:.2f} +- {summary['std_return']:.2f} "
        f"(min {summary['min_return']:.2f}, max {summary['max_return']:.2f}), mean length {summary['mean_length']:.1f}"
        + (f", {summary['episodes_cut']} cut at {cap} steps" if summary["episodes_cut"] else "")
    )
    atomic_write_text(Path(run_dir) / "eval.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return summary
