"""MinAtar (Young & Tian 2019): the five games through the real `dqn` entrypoint, channels-first
uint8 frames stored compactly, the paper's network, and videos drawn from the channels."""

from __future__ import annotations

import json
import sys

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from helpers import compose, last_json_line, run_dqn

from dqn_cli.config import ConfigError, EnvConfig, NetworkConfig, validate
from dqn_cli.core.networks import build_network
from dqn_cli.envs import minatar
from dqn_cli.envs.vector import describe_env, make_vector_env

CHANNELS = {"Asterix": 4, "Breakout": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}
MINIMAL_ACTIONS = {"Asterix": 5, "Breakout": 3, "Freeway": 3, "Seaquest": 6, "SpaceInvaders": 4}

TINY_MINATAR = [
    "env=minatar",
    "total_steps=600",
    "learning_starts=200",
    "batch_size=16",
    "train_every=2",
    "replay.capacity=2000",
    "eval.episodes=2",
    "eval.every=300",
    "eval.max_episode_steps=100",
    "checkpoint.every=300",
    "log_every=200",
    "progress=log",
    "env.num_envs=2",
]


def minatar_cfg(game: str, **kw) -> EnvConfig:
    return EnvConfig(
        **{
            "name": "minatar",
            "kind": "minatar",
            "game": game,
            "sticky_action_prob": 0.1,
            "full_action_space": True,
            **kw,
        }
    )


@pytest.mark.parametrize(
    "spelling,game",
    [
        ("breakout", "Breakout"),
        ("SPACE_INVADERS", "SpaceInvaders"),
        ("space-invaders", "SpaceInvaders"),
        ("Seaquest", "Seaquest"),
    ],
)
def test_game_names_in_any_spelling(spelling, game):
    assert minatar.resolve_game(spelling) == game


def test_unknown_game_is_refused_with_suggestions():
    with pytest.raises(ConfigError, match="did you mean Breakout.*Asterix, Breakout, Freeway, Seaquest, SpaceInvaders"):
        minatar.resolve_game("breakot")


@pytest.mark.parametrize("game", sorted(CHANNELS))
def test_every_game_is_channels_first_uint8_with_six_or_minimal_actions(game):
    spec = describe_env(minatar_cfg(game))
    assert spec.frame_shape == (CHANNELS[game], 10, 10) and spec.frame_dtype == np.uint8
    assert spec.n_actions == 6  # MinAtar/<Game>-v0: the paper's action set
    assert describe_env(minatar_cfg(game, full_action_space=False)).n_actions == MINIMAL_ACTIONS[game]
    envs = make_vector_env(minatar_cfg(game), 2, seed=0)
    try:
        frames, _ = envs.reset(seed=[1, 2])
        assert frames.shape == (2, CHANNELS[game], 10, 10) and frames.dtype == np.uint8
        assert set(np.unique(frames)) <= {0, 1} and frames.any()
        frames, *_ = envs.step(np.zeros(2, dtype=np.int64))
        assert frames.shape == (2, CHANNELS[game], 10, 10)
    finally:
        envs.close()


def test_seeded_episodes_repeat_and_sticky_actions_are_minatars():
    """Same seed, same actions -> the same episode (what video replays rely on)."""

    def play(seed):
        env = minatar.make_env(minatar_cfg("Asterix"))
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for t in range(60):
            obs, r, term, trunc, _ = env.step(t % 6)
            out.append(obs)
            if term or trunc:
                break
        return np.stack(out)

    assert np.array_equal(play(2**62 + 5), play(2**62 + 5))  # 63-bit run seeds are folded for MinAtar
    assert not np.array_equal(play(1), play(2))
    assert minatar.make_env(minatar_cfg("Breakout")).unwrapped.game.sticky_action_prob == 0.1


def test_minatar_cnn_is_the_papers_network_and_takes_dueling():
    cfg = NetworkConfig(name="minatar_cnn", cnn_hidden=128)
    net = build_network(cfg, (1, 4, 10, 10), 6)
    conv = net.torso.conv[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (4, 16, (3, 3), (1, 1))
    assert net.torso.fc[0].in_features == 16 * 8 * 8 and net.torso.fc[0].out_features == 128
    obs = torch.randint(0, 2, (5, 1, 4, 10, 10), dtype=torch.uint8)
    assert net(obs).shape == (5, 6)
    dueling = build_network(NetworkConfig(name="minatar_cnn", cnn_hidden=128, dueling=True), (2, 7, 10, 10), 6)
    assert dueling.torso.conv[0].in_channels == 14  # stacked frames' channels feed the conv together
    assert dueling(torch.zeros(3, 2, 7, 10, 10, dtype=torch.uint8)).shape == (3, 6)


def test_network_and_env_must_agree():
    bad = compose("env=minatar", "env.game=Breakout", "network=nature_cnn", check=False)
    with pytest.raises(ConfigError, match="minatar_cnn"):
        validate(bad)
    classic = compose("network=minatar_cnn", check=False)
    with pytest.raises(ConfigError, match="classic observations.*use network=mlp"):
        validate(classic)


def test_render_colours_each_cell_by_its_channel():
    palette = minatar.palette(3)
    assert palette.shape == (4, 3) and (palette[0] == 0).all() and len({tuple(c) for c in palette}) == 4
    frame = np.zeros((3, 10, 10), dtype=np.uint8)
    frame[1, 2, 3] = 1
    frame[0, 9, 9] = frame[2, 9, 9] = 1  # the higher channel wins
    picture = minatar.draw(frame, palette, cell=4)
    assert picture.shape == (40, 40, 3) and picture.dtype == np.uint8
    assert (picture[8:12, 12:16] == palette[2]).all()
    assert (picture[36:, 36:] == palette[3]).all()
    assert (picture[:8] == 0).all()
    env = minatar.make_env(minatar_cfg("Freeway"), render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().shape == (10 * minatar.CELL, 10 * minatar.CELL, 3)


def test_missing_extra_is_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "minatar", None)
    monkeypatch.setitem(sys.modules, "minatar.gym", None)
    with pytest.raises(ConfigError, match=r"pip install 'dqn-cli\[minatar\]'"):
        describe_env(minatar_cfg("Breakout"))


def test_unknown_game_on_the_command_line(tmp_path):
    proc = run_dqn("train", "env=minatar", "env.game=Pong", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "not a MinAtar game" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("game,backend", [("Freeway", "async"), ("space_invaders", "sync")])
def test_train_eval_and_film_end_to_end(tmp_path, game, backend):
    run_dir = tmp_path / "run"
    proc = run_dqn(
        "train",
        *TINY_MINATAR,
        f"env.game={game}",
        f"env.vectorization={backend}",
        f"hydra.run.dir={run_dir}",
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    c = CHANNELS[minatar.resolve_game(game)]
    # one byte per cell and channel, plus 16 B of bookkeeping per slot; never float32 stacks
    assert summary["replay_bytes_per_transition"] == 100 * c + 16
    assert summary["total_steps"] == 600 and summary["final_eval_mean_return"] is not None
    evals = (run_dir / "evals.csv").read_text().strip().splitlines()
    assert evals[0].startswith("env_step,mean_return") and [r.split(",")[0] for r in evals[1:]] == ["300", "600"]
    assert (run_dir / "checkpoints" / "last.pt").is_file()

    out = run_dqn(
        "eval",
        f"checkpoint={run_dir}",
        "episodes=2",
        "video=true",
        "max_episode_steps=50",
        f"hydra.run.dir={tmp_path / 'eval'}",
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = last_json_line(out.stdout)
    assert result["episodes"] == 2 and len(result["returns"]) == 2 and max(result["lengths"]) <= 50
    reader = imageio.get_reader(result["video"])
    try:
        frames = [np.asarray(f) for f in reader]
    finally:
        reader.close()
    assert len(frames) == sum(result["lengths"]) + 2
    assert frames[0].shape == (10 * minatar.CELL, 10 * minatar.CELL, 3)
