"""Eval videos: `dqn eval ... video=true` writes an mp4 of rendered frames; `eval.video=true`
puts an animated GIF of an eval episode into TensorBoard at each evaluation."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import last_json_line, run_dqn, train_run
from dqn_cli import video
from dqn_cli.config import ConfigError, TrainConfig
from dqn_cli.envs import describe_env
from dqn_cli.networks import build_network

CARTPOLE_SCREEN = (400, 600, 3)  # Gymnasium's CartPole render (H, W, 3)
BREAKOUT_SCREEN = (210, 160, 3)  # the ALE screen

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
def test_dqn_eval_video_writes_an_mp4_of_rendered_frames(video_run, tmp_path):
    eval_dir = tmp_path / "eval"
    proc = run_dqn("eval", f"checkpoint={video_run / 'checkpoints' / 'last.pt'}", "episodes=2", "video=true",
                   f"hydra.run.dir={eval_dir}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = last_json_line(proc.stdout)
    path = Path(result["video"])
    assert path.is_file() and path.parent == eval_dir and path.suffix == ".mp4"
    assert not list(eval_dir.glob(".*partial*")), "the partial file was left behind"
    frames = read_mp4(path)
    assert len(frames) > 1
    assert frames[0].shape == CARTPOLE_SCREEN  # the real screen, not the agent's input
    assert frames[0].dtype == np.uint8
    assert len({f.tobytes() for f in frames[:10]}) > 1, "the video does not move"
    assert len(frames) <= 41  # one episode (the default) of at most 40 steps, plus the reset screen


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
    cfg = TrainConfig()
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
    cfg = TrainConfig()
    cfg.env = dataclasses.replace(cfg.env, name="breakout", kind="atari", game="Breakout", frame_stack=4)
    cfg.network = dataclasses.replace(cfg.network, name="nature_cnn")
    net, spec = _net(cfg)
    assert spec.obs_shape == (4, 84, 84)
    frames = video.record_episode_frames(net, cfg.env, spec, 1, 0.5, torch.device("cpu"), max_frames=12)
    assert len(frames) == 12
    assert all(f.shape == BREAKOUT_SCREEN and f.dtype == np.uint8 for f in frames)
    assert frames.fps == pytest.approx(60 / cfg.env.frame_skip)


def test_record_episodes_writes_every_episode_and_pads_odd_sizes(tmp_path, monkeypatch):
    cfg = TrainConfig()
    cfg.env = dataclasses.replace(cfg.env, max_episode_steps=6)
    net, spec = _net(cfg)
    monkeypatch.setattr(video, "_render", lambda env: np.full((41, 63, 3), 200, dtype=np.uint8))
    path = video.record_episodes(net, cfg.env, spec, tmp_path, 5, 0.0, torch.device("cpu"), episodes=3)
    assert path == tmp_path / "eval.mp4"
    frames = read_mp4(path)
    assert len(frames) == 3 * 7  # 3 episodes of 6 steps, the reset screen included
    assert frames[0].shape == (42, 64, 3)  # padded to even for yuv420p


def test_a_missing_renderer_skips_the_training_video_and_fails_eval_clearly(tmp_path, monkeypatch):
    def no_pygame(env):
        raise gym.error.DependencyNotInstalled("pygame is not installed")

    cfg = TrainConfig()
    cfg.env = dataclasses.replace(cfg.env, id="Acrobot-v1", max_episode_steps=5)
    net, spec = _net(cfg)
    monkeypatch.setattr(gym.Wrapper, "render", no_pygame)
    monkeypatch.setattr(video, "_warned", set())
    assert video.record_episode_frames(net, cfg.env, spec, 1, 0.0, torch.device("cpu")) == []
    with pytest.raises(ConfigError, match="pygame"):
        video.record_episode_frames(net, cfg.env, spec, 1, 0.0, torch.device("cpu"), strict=True)
    with pytest.raises(ConfigError, match="pygame"):
        video.record_episodes(net, cfg.env, spec, tmp_path, 1, 0.0, torch.device("cpu"))
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="pygame"):
        video.check_video(cfg.env)
