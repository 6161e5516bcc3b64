"""Atari: game names, the env spec, the three vectorisation backends, the
training vs evaluation protocols, the env presets, and tiny end-to-end runs of
`dqn train` / `dqn eval` on Breakout and Pong through the real entrypoint.

With no-op starts off and no sticky actions the emulator is deterministic, so
`sync`, `async`, `ale` and `envpool` must produce the *same* frames, rewards and episode
ends for the same actions: that is the equivalence test. (The final frame of
a game that ends mid frame-skip is the one place they may differ by a few
pixels: ale-py max-pools it with a stale screen, see dqn_cli/atari.py.)
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from helpers import last_json_line, run_dqn

from dqn_cli.config import ConfigError, EnvConfig
from dqn_cli.envs.atari import describe, make_env, make_vector_env, resolve_game

BACKENDS = ("sync", "async", "ale", "envpool")


def atari_cfg(game="Breakout", backend="sync", **kw) -> EnvConfig:
    base = dict(name=game.lower(), kind="atari", game=game, vectorization=backend, frame_stack=4)
    return EnvConfig(**{**base, **kw})


# ------------------------------------------------------------------ games
@pytest.mark.parametrize(
    "name, rom, camel",
    [
        ("Breakout", "breakout", "Breakout"),
        ("pong", "pong", "Pong"),
        ("SpaceInvaders", "space_invaders", "SpaceInvaders"),
        ("space_invaders", "space_invaders", "SpaceInvaders"),
        ("MSPACMAN", "ms_pacman", "MsPacman"),
    ],
)
def test_game_names_are_case_insensitive(name, rom, camel):
    assert resolve_game(name) == (rom, camel)


def test_unknown_game_is_one_line_listing_valid_names():
    with pytest.raises(ConfigError) as err:
        describe(atari_cfg("Breakoutt"))
    msg = str(err.value)
    assert "\n" not in msg and "Breakoutt" in msg and "Breakout" in msg
    with pytest.raises(ConfigError) as err:
        resolve_game("NoSuchGameAtAll")
    assert "Pong" in str(err.value)  # a few popular names when nothing is close


def test_describe_reads_the_spec_in_process():
    spec = describe(atari_cfg("Breakout"))
    assert spec.frame_shape == (84, 84) and spec.frame_dtype == np.uint8
    assert spec.obs_shape == (4, 84, 84) and spec.n_actions == 4
    assert spec.action_meanings[:2] == ["NOOP", "FIRE"]
    assert describe(atari_cfg("Pong")).n_actions == 6
    assert describe(atari_cfg("Pong", full_action_space=True)).n_actions == 18
    assert describe(atari_cfg("Pong", screen_size=64, frame_stack=2)).obs_shape == (2, 64, 64)


def test_single_env_is_the_dqn_preprocessing():
    env = make_env(atari_cfg("Breakout", noop_max=0))
    base = env.unwrapped
    assert base._frameskip == 1 and env.frame_skip == 4  # frame skip in the wrapper
    assert base.ale.getFloat("repeat_action_probability") == 0.0
    obs, info = env.reset(seed=0)
    assert obs.shape == (84, 84) and obs.dtype == np.uint8 and info["lives"] == 5
    assert info["episode_frame_number"] == 1  # FIRE pressed for one frame at reset
    obs, reward, terminated, truncated, info = env.step(0)
    assert info["episode_frame_number"] == 5 and "lives" in info
    env.close()
    sticky = make_env(atari_cfg("Breakout", sticky_action_prob=0.25))
    assert sticky.unwrapped.ale.getFloat("repeat_action_probability") == 0.25
    sticky.close()


def test_factory_is_picklable():
    import functools
    import pickle

    from dqn_cli.envs.vector import env_factory

    fn = env_factory(atari_cfg("Pong"))
    assert isinstance(fn, functools.partial)
    pickle.loads(pickle.dumps(fn))


# ------------------------------------------------------------ backends
def rollout(backend, game, training, steps, num_envs=2, seed=0, **kw):
    """Random play; returns every array the trainer reads, per step."""
    cfg = atari_cfg(game, backend, noop_max=0, **kw)
    envs = make_vector_env(cfg, num_envs, seed=seed, training=training)
    try:
        assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        assert envs.single_observation_space.shape == (84, 84)
        rng = np.random.default_rng(seed)
        obs, info = envs.reset(seed=[seed + i for i in range(num_envs)])
        keys = ("obs", "next", "reward", "raw", "terminated", "truncated", "game_over", "lives", "final")
        out = {k: [] for k in keys}
        for _ in range(steps):
            actions = rng.integers(0, envs.single_action_space.n, size=num_envs)
            nxt, reward, terminated, truncated, info = envs.step(actions)
            assert nxt.shape == (num_envs, 84, 84) and nxt.dtype == np.uint8
            ended = terminated | truncated
            final = np.zeros_like(nxt)
            if ended.any():
                for i in np.flatnonzero(ended):
                    f = np.asarray(info["final_obs"][i])
                    assert f.shape == (84, 84) and f.dtype == np.uint8
                    final[i] = f
            out["obs"].append(obs.copy())
            out["next"].append(nxt.copy())
            out["reward"].append(np.asarray(reward, dtype=np.float64))
            out["raw"].append(np.asarray(info["raw_reward"], dtype=np.float64))
            out["terminated"].append(terminated.copy())
            out["truncated"].append(truncated.copy())
            out["game_over"].append(np.asarray(info["game_over"], dtype=bool))
            out["lives"].append(np.asarray(info["lives"]).copy())
            out["final"].append(final)
            obs = nxt
        return {k: np.array(v) for k, v in out.items()}
    finally:
        envs.close()


@pytest.fixture(scope="module")
def breakout_runs():
    """Breakout: lives are lost every ~25 random steps; full episodes end within 300."""
    return {(b, t): rollout(b, "Breakout", t, 240, max_episode_frames=1000) for b in BACKENDS for t in (True, False)}


@pytest.fixture(scope="module")
def invaders_runs():
    """SpaceInvaders: rewards of 5-30 points, episodes truncated at 800 frames (200 steps)."""
    return {
        (b, t): rollout(b, "SpaceInvaders", t, 230, max_episode_frames=800)
        for b in ("sync", "ale", "envpool")
        for t in (True, False)
    }


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("backend", ["async", "ale", "envpool"])
def test_backends_play_the_same_game(breakout_runs, backend, training):
    ref, run = breakout_runs[("sync", training)], breakout_runs[(backend, training)]
    for key in ("obs", "next", "reward", "raw", "terminated", "truncated", "game_over", "lives"):
        np.testing.assert_array_equal(run[key], ref[key], err_msg=f"{backend} differs from sync in {key}")
    ended = ref["terminated"] | ref["truncated"]
    assert ended.any()
    life_lost = ended & ~ref["game_over"]
    np.testing.assert_array_equal(run["final"][life_lost], ref["final"][life_lost])
    over = ref["game_over"]
    if over.any():  # mid-skip game ends: ale-py pools the final screen with a stale one
        assert (run["final"][over] == ref["final"][over]).mean() > 0.95


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_protocol_episodic_life(breakout_runs, backend):
    r = breakout_runs[(backend, True)]
    life_lost = r["terminated"] & ~r["game_over"]
    assert life_lost.sum() >= 4, "random Breakout loses lives every few dozen steps"
    steps, envs = np.nonzero(life_lost)
    for t, i in zip(steps, envs):
        # the agent's episode ends on the current frame; the game goes on: no reset
        np.testing.assert_array_equal(r["final"][t, i], r["next"][t, i])
        assert 0 < r["lives"][t, i] < 5
        assert r["lives"][t, i] == r["lives"][t - 1, i] - 1
        assert not r["truncated"][t, i]
    assert r["game_over"].any(), "a full Breakout game ends within 240 random steps"
    t, i = np.argwhere(r["game_over"])[0]
    assert r["terminated"][t, i] and r["lives"][t, i] == 5  # real game over: the env was reset


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_protocol_plays_the_full_game(breakout_runs, backend):
    r = breakout_runs[(backend, False)]
    ended = r["terminated"] | r["truncated"]
    np.testing.assert_array_equal(ended, r["game_over"])  # a lost life is not an episode end
    lives = r["lives"]
    assert (np.diff(lives, axis=0) < 0).any(), "lives were lost without ending the episode"
    np.testing.assert_array_equal(r["reward"], r["raw"])


@pytest.mark.parametrize("backend", ["sync", "ale", "envpool"])
def test_reward_clipping_in_training_only(invaders_runs, backend):
    train, ev = invaders_runs[(backend, True)], invaders_runs[(backend, False)]
    assert (train["raw"] > 1).any(), "SpaceInvaders scores 5+ points per alien"
    np.testing.assert_array_equal(train["reward"], np.sign(train["raw"]))
    assert set(np.unique(train["reward"])) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(ev["reward"], ev["raw"])
    np.testing.assert_array_equal(train["raw"], ev["raw"])  # same game, same actions


@pytest.mark.parametrize("backend", ["sync", "ale", "envpool"])
def test_truncation_keeps_the_true_final_frame(invaders_runs, backend):
    r = invaders_runs[(backend, False)]
    trunc = r["truncated"] & ~r["terminated"]
    assert trunc.any(), "episodes are truncated after max_episode_frames"
    assert r["game_over"][trunc].all()
    t, i = np.argwhere(trunc)[0]
    assert not np.array_equal(r["final"][t, i], r["next"][t, i])  # final frame != the reset frame
    # the final frame continues the episode: close to the frame before it, unlike the reset frame
    before = r["obs"][t, i].astype(int)
    assert np.abs(r["final"][t, i].astype(int) - before).mean() < np.abs(r["next"][t, i].astype(int) - before).mean()


@pytest.mark.parametrize("backend", ["sync", "ale", "envpool"])
def test_max_episode_steps_caps_episodes_in_agent_steps(backend):
    r = rollout(backend, "Pong", False, 25, num_envs=1, max_episode_steps=10)
    ends = np.flatnonzero(r["truncated"][:, 0])
    np.testing.assert_array_equal(ends, [9, 19])  # every 10 agent steps
    assert r["game_over"][ends, 0].all()


def test_async_workers_ignore_sigint():
    """Ctrl-C reaches the whole process group: workers must live on so the trainer can checkpoint."""
    import os
    import signal

    envs = make_vector_env(atari_cfg("Pong", "async"), 2, seed=0, training=True)
    try:
        envs.reset(seed=[0, 1])
        for proc in envs.unwrapped.processes:
            os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.5)
        assert all(proc.is_alive() for proc in envs.unwrapped.processes)
        frames, *_ = envs.step(np.zeros(2, dtype=np.int64))
        assert frames.shape == (2, 84, 84)
    finally:
        envs.close()


# ------------------------------------------------------------- presets
def _cfg_job(*overrides) -> dict:
    """What `dqn train OVERRIDES --cfg job` prints, composed in-process (the same config dir and
    schemas; test_cli checks the subprocess path once) to save a Python start-up per call."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from dqn_cli.app.cli import config_dir
    from dqn_cli.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="train"):
        return OmegaConf.to_container(compose("train", overrides=list(overrides)))


def test_env_breakout_picks_the_atari_defaults():
    cfg = _cfg_job("env=breakout")
    assert cfg["env"]["kind"] == "atari" and cfg["env"]["game"] == "Breakout"
    assert cfg["env"]["frame_stack"] == 4 and cfg["env"]["vectorization"] == "async"
    assert cfg["network"]["name"] == "nature_cnn"
    assert cfg["replay"]["capacity"] >= 100_000
    assert cfg["schedule"]["epsilon_end"] == 0.01 and cfg["optimizer"]["lr"] == 1e-4
    assert cfg["batch_size"] == 32 and cfg["train_every"] == 4 and cfg["total_steps"] == 10_000_000
    pong = _cfg_job("env=pong")
    assert pong["env"]["game"] == "Pong" and pong["network"]["name"] == "nature_cnn"


def test_command_line_overrides_beat_the_preset():
    cfg = _cfg_job(
        "env=breakout",
        "network.dueling=true",
        "total_steps=2000",
        "replay=prioritized",
        "optimizer=rmsprop",
        "replay.capacity=5000",
        "env.vectorization=ale",
    )
    assert cfg["network"]["name"] == "nature_cnn" and cfg["network"]["dueling"] is True
    assert cfg["total_steps"] == 2000 and cfg["env"]["vectorization"] == "ale"
    assert cfg["replay"]["name"] == "prioritized" and cfg["replay"]["capacity"] == 5000
    assert cfg["optimizer"]["name"] == "rmsprop" and cfg["optimizer"]["lr"] == 1e-4
    other = _cfg_job("env=atari", "env.game=Seaquest")
    assert other["env"]["game"] == "Seaquest" and other["network"]["name"] == "nature_cnn"


def test_prioritized_replay_takes_each_env_presets_exponents():
    """CartPole's preset tunes PER milder (alpha 0.3, beta 0.6); Atari keeps Schaul et al.'s 0.6 / 0.4."""
    cartpole = _cfg_job("replay=prioritized")["replay"]
    assert (cartpole["name"], cartpole["alpha"], cartpole["beta_start"]) == ("prioritized", 0.3, 0.6)
    breakout = _cfg_job("env=breakout", "replay=prioritized")["replay"]
    assert (breakout["name"], breakout["alpha"], breakout["beta_start"]) == ("prioritized", 0.6, 0.4)


def test_unknown_game_on_the_command_line(tmp_path):
    started = time.monotonic()
    proc = run_dqn("train", "env=atari", "env.game=NotAGame", f"hydra.run.dir={tmp_path / 'run'}", timeout=60)
    assert proc.returncode != 0
    assert time.monotonic() - started < 30
    err = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert "NotAGame" in err[-1] and "Breakout" in err[-1]


# ------------------------------------------------------------ end to end
TINY_ATARI = [
    "env.num_envs=2",
    "total_steps=64",
    "learning_starts=32",
    "batch_size=8",
    "replay.capacity=512",
    "target_update_period=32",
    "eval.episodes=1",
    "eval.every=0",
    "checkpoint.every=0",
    "env.max_episode_frames=200",  # evaluation episodes end after 50 agent steps
    "device=cpu",
    "torch_threads=1",
    "log_every=32",
    "progress=log",
]


@pytest.mark.parametrize(
    "env, backend",
    [(env, backend) for env in ("breakout", "pong") for backend in BACKENDS],
)
def test_train_and_eval_end_to_end(tmp_path, env, backend):
    run_dir = tmp_path / "run"
    proc = run_dqn(
        "train", f"env={env}", f"env.vectorization={backend}", *TINY_ATARI, f"hydra.run.dir={run_dir}", timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == 64 and summary["updates"] > 0
    assert summary["replay_bytes_per_transition"] <= 7300
    assert summary["env"] == env.capitalize()
    assert np.isfinite(summary["final_eval_mean_return"])
    saved = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "${" not in saved and f"game: {env.capitalize()}" in saved  # resolved, as the run used it
    for key in (
        "frame_skip: 4",
        "sticky_action_prob: 0.0",
        "episodic_life: true",
        "clip_rewards: true",
        "noop_max: 30",
        "fire_reset: true",
        "max_episode_frames: 200",
    ):
        assert key in saved  # the protocol is recorded with the run
    last = run_dir / "checkpoints" / "last.pt"
    assert last.is_file()
    ev = run_dqn(
        "eval", f"checkpoint={last}", "episodes=1", "device=cpu", f"hydra.run.dir={tmp_path / 'eval'}", timeout=120
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    result = last_json_line(ev.stdout)
    assert result["episodes"] == 1 and np.isfinite(result["mean_return"])
    assert result["mean_length"] <= 50 + 1
