"""Eval videos: `dqn eval ... video=true` writes an mp4 of the scored episodes' rendered frames;
`eval.video=true` puts an animated GIF of an eval episode into TensorBoard at each evaluation."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from helpers import ROOT, compose, last_json_line, run_dqn, train_run
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dqn_cli.config import ConfigError, TrainConfig
from dqn_cli.core.networks import build_network
from dqn_cli.envs.vector import describe_env, make_vector_env
from dqn_cli.run import video
from dqn_cli.run.evaluate import evaluate

CARTPOLE_SCREEN = (400, 600, 3)  # Gymnasium's CartPole render (H, W, 3)
BREAKOUT_SCREEN = (210, 160, 3)  # the ALE screen
XDG_NOISE = "XDG_RUNTIME_DIR"  # SDL's "error: XDG_RUNTIME_DIR is invalid or not set in the environment."

TINY_VIDEO_RUN = [
    "total_steps=300",
    "learning_starts=100",
    "batch_size=16",
    "replay.capacity=1000",
    "network.hidden_sizes=[16]",
    "eval.episodes=1",
    "eval.every=200",
    "env.max_episode_steps=40",
    "log_every=100",
    "progress=log",
    "eval.video=true",
]


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> Path:
    """A tiny CartPole run through the real entrypoint, with eval videos in TensorBoard."""
    return train_run(tmp_path_factory, "video", TINY_VIDEO_RUN)


def read_mp4(path: Path) -> list[np.ndarray]:
    reader = imageio.get_reader(path)
    try:
        return [np.asarray(frame) for frame in reader]
    finally:
        reader.close()


def headless(monkeypatch) -> None:
    """A headless machine as SDL sees it: no XDG_RUNTIME_DIR, no SDL driver chosen by the user."""
    for name in ("XDG_RUNTIME_DIR", "SDL_VIDEODRIVER", "SDL_AUDIODRIVER"):
        monkeypatch.delenv(name, raising=False)


def gif_frames(data: bytes) -> list[np.ndarray]:
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF"
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("RGB")))
    return frames


# ------------------------------------------------------------ end to end
@pytest.mark.slow
def test_dqn_eval_video_writes_an_mp4_of_the_scored_episodes(video_run, tmp_path, monkeypatch):
    headless(monkeypatch)
    eval_dir = tmp_path / "eval"
    proc = run_dqn(
        "eval",
        f"checkpoint={video_run / 'checkpoints' / 'last.pt'}",
        "episodes=2",
        "video=true",
        "epsilon=0.5",
        "seed=3",
        f"hydra.run.dir={eval_dir}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert XDG_NOISE not in proc.stderr, proc.stderr[-3000:]
    result = last_json_line(proc.stdout)
    path = Path(result["video"])
    assert path.is_file() and path.parent == eval_dir and path.suffix == ".mp4"
    assert not list(eval_dir.glob(".*partial*")), "the partial file was left behind"
    frames = read_mp4(path)
    assert frames[0].shape == CARTPOLE_SCREEN  # the real screen, not the agent's input
    assert frames[0].dtype == np.uint8
    assert len({f.tobytes() for f in frames[:10]}) > 1, "the video does not move"
    # every scored episode, each its reset screen and one frame per step
    assert result["episodes"] == 2
    assert len(frames) == round(result["mean_length"] * 2) + 2


@pytest.mark.slow
def test_training_with_eval_video_puts_gifs_in_tensorboard(video_run):
    acc = EventAccumulator(str(video_run / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert "eval/video" in acc.Tags()["images"]
    events = acc.Images("eval/video")
    assert [e.step for e in events] == [200, 300]  # each evaluation, against env steps
    for event in events:
        frames = gif_frames(event.encoded_image_string)
        assert len(frames) > 1, "the GIF is not animated"
        assert frames[0].shape == (event.height, event.width, 3)
        assert event.width <= 320 and event.height > 84  # downscaled screen, not the 84x84 input
        assert len(event.encoded_image_string) < 2_000_000  # the event file stays small


# ------------------------------------------------------------- the pieces
def _net(cfg: TrainConfig):
    spec = describe_env(cfg.env)
    torch.manual_seed(0)
    return build_network(cfg.network, spec.obs_shape, spec.n_actions), spec


def test_record_episode_frames_cartpole_is_one_rendered_episode():
    cfg = compose()
    cfg.env = dataclasses.replace(cfg.env, max_episode_steps=30)
    net, spec = _net(cfg)
    frames = video.record_episode_frames(net, cfg.env, spec, seed=3, epsilon=0.0, device=torch.device("cpu"))
    assert 2 <= len(frames) <= 31  # the reset screen and one per step of one episode (time limit 30)
    assert all(f.shape == CARTPOLE_SCREEN and f.dtype == np.uint8 for f in frames)
    assert frames.fps == 50  # CartPole's render_fps: real time
    again = video.record_episode_frames(net, cfg.env, spec, seed=3, epsilon=0.0, device=torch.device("cpu"))
    assert len(again) == len(frames) and all(np.array_equal(a, b) for a, b in zip(frames, again))  # seeded
    capped = video.record_episode_frames(net, cfg.env, spec, 3, 0.0, torch.device("cpu"), max_frames=5)
    assert len(capped) == 5
    assert net.training  # the network's mode is restored


def test_record_episode_frames_breakout_is_the_rgb_screen():
    pytest.importorskip("ale_py")
    cfg = compose()
    cfg.env = dataclasses.replace(cfg.env, name="breakout", kind="atari", game="Breakout", frame_stack=4)
    cfg.network = dataclasses.replace(cfg.network, name="nature_cnn")
    net, spec = _net(cfg)
    assert spec.obs_shape == (4, 84, 84)
    frames = video.record_episode_frames(net, cfg.env, spec, 1, 0.5, torch.device("cpu"), max_frames=12)
    assert len(frames) == 12
    assert all(f.shape == BREAKOUT_SCREEN and f.dtype == np.uint8 for f in frames)
    assert frames.fps == pytest.approx(60 / cfg.env.frame_skip)


class _Uniform(torch.nn.Module):
    """Equal Q-values for every action (a stand-in network when epsilon=1 decides)."""

    def __init__(self, n_actions: int):
        super().__init__()
        self.n_actions = n_actions

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(obs.shape[0], self.n_actions)


def _scored(cfg: TrainConfig, net, spec, episodes: int, num_envs: int, seed: int, epsilon: float, **kw):
    envs = make_vector_env(cfg.env, num_envs, seed, training=False)
    try:
        env_seeds = [seed + i for i in range(num_envs)]  # plain seeds, so the test can name them
        return evaluate(net, envs, spec, episodes, env_seeds, seed, epsilon, torch.device("cpu"), **kw)
    finally:
        envs.close()


def _replayed(env_cfg, result) -> tuple[list[int], np.ndarray]:
    """Frames per replayed episode, and the replay's first frame."""
    counts, first = [0] * len(result.lengths), None
    for k, frame in video.replay_episodes(env_cfg, result):
        counts[k] += 1
        first = frame if first is None else first
    return counts, first


def test_the_replay_is_the_scored_episodes_cartpole():
    cfg = compose()
    cfg.env = dataclasses.replace(cfg.env, max_episode_steps=60)
    net, spec = _net(cfg)
    # 2 envs for 5 episodes: later episodes of an env come from its unseeded autoresets
    result = _scored(cfg, net, spec, 5, 2, seed=3, epsilon=0.5, record_actions=True)
    plain = _scored(cfg, net, spec, 5, 2, seed=3, epsilon=0.5)
    assert (plain.returns, plain.lengths) == (result.returns, result.lengths)  # recording changes nothing
    assert sorted(result.env_index) == [0, 0, 0, 1, 1] and result.env_seeds == [3, 4]
    assert [len(a) for a in result.actions] == result.lengths
    assert len(set(result.lengths)) > 1  # episodes of different lengths, so counts are telling
    counts, first = _replayed(cfg.env, result)
    assert counts == [n + 1 for n in result.lengths]  # the reset screen, then one per step
    assert first.shape == CARTPOLE_SCREEN
    assert net.training  # evaluate restores the network's mode


def test_the_replay_is_the_scored_episodes_breakout():
    pytest.importorskip("ale_py")
    cfg = compose()
    cfg.env = dataclasses.replace(
        cfg.env,
        name="breakout",
        kind="atari",
        game="Breakout",
        frame_stack=4,
        sticky_action_prob=0.25,
        max_episode_steps=250,
    )
    spec = describe_env(cfg.env)
    net = _Uniform(spec.n_actions)  # epsilon=1: random play, no CNN to run on a busy CPU
    result = _scored(cfg, net, spec, 3, 2, seed=1, epsilon=1.0, record_actions=True)
    assert len(result.lengths) == 3 and min(result.lengths) < 250  # a game over, not only time limits
    counts, first = _replayed(cfg.env, result)  # raises ReplayDiverged unless lengths and returns match
    assert counts == [n + 1 for n in result.lengths]
    assert first.shape == BREAKOUT_SCREEN


def test_a_replay_that_does_not_end_as_scored_is_refused():
    cfg = compose()
    cfg.env = dataclasses.replace(cfg.env, max_episode_steps=30)
    net, spec = _net(cfg)
    result = _scored(cfg, net, spec, 1, 1, seed=0, epsilon=0.5, record_actions=True)
    result.actions[0] = result.actions[0][:-1]
    with pytest.raises(video.ReplayDiverged, match="did not end"):
        _replayed(cfg.env, result)
    with pytest.raises(ValueError, match="record_actions"):
        _replayed(cfg.env, _scored(cfg, net, spec, 1, 1, seed=0, epsilon=0.5))


def test_record_episodes_writes_every_episode_and_pads_odd_sizes(tmp_path, monkeypatch):
    cfg = compose()
    cfg.env = dataclasses.replace(cfg.env, max_episode_steps=6)
    net, spec = _net(cfg)
    result = _scored(cfg, net, spec, 3, 3, seed=5, epsilon=0.0, record_actions=True)
    assert result.lengths == [6, 6, 6]
    monkeypatch.setattr(video, "_render", lambda env: np.full((41, 63, 3), 200, dtype=np.uint8))
    path = video.record_episodes(cfg.env, tmp_path, result)
    assert path == tmp_path / "eval.mp4"
    frames = read_mp4(path)
    assert len(frames) == 3 * 7  # 3 episodes of 6 steps, each with its reset screen
    assert frames[0].shape == (42, 64, 3)  # padded to even for yuv420p


def test_rendering_prints_no_sdl_noise_on_a_headless_machine(monkeypatch):
    headless(monkeypatch)
    code = (
        "import torch; from dqn_cli.run import video; from dqn_cli.config import TrainConfig;"
        "from dqn_cli.envs.vector import describe_env; from dqn_cli.core.networks import build_network;"
        "cfg = TrainConfig(); spec = describe_env(cfg.env);"
        "net = build_network(cfg.network, spec.obs_shape, spec.n_actions);"
        "frames = video.record_episode_frames(net, cfg.env, spec, 0, 0.0, torch.device('cpu'), max_frames=3);"
        "print(len(frames))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "3"
    assert XDG_NOISE not in proc.stderr, proc.stderr


def test_a_missing_renderer_skips_the_training_video_and_fails_eval_clearly(tmp_path, monkeypatch):
    def no_pygame(env):
        raise gym.error.DependencyNotInstalled("pygame is not installed")

    cfg = compose()
    cfg.env = dataclasses.replace(cfg.env, id="Acrobot-v1", max_episode_steps=5)
    net, spec = _net(cfg)
    monkeypatch.setattr(gym.Wrapper, "render", no_pygame)
    monkeypatch.setattr(video, "_warned", set())
    assert video.record_episode_frames(net, cfg.env, spec, 1, 0.0, torch.device("cpu")) == []
    with pytest.raises(ConfigError, match="pygame"):
        video.record_episode_frames(net, cfg.env, spec, 1, 0.0, torch.device("cpu"), strict=True)
    result = _scored(cfg, net, spec, 1, 1, seed=1, epsilon=0.0, record_actions=True)
    with pytest.raises(ConfigError, match="pygame"):
        video.record_episodes(cfg.env, tmp_path, result)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="pygame"):
        video.check_video(cfg.env)
