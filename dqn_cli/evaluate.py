"""Evaluation rollouts: the (epsilon-)greedy policy on the evaluation protocol.

Episodes run in parallel over a vector env; each env plays a fixed quota of
episodes, so short episodes are not over-represented (taking the first N to
finish would bias the mean towards failures). For Atari the evaluation
protocol is the full game with raw rewards (no episodic life, no clipping).

``evaluate(..., record_actions=True)`` also keeps, for each scored episode,
its env's slot and the actions it played: with the slot's reset seed that is
all it takes to replay the very same episode on a rendering env
(:func:`dqn_cli.video.record_episodes`, ``dqn eval ... video=true``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from dqn_cli.config import EnvConfig
from dqn_cli.envs import EpisodeStats, FrameStacker, EnvSpec, info_array, make_vector_env


@dataclass
class EvalResult:
    """Scored episodes, in the order they finished.

    With ``record_actions``: ``env_seeds[i]`` is the seed env ``i`` was first reset
    with; scored episode ``k`` was played by env ``env_index[k]`` (its episodes
    follow each other with unseeded autoresets) with the actions ``actions[k]``
    (int64, one per step: ``len(actions[k]) == lengths[k]``).
    """

    returns: list[float]
    lengths: list[int]
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
        }


def eval_num_envs(episodes: int, cap: int = 8) -> int:
    return max(1, min(episodes, cap))


@torch.no_grad()
def evaluate(
    q_network: torch.nn.Module,
    envs: VectorEnv,
    spec: EnvSpec,
    episodes: int,
    seed: int,
    epsilon: float,
    device: torch.device,
    record_actions: bool = False,
) -> EvalResult:
    """Play ``episodes`` episodes with the epsilon-greedy policy of ``q_network``.

    envs: an evaluation vector env (``make_vector_env(..., training=False)``), reset here with ``seed``
    (env ``i`` with ``seed + i``). record_actions: also keep what a replay of the scored
    episodes needs (see :class:`EvalResult`); it does not change what is played.
    """
    n = envs.num_envs
    quota = np.full(n, episodes // n) + (np.arange(n) < episodes % n)
    rng = np.random.default_rng(seed)
    frames, _ = envs.reset(seed=[seed + i for i in range(n)])
    stacker = FrameStacker(n, spec.frame_stack, spec.frame_shape, spec.frame_dtype)
    obs = stacker.reset(frames)
    stats = EpisodeStats(n)
    done_count = np.zeros(n, dtype=np.int64)
    result = EvalResult([], [])
    playing: list[list[int]] = [[] for _ in range(n)]  # record_actions: each env's current episode
    if record_actions:
        result.env_seeds = [seed + i for i in range(n)]
    was_training = q_network.training
    q_network.eval()
    try:
        while (done_count < quota).any():
            q = q_network(torch.from_numpy(obs).to(device))
            actions = q.argmax(dim=1).cpu().numpy()
            explore = rng.random(n) < epsilon
            if explore.any():
                actions[explore] = rng.integers(spec.n_actions, size=int(explore.sum()))
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
                    if record_actions:
                        result.env_index.append(int(i))
                        result.actions.append(np.asarray(playing[i], dtype=np.int64))
                        playing[i] = []
                done_count[i] += 1
            obs = stacker.step(frames, ended)
    finally:
        q_network.train(was_training)
    return result


def make_eval_env(cfg: EnvConfig, episodes: int, seed: int) -> VectorEnv:
    """The evaluation vector env: the full-game protocol, up to 8 envs."""
    return make_vector_env(cfg, eval_num_envs(episodes), seed, training=False)


def load_agent_network(state: dict, device: torch.device):
    """Rebuild the trained Q-network, its env config and spec from a checkpoint dict.

    Raises CheckpointError if the weights do not fit the network its config describes.
    """
    from dqn_cli.checkpoint import CheckpointError
    from dqn_cli.config import to_train_config
    from dqn_cli.envs import describe_env
    from dqn_cli.networks import build_network

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
            f"checkpoint weights do not match the {cfg.network.name} network for {cfg.env.id if cfg.env.kind == 'classic' else cfg.env.game} "
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

    from dqn_cli.checkpoint import load_checkpoint
    from dqn_cli.config import ConfigError, check_device
    from dqn_cli.trainer import resolve_device

    if not cfg.checkpoint:
        raise ConfigError("checkpoint= is required: dqn eval checkpoint=outputs/DATE/TIME_cartpole/checkpoints/last.pt")
    if cfg.episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {cfg.episodes}")
    if cfg.epsilon is not None and not 0 <= cfg.epsilon <= 1:
        raise ConfigError(f"epsilon must be in [0, 1], got {cfg.epsilon}")
    check_device(cfg.device)
    state = load_checkpoint(cfg.checkpoint)
    device = resolve_device(cfg.device)
    net, train_cfg, spec = load_agent_network(state, device)
    epsilon = train_cfg.eval.epsilon if cfg.epsilon is None else float(cfg.epsilon)
    env_cfg = train_cfg.env
    if cfg.video:
        from dqn_cli.video import check_video, record_episodes

        if env_cfg.vectorization == "ale":
            # ale-py's native vector env seeds its games its own way and cannot render:
            # play on Gymnasium's vector env of the same games, whose episodes a rendering env replays.
            env_cfg = dataclasses.replace(env_cfg, vectorization="async")
        check_video(env_cfg)  # a missing renderer fails now, not after the evaluation
    envs = make_eval_env(env_cfg, cfg.episodes, cfg.seed)
    try:
        result = evaluate(net, envs, spec, cfg.episodes, cfg.seed, epsilon, device, record_actions=bool(cfg.video))
    finally:
        envs.close()
    summary = result.summary()
    summary.update(checkpoint=str(Path(cfg.checkpoint)), env_steps=int(state.get("counters", {}).get("env_steps", 0)),
                   epsilon=epsilon, seed=int(cfg.seed))  # fmt: skip
    if cfg.video:  # the scored episodes themselves, replayed on a rendering env
        summary["video"] = str(record_episodes(env_cfg, Path(run_dir), result))
    name = train_cfg.env.id if train_cfg.env.kind == "classic" else train_cfg.env.game
    logging.getLogger("dqn").info("evaluated %s (%d env steps) on %s", cfg.checkpoint, summary["env_steps"], name)
    print(
        f"{name}: {summary['episodes']} episodes, return {summary['mean_return']:.2f} +- {summary['std_return']:.2f} "
        f"(min {summary['min_return']:.2f}, max {summary['max_return']:.2f}), mean length {summary['mean_length']:.1f}"
    )
    (Path(run_dir) / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    return summary
