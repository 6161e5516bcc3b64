"""Videos of evaluation episodes: rgb frames from the env's own renderer.

The agent plays the evaluation protocol (``training=False``: for Atari the
full game with raw rewards) on one env made with ``render_mode="rgb_array"``;
each frame is the real screen from ``env.render()`` (CartPole 400x600, Atari
210x160), not the network's 84x84 grayscale input.

* :func:`record_episode_frames` plays one episode and returns its frames
  (the trainer sends them to TensorBoard at each evaluation, ``eval.video=true``);
* :func:`record_episodes` writes the episodes that ``dqn eval`` scored to
  ``RUN_DIR/eval.mp4`` (``dqn eval ... video=true``), streaming frames to
  ffmpeg (libx264).

The mp4 is the scored episodes themselves, not new ones: the evaluation
(:func:`dqn_cli.run.evaluate.evaluate` with ``record_actions=True``) keeps each
scored episode's env slot and actions, and :func:`record_episodes` replays
them on rendering envs, one per slot, reset as the vector env's were (slot
``i`` first with its seed ``env_seeds[i]``, then unseeded autoresets), so every env
plays the same game again. Each replayed episode must end exactly at its last
recorded action with the scored return, else :class:`ReplayDiverged`.
(ale-py's native ``ale`` backend neither renders nor seeds games as Gymnasium
does: ``dqn eval ... video=true`` of such a run is scored on ``async``.)

Frame-count rule of the mp4: the scored episodes in the order they finished
(the order of their returns), each as its reset screen plus one frame per
step, so ``frames == sum(lengths) + episodes``.

Classic-control envs draw with pygame (a dependency of dqn), headless:
``SDL_VIDEODRIVER`` and ``SDL_AUDIODRIVER`` default to ``dummy`` before a
rendering env is made (no display is needed for ``rgb_array``, and SDL stays
quiet where ``XDG_RUNTIME_DIR`` is unset). Atari frames come from the emulator.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from dqn_cli.config import EnvConfig
from dqn_cli.core.agent import EpsilonGreedy
from dqn_cli.envs.spec import EnvSpec
from dqn_cli.envs.vector import FrameStacker, env_factory
from dqn_cli.errors import ReplayDiverged, VideoUnavailable
from dqn_cli.files import atomic_path

log = logging.getLogger("dqn")

VIDEO_NAME = "eval.mp4"
DEFAULT_FPS = 30
_warned: set[str] = set()  # envs whose missing renderer was reported (once per process)


class EpisodeFrames(list):
    """A list of rgb frames (H, W, 3) uint8 that knows its real-time playback rate ``fps``."""

    def __init__(self, frames=(), fps: float = DEFAULT_FPS):
        super().__init__(frames)
        self.fps = float(fps)


# -------------------------------------------------------------- rendering
def _env_name(cfg: EnvConfig) -> str:
    return cfg.label


def _make_render_env(env_cfg: EnvConfig):
    """One evaluation-protocol env with ``render_mode="rgb_array"``; SDL (pygame) made headless first.

    SDL picks its drivers when pygame initialises, at the first render; left to
    probe for a display it prints "error: XDG_RUNTIME_DIR is invalid or not set
    in the environment." to stderr where that is unset. An explicit setting wins.
    """
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    return env_factory(env_cfg, render_mode="rgb_array")()


def _render(env) -> np.ndarray:
    """One rgb frame (H, W, 3) uint8 of ``env``'s current state.

    Raises VideoUnavailable when the env's renderer cannot run here.
    """
    import gymnasium as gym

    try:
        frame = env.render()
    except gym.error.DependencyNotInstalled as err:
        raise VideoUnavailable(
            f"cannot render {env.spec.id if env.spec else type(env.unwrapped).__name__} for a video: {err}"
        ) from None
    if frame is None:
        raise VideoUnavailable(f"{type(env.unwrapped).__name__}.render() returned no frame (render_mode rgb_array)")
    frame = np.asarray(frame)
    if frame.ndim == 2:  # grayscale renderer
        frame = np.repeat(frame[..., None], 3, axis=2)
    return np.ascontiguousarray(frame[..., :3], dtype=np.uint8)


def video_fps(env) -> float:
    """Real-time playback rate of one frame per agent step: the env's ``metadata["render_fps"]``
    (Atari's env sets it to 60 emulator frames/s over ``frame_skip``), else 30."""
    fps = (getattr(env, "metadata", None) or {}).get("render_fps")
    return float(fps) if fps else float(DEFAULT_FPS)


def check_video(env_cfg: EnvConfig) -> None:
    """Raise VideoUnavailable (a ConfigError) now if ``env_cfg``'s env cannot render frames.

    Cheap (one env in this process); meant for up-front validation of ``video=true``.
    """
    env = _make_render_env(env_cfg)
    try:
        env.reset(seed=0)
        _render(env)
    finally:
        env.close()


# ----------------------------------------------------------------- playing
def _play(
    q_network: torch.nn.Module, env, spec: EnvSpec, seed: int, epsilon: float, device: torch.device, max_frames: int
) -> Iterator[np.ndarray]:
    """Play one episode on ``env`` (reset with ``seed``); yield its rendered frames:
    the first screen, then one per agent step, at most ``max_frames`` in all."""
    frame, _ = env.reset(seed=int(seed))
    policy = EpsilonGreedy(spec.n_actions, seed)
    stacker = FrameStacker(1, spec.frame_stack, spec.frame_shape, spec.frame_dtype)
    obs = stacker.reset(np.asarray(frame, dtype=spec.frame_dtype)[None])
    yield _render(env)
    new_episode = np.zeros(1, dtype=bool)
    for _ in range(max_frames - 1):
        action = int(policy(lambda: q_network(torch.from_numpy(obs).to(device)), 1, epsilon)[0])
        frame, _, terminated, truncated, _ = env.step(action)
        yield _render(env)
        if terminated or truncated:
            return
        obs = stacker.step(np.asarray(frame, dtype=spec.frame_dtype)[None], new_episode)


class _EvalMode:
    """``with _EvalMode(net):`` eval mode and no autograd, the previous mode restored after."""

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.grad = torch.no_grad()

    def __enter__(self):
        self.was_training = self.net.training
        self.net.eval()
        self.grad.__enter__()
        return self.net

    def __exit__(self, *exc):
        self.grad.__exit__(*exc)
        self.net.train(self.was_training)


def record_episode_frames(
    q_network: torch.nn.Module,
    env_cfg: EnvConfig,
    spec: EnvSpec,
    seed: int,
    epsilon: float,
    device: torch.device,
    max_frames: int = 2000,
    strict: bool = False,
) -> EpisodeFrames:
    """Play one evaluation-protocol episode with the epsilon-greedy policy; return its rgb frames.

    Returns: up to ``max_frames`` frames, each (H, W, 3) uint8 from ``env.render()``,
    as a list whose ``fps`` attribute is the real-time rate (:func:`video_fps`).
    When the env cannot render here (e.g. no pygame for a classic-control env
    other than CartPole) it logs a warning once and returns [] (a training run
    goes on without its video); ``strict=True`` raises VideoUnavailable instead.
    """
    env = _make_render_env(env_cfg)
    try:
        with _EvalMode(q_network):
            frames = _play(q_network, env, spec, seed, epsilon, device, max_frames)
            return EpisodeFrames(frames, fps=video_fps(env))
    except VideoUnavailable as err:
        if strict:
            raise
        name = _env_name(env_cfg)
        if name not in _warned:
            _warned.add(name)
            log.warning("no eval video: %s", err)
        return EpisodeFrames()
    finally:
        env.close()


def replay_episodes(env_cfg: EnvConfig, result) -> Iterator[tuple[int, np.ndarray]]:
    """Replay the scored episodes of ``result`` on rendering envs; yield ``(k, frame)`` pairs.

    result: a :class:`dqn_cli.run.evaluate.EvalResult` of ``evaluate(..., record_actions=True)``
    on an env made from ``env_cfg`` (any ``sync``/``async`` backend: they play the
    same games). Episode ``k`` (the ``k``-th scored) yields ``result.lengths[k] + 1``
    frames: its reset screen, then one per step. Raises ReplayDiverged if an
    episode does not end at its last action with its scored return,
    VideoUnavailable if the env cannot render here.
    """
    if len(result.actions) != len(result.returns) or not result.env_seeds:
        raise ValueError("the evaluation did not record its actions: evaluate(..., record_actions=True)")
    envs: dict = {}  # env slot -> its rendering env, kept between its episodes
    try:
        for k, (slot, actions) in enumerate(zip(result.env_index, result.actions)):
            env = envs.get(slot)
            if env is None:
                env = envs[slot] = _make_render_env(env_cfg)
                env.reset(seed=int(result.env_seeds[slot]))
            else:
                env.reset()  # the vector env's autoreset: unseeded, the env's own RNG goes on
            yield k, _render(env)
            total, last = 0.0, len(actions) - 1
            for t, action in enumerate(actions):
                _, reward, terminated, truncated, _ = env.step(int(action))
                total += float(reward)
                yield k, _render(env)
                if bool(terminated or truncated) != (t == last):
                    raise ReplayDiverged(
                        f"replayed episode {k} (env {slot}) {'ended' if t < last else 'did not end'} at step {t + 1}; "
                        f"it was scored with {len(actions)} steps"
                    )
            if not np.isclose(total, result.returns[k], rtol=1e-9, atol=1e-9):
                raise ReplayDiverged(
                    f"replayed episode {k} (env {slot}) returned {total}, it was scored {result.returns[k]}"
                )
    finally:
        for env in envs.values():
            env.close()


def record_episodes(env_cfg: EnvConfig, run_dir: Path, result) -> Path:
    """Write the scored episodes of ``result`` (``evaluate(..., record_actions=True)``),
    one after the other in the order they were scored, to ``run_dir/eval.mp4``
    (H.264, real-time fps); return its path.

    The mp4 has ``sum(result.lengths) + len(result.lengths)`` frames: each episode's
    reset screen and one frame per step (:func:`replay_episodes`).
    Frames stream to ffmpeg, so a long Atari game needs no memory for its frames.
    Odd frame sizes are padded to even (yuv420p).
    The file appears complete or not at all (written beside it, then renamed).
    Raises VideoUnavailable (a ConfigError) if the env cannot render here,
    ReplayDiverged if a replay does not reproduce its scored episode.
    """
    import imageio.v2 as imageio

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / VIDEO_NAME
    frames = 0
    with atomic_path(path, suffix=path.suffix) as partial:  # ffmpeg picks the container by extension
        writer = None
        try:
            for _, frame in replay_episodes(env_cfg, result):
                if writer is None:
                    writer = imageio.get_writer(
                        partial,
                        format="FFMPEG",
                        mode="I",
                        fps=_fps(env_cfg),
                        codec="libx264",
                        pixelformat="yuv420p",
                        quality=8,
                        macro_block_size=1,
                    )
                writer.append_data(_even(frame))
                frames += 1
            if writer is None:
                raise ValueError("no episodes to record")
        finally:
            if writer is not None:
                writer.close()
    log.info("wrote %s (%d episode(s), %d frames)", path, len(result.lengths), frames)
    return path


def _fps(env_cfg: EnvConfig) -> float:
    """:func:`video_fps` of ``env_cfg``'s env (made, not rendered, to read its metadata)."""
    env = env_factory(env_cfg)()
    try:
        return video_fps(env)
    finally:
        env.close()


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad (edge rows/columns repeated) to even height and width, as yuv420p needs."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
