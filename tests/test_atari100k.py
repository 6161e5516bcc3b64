"""The Atari 100k protocol (env=atari100k), its agents (algo=drq_eps, algo=der), DrQ's augmentation,
and the benchmark's human-normalised scores and aggregates in `dqn plot`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, compose, last_json_line, read_csv, run_dqn, without

from dqn_cli.config import NetworkConfig, OptimizerConfig
from dqn_cli.core.agent import DQNAgent
from dqn_cli.core.augment import Augmentation, intensity, random_shift
from dqn_cli.core.networks import build_network
from dqn_cli.replay.storage import Batch

# ------------------------------------------------------------------ augmentation


def _frames(batch=6, channels=4, size=12, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (batch, channels, size, size), dtype=np.uint8))


def _edge_pad_crop(image: np.ndarray, pad: int, dy: int, dx: int) -> np.ndarray:
    """DrQ's shift as written: edge-pad (C, H, W) by pad, crop H x W at offset (dy + pad, dx + pad)."""
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    h, w = image.shape[1:]
    return padded[:, dy + pad : dy + pad + h, dx + pad : dx + pad + w]


@pytest.mark.parametrize("channels", [4, 3])  # 4 uint8 frames move as one int32; 3 take the general path
def test_shift_is_an_edge_padded_crop_by_at_most_the_pad(channels):
    obs = _frames(batch=64, channels=channels)
    before = obs.clone()
    gen = torch.Generator().manual_seed(0)
    out = random_shift(obs, 4, gen)
    assert torch.equal(obs, before), "the stored frames are left untouched"
    assert out.shape == obs.shape and out.dtype == torch.uint8
    seen = set()
    for b in range(obs.shape[0]):  # each sample is one of the (2 pad + 1)^2 crops, found by search
        hits = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if np.array_equal(out[b].numpy(), _edge_pad_crop(obs[b].numpy(), 4, dy, dx))
        ]
        assert hits, f"sample {b} is not an edge-padded crop within 4 pixels"
        seen.add(hits[0])
    assert len(seen) > 10, "the shift differs per sample"


def test_shift_moves_every_frame_of_a_sample_alike():
    frame = _frames(batch=8, channels=1)
    obs = frame.repeat(1, 4, 1, 1)  # four identical stacked frames
    out = random_shift(obs, 3, torch.Generator().manual_seed(1))
    for c in range(1, 4):
        assert torch.equal(out[:, c], out[:, 0])


def test_intensity_scales_each_sample_within_two_sigma():
    obs = torch.full((500, 4, 5, 5), 100, dtype=torch.uint8)
    out = intensity(obs, 0.05, torch.Generator().manual_seed(0))
    factors = out[:, 0, 0, 0] / 100.0
    assert out.dtype == torch.float32
    assert torch.equal(out, factors[:, None, None, None].expand_as(out) * 100.0)  # one factor per sample
    assert factors.min() >= 0.9 - 1e-6 and factors.max() <= 1.1 + 1e-6
    assert factors.std() > 0.03  # about scale * std(clip(N(0,1), -2, 2))


def test_augmentation_replays_from_its_seed_and_continues_after_a_restore():
    obs = _frames(batch=16)
    a = Augmentation(4, 0.05, seed=7, device=torch.device("cpu"))
    first = a(obs)
    saved = a.state_dict()
    second = a(obs)
    b = Augmentation(4, 0.05, seed=7, device=torch.device("cpu"))
    assert torch.equal(b(obs), first)
    c = Augmentation(4, 0.05, seed=123, device=torch.device("cpu"))
    c.load_state_dict(saved)
    assert torch.equal(c(obs), second), "a resumed run continues the same stream"
    assert not torch.equal(second, first)


def _agent(augmentation=None, seed=0, shared_target=False, network="plain") -> DQNAgent:
    torch.manual_seed(seed)
    cfg = NetworkConfig(name="nature_cnn", dueling=True, cnn_hidden=32, noisy=network == "noisy")
    net = build_network(cfg, (4, 84, 84), 4)
    return DQNAgent(
        net,
        OptimizerConfig(lr=1e-3),
        4,
        True,
        "huber",
        torch.device("cpu"),
        augmentation=augmentation,
        shared_target=shared_target,
    )


def _batch(seed=0, size=8) -> Batch:
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, (size, 4, 84, 84), dtype=np.uint8)
    return Batch(
        obs,
        rng.integers(4, size=size),
        rng.standard_normal(size).astype(np.float32),
        rng.integers(0, 256, (size, 4, 84, 84), dtype=np.uint8),
        np.full(size, 0.99**3, np.float32),
        np.arange(size),
        np.ones(size, np.float32),
    )


def test_no_op_augmentation_leaves_the_update_bit_for_bit():
    """With no shift and no noise the augmented update is the plain one, to the bit."""
    plain, noop = _agent(), _agent(Augmentation(0, 0.0, seed=1, device=torch.device("cpu")))
    for _ in range(3):
        a, b = plain.update(_batch()), noop.update(_batch())
        assert a.td_loss == b.td_loss
    for p, q in zip(plain.q_network.parameters(), noop.q_network.parameters()):
        assert torch.equal(p, q)


def test_augmentation_changes_the_update():
    plain, augmented = _agent(), _agent(Augmentation(4, 0.05, seed=1, device=torch.device("cpu")))
    assert plain.update(_batch()).td_loss != augmented.update(_batch()).td_loss


def test_target_equal_to_online_is_computed_once_with_the_same_result():
    """While the target holds the online weights (a hard copy, then no gradient step), y uses the
    online pass alone; the update is the one with the target network's own pass, to the bit."""
    shortcut, full = _agent(), _agent()
    shortcut.update_target(1.0)
    assert shortcut.target_is_online and not full.target_is_online  # (full: the target network's own pass)
    for step in range(3):
        a, b = shortcut.update(_batch(step)), full.update(_batch(step))
        assert a.td_loss == b.td_loss
        shortcut.update_target(1.0)
        full.update_target(1.0)
        full.target_is_online = False
        assert shortcut.target_is_online
    for p, q in zip(shortcut.q_network.parameters(), full.q_network.parameters()):
        assert torch.equal(p, q)
    shortcut.update(_batch(5))
    assert not shortcut.target_is_online, "after a gradient step the target differs from the online net"


def test_shared_target_is_the_hard_copy_every_update_to_the_bit():
    """DrQ(eps)'s target period of one update: the online network as its own target gives the
    updates (with augmentation), the weights and the checkpoint of a target copied before every
    update, to the bit, without the copy."""
    shared = _agent(Augmentation(4, 0.05, seed=1, device=torch.device("cpu")), shared_target=True)
    copied = _agent(Augmentation(4, 0.05, seed=1, device=torch.device("cpu")))
    assert shared.target_network is shared.q_network and copied.target_network is not copied.q_network
    for step in range(4):
        a, b = shared.update(_batch(step)), copied.update(_batch(step))
        assert a.td_loss == b.td_loss and np.array_equal(a.td_errors, b.td_errors)
        shared.update_target(1.0)
        copied.update_target(1.0)
    for p, q in zip(shared.q_network.parameters(), copied.q_network.parameters()):
        assert torch.equal(p, q)
    saved = shared.state_dict()
    assert all(torch.equal(saved["target_network"][k], v) for k, v in copied.state_dict()["target_network"].items())
    resumed = _agent(Augmentation(4, 0.05, seed=1, device=torch.device("cpu")), shared_target=True)
    resumed.load_state_dict(copied.state_dict())  # (a checkpoint of a copying run loads too)
    assert resumed.update(_batch(9)).td_loss == copied.update(_batch(9)).td_loss


def test_only_a_target_period_of_one_update_shares_the_target():
    from dqn_cli.run.build import shares_target

    drq = compose("algo=drq_eps", "env=atari100k", "env.game=Breakout")
    assert shares_target(drq)
    for other in (
        compose("algo=der", "env=atari100k", "env.game=Breakout"),  # a target period of 2,000 (and noisy nets)
        compose("algo=drq_eps", "env=atari100k", "env.game=Breakout", "tau=0.5"),
        compose("algo=drq_eps", "env=atari100k", "env.game=Breakout", "env.num_envs=2"),  # 2 updates per sync
        compose("algo=drq_eps", "env=atari100k", "env.game=Breakout", "network.noisy=true"),
    ):
        assert not shares_target(other)
    with pytest.raises(ValueError, match="noisy"):
        _agent(network="noisy", shared_target=True)


# ------------------------------------------------------------------ the protocol and the presets


def test_drq_eps_preset_is_the_published_configuration():
    cfg = compose("algo=drq_eps", "env=atari100k", "env.game=Breakout")
    e = cfg.env
    assert (e.suite, e.kind, e.num_envs, e.frame_skip, e.sticky_action_prob) == ("atari100k", "atari", 1, 4, 0.0)
    assert (e.noop_max, e.episodic_life, e.screen_size, e.frame_stack, e.max_episode_frames) == (
        30,
        True,
        84,
        4,
        108_000,
    )
    assert cfg.total_steps == 100_000 and cfg.learning_starts == 1_600 and cfg.train_every == 1
    assert cfg.batch_size == 32 and cfg.gamma == 0.99 and cfg.replay.n_step == 10 and cfg.replay.name == "uniform"
    assert cfg.target_update_period == 1 and cfg.tau == 1.0 and cfg.double_q
    n = cfg.network
    assert n.name == "nature_cnn" and n.dueling and n.distributional == "none" and not n.noisy
    assert n.augment and n.augment_pad == 4 and n.augment_intensity == 0.05
    assert (cfg.optimizer.lr, cfg.optimizer.eps, cfg.optimizer.max_grad_norm) == (1e-4, 1.5e-4, None)
    assert cfg.schedule.points == [[0, 1.0], [1_600, 1.0], [6_600, 0.01]]
    v = cfg.eval
    assert (v.final_episodes, v.epsilon, v.max_episode_steps) == (100, 0.001, 27_000)


def test_der_preset_is_the_published_configuration():
    cfg = compose("algo=der", "env=atari100k", "env.game=Alien")
    n = cfg.network
    assert n.dueling and n.noisy and n.distributional == "c51" and n.atoms == 51 and (n.v_min, n.v_max) == (-10, 10)
    assert not n.augment and cfg.double_q and cfg.replay.name == "prioritized" and cfg.replay.n_step == 10
    assert (cfg.replay.alpha, cfg.replay.beta_start, cfg.replay.beta_end) == (0.5, 0.5, 0.5)
    assert cfg.target_update_period == 2_000 and cfg.learning_starts == 1_600 and cfg.train_every == 1
    assert cfg.schedule.points == [[0, 1.0], [1_600, 1.0], [3_600, 0.01]]
    assert (cfg.optimizer.lr, cfg.optimizer.eps) == (1e-4, 1.5e-4) and cfg.eval.epsilon == 0.001


def test_any_spelling_of_the_26_games_is_accepted():
    assert compose("env=atari100k", "env.game=ms_pacman").env.game == "MsPacman"
    assert compose("env=atari100k", "env.game=UP_N_DOWN").env.game == "UpNDown"


def test_a_game_outside_the_26_is_refused_in_one_line(tmp_path):
    proc = run_dqn(
        "train", "algo=drq_eps", "env=atari100k", "env.game=SpaceInvaders", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "SpaceInvaders" in line and "Alien" in line and "UpNDown" in line and "atari100k" in line
    assert not (tmp_path / "r").exists()


def test_augmentation_needs_images(tmp_path):
    proc = run_dqn("train", "algo=drq_eps", f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "network.augment" in proc.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------ end to end
TINY_100K = [
    "total_steps=48",
    "learning_starts=24",
    "batch_size=4",
    "replay.capacity=256",
    "network.cnn_hidden=16",
    "eval.every=24",
    "eval.episodes=1",
    "eval.final_episodes=3",
    "eval.max_episode_steps=40",
    "checkpoint.every=0",
    "device=cpu",
    "torch_threads=1",
    "log_every=24",
    "progress=log",
]


@pytest.fixture(scope="module")
def atari100k_runs(tmp_path_factory) -> dict[str, Path]:
    """drq_eps on Breakout and der on Alien, each trained to 48 steps, then resumed to 64."""
    runs = {}
    for algo, game in (("drq_eps", "Breakout"), ("der", "Alien")):
        run_dir = tmp_path_factory.mktemp(algo) / game
        proc = run_dqn(
            "train", f"algo={algo}", "env=atari100k", f"env.game={game}", *TINY_100K, f"hydra.run.dir={run_dir}",
            timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        proc = run_dqn("train", f"resume={run_dir}", "total_steps=64", timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[algo] = run_dir
    return runs


@pytest.mark.parametrize("algo", ["drq_eps", "der"])
def test_trains_evaluates_on_several_envs_and_resumes(atari100k_runs, algo):
    run_dir = atari100k_runs[algo]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == 64 and summary["algo"] == algo and summary["updates"] > 0
    rows = (run_dir / "evals.csv").read_text().strip().splitlines()
    header, evals = rows[0].split(","), [dict(zip(rows[0].split(","), r.split(","))) for r in rows[1:]]
    assert "episodes" in header
    # a periodic evaluation (eval.episodes), the final one of the 48-step run and the resumed run's
    # (eval.final_episodes, played on one env each)
    assert [int(e["env_step"]) for e in evals] == [24, 48, 64]
    assert [int(e["episodes"]) for e in evals] == [1, 3, 3]
    log = (run_dir / "train.log").read_text()
    assert "evaluating at step 24: 0/1 episodes on 1 env" in log and "at step 64: 0/3 episodes on 3 envs" in log
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ("augmentation" in state["agent"]) == (algo == "drq_eps")


def test_the_final_100_episodes_are_played_on_20_envs_each_capped(tmp_path):
    """The benchmark's score, eval.final_episodes=100 full games at the end, is played on 20 envs
    at once, and every episode stops at the cap (27,000 agent steps in the preset; 30 here)."""
    run_dir = tmp_path / "run"
    changed = {"total_steps": 16, "learning_starts": 8, "eval.final_episodes": 100, "eval.max_episode_steps": 30}
    args = [a for a in TINY_100K if a.split("=")[0] not in changed] + [f"{k}={v}" for k, v in changed.items()]
    proc = run_dqn("train", "algo=drq_eps", "env=atari100k", "env.game=Breakout", *args, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "evaluating at step 16: 0/100 episodes on 20 envs" in (run_dir / "train.log").read_text()
    (final,) = [r for r in read_csv(run_dir / "evals.csv") if r["env_step"] == "16"]
    # a Breakout agent of 16 steps rarely serves, and never loses 5 lives in 30 steps: all cut
    assert (final["episodes"], final["episodes_cut"], float(final["mean_length"])) == ("100", "100", 30.0)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_eval_episodes_cut"] == 100


@pytest.mark.skipif(shutil.which("flock") is None, reason="scripts/atari100k.sh needs flock(1) (util-linux)")
def test_the_benchmark_script_started_twice_shares_the_runs(tmp_path):
    """scripts/atari100k.sh started twice at once (two runs at a time on two cores): each run is
    trained by one of them, never started over by the other, collected once, and both end cleanly."""
    tiny = [a for a in TINY_100K if a.split("=")[0] not in ("torch_threads", "progress")]
    env = {
        **os.environ,
        "DQN": str(Path(sys.executable).with_name("dqn")),
        "PYTHON": sys.executable,
        "GAMES": "Alien Breakout",
        "SEEDS": "1",
        "THREADS": "1",
        "OUT": str(tmp_path / "results"),
        "RUNS": str(tmp_path / "runs"),
        "EXTRA": " ".join(tiny),
    }
    script = str(ROOT / "scripts" / "atari100k.sh")
    procs = [
        subprocess.Popen(["bash", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:  # (a timeout: no copy left running, holding its claims)
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    both = "".join(outputs)
    for game in ("Alien", "Breakout"):
        assert both.count(f"training {game} for 48 env steps") == 1, both  # started once, by one copy
        summary = json.loads((tmp_path / "results" / "drq_eps" / game / "seed_1" / "summary.json").read_text())
        assert summary["env"] == game and summary["total_steps"] == 48
    assert (tmp_path / "results" / "atari100k_games.md").is_file()


def test_evaluates_and_films_the_trained_agent(atari100k_runs, tmp_path):
    proc = run_dqn(
        "eval", f"checkpoint={atari100k_runs['drq_eps']}", "episodes=2", "max_episode_steps=30", "video=true",
        "device=cpu", f"hydra.run.dir={tmp_path / 'eval'}", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = last_json_line(proc.stdout)
    assert result["episodes"] == 2 and Path(result["video"]).stat().st_size > 0


@pytest.mark.parametrize("algo", ["drq_eps", "der"])
def test_an_atari_100k_run_resumed_is_the_run_uninterrupted(tmp_path, algo):
    """With checkpoint.save_replay=true, 48 steps then resumed to 96 give the 96-step run to the
    bit: the games go on from the emulator state in the checkpoint, the replay, the networks, the
    optimizer and every generator (DrQ's shifts, the noisy nets') from theirs."""
    args = [
        f"algo={algo}", "env=atari100k", "env.game=Breakout", *without(without(TINY_100K, "total_steps"), "checkpoint.every"),
        "checkpoint.every=48", "checkpoint.save_replay=true", "eval.every=96",  # (no evaluation before it)
    ]  # fmt: skip
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_dqn("train", *args, "total_steps=96", f"hydra.run.dir={straight}", timeout=300).returncode == 0
    assert run_dqn("train", *args, "total_steps=48", f"hydra.run.dir={split}", timeout=300).returncode == 0
    replay_48 = shutil.copy(split / "checkpoints" / "replay.npz", tmp_path / "replay_48.npz")
    proc = run_dqn("train", f"resume={split}", "total_steps=96", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    x, y = (torch.load(d / "checkpoints" / "step_000000096.pt", weights_only=True) for d in (straight, split))
    assert x["envs"]["kind"] == "atari"  # the games' state is in the checkpoint
    for key in ("q_network", "target_network"):
        for name, value in x["agent"][key].items():
            assert torch.equal(value, y["agent"][key][name]), f"{key}.{name}"
    for i, state in x["agent"]["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, y["agent"]["optimizer"]["state"][i][name]), f"optimizer {i}.{name}"
    assert x["episode_stats"] == y["episode_stats"]
    assert x["counters"]["updates"] == y["counters"]["updates"] > 0
    np.testing.assert_array_equal(x["envs"]["obs"].numpy(), y["envs"]["obs"].numpy())
    # scripts/resumable.py (atari100k.sh resumes a stopped run only when it says yes): a finished
    # run, a replay of another step than last.pt's, and a mid-run stop it can resume exactly
    stopped = tmp_path / "stopped"
    shutil.copytree(straight, stopped)
    shutil.copy(straight / "checkpoints" / "step_000000048.pt", stopped / "checkpoints" / "last.pt")
    verdicts = {}
    for name in ("split", "stopped", "stopped with the replay of step 48"):
        if name.startswith("stopped with"):
            shutil.copy(replay_48, stopped / "checkpoints" / "replay.npz")
        run = stopped if name.startswith("stopped") else split
        proc = subprocess.run(
            [sys.executable, "scripts/resumable.py", str(run)], capture_output=True, text=True, cwd=ROOT
        )
        verdicts[name] = (proc.returncode, proc.stdout.strip())
    assert verdicts["split"] == (1, "not resumable exactly: it reached its total_steps (96)")  # (resumed to 96 above)
    assert verdicts["stopped"] == (1, "not resumable exactly: its replay.npz is from env step 96, its last.pt from 48")
    assert verdicts["stopped with the replay of step 48"] == (0, "")
    # and checkpoints with the replay and the emulator in them change nothing of the run itself
    plain = tmp_path / "plain"
    base = [a for a in args if not a.startswith("checkpoint.")]
    assert run_dqn("train", *base, "total_steps=96", f"hydra.run.dir={plain}", timeout=300).returncode == 0
    z = torch.load(plain / "checkpoints" / "last.pt", weights_only=True)
    for name, value in x["agent"]["q_network"].items():
        assert torch.equal(value, z["agent"]["q_network"][name]), f"q_network.{name} with checkpoints"


# ------------------------------------------------------------------ human-normalised scores


def test_human_normalised_score_by_hand():
    from dqn_cli.app import atari_scores
    from dqn_cli.app.benchmark import human_normalized

    random, human = atari_scores.RANDOM["Breakout"], atari_scores.HUMAN["Breakout"]
    assert human_normalized(random, "Breakout") == 0.0 and human_normalized(human, "Breakout") == 1.0
    assert human_normalized(random + (human - random) / 4, "Breakout") == pytest.approx(0.25)
    assert set(atari_scores.RANDOM) == set(atari_scores.HUMAN) and len(atari_scores.HUMAN) == 26


def test_aggregates_by_hand():
    from dqn_cli.app.benchmark import aggregate

    scores = np.array([[0.0, 0.5, 1.0, 2.0], [0.2, 0.3, 1.4, 3.0]])  # 2 runs x 4 games
    iqm, median, mean, gap = aggregate(scores)
    flat = np.sort(scores.ravel())  # 8 scores: the middle 50% are the 3rd to 6th
    assert iqm == pytest.approx(flat[2:6].mean())
    assert median == pytest.approx(np.median(scores.mean(axis=0)))  # of the per-game means
    assert mean == pytest.approx(scores.mean())
    assert gap == pytest.approx(np.mean(np.maximum(1.0 - scores, 0.0)))


def test_dqn_plot_writes_the_benchmark_tables_and_profile(atari100k_runs, tmp_path):
    out = tmp_path / "atari.png"
    # a run still training (no summary.json yet: only periodic evaluations) is on the curves, not in the tables
    unfinished = tmp_path / "unfinished"
    shutil.copytree(atari100k_runs["drq_eps"], unfinished, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    (unfinished / "summary.json").unlink()
    runs = [atari100k_runs["drq_eps"], atari100k_runs["der"], unfinished]
    proc = run_dqn("plot", *map(str, runs), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    games = (tmp_path / "atari_games.md").read_text()
    assert "| Alien |" in games and "| Breakout |" in games and "DrQ(eps) (published)" in games
    (breakout,) = [line for line in games.splitlines() if line.startswith("| Breakout |")]
    assert breakout.split("|")[5].strip().endswith(", 1")  # drq_eps (mean [95% CI], runs): the finished run
    aggregate = (tmp_path / "atari_aggregate.md").read_text()
    assert "drq_eps (this tool)" in aggregate and "der (this tool)" in aggregate and "IQM" in aggregate
    # the published agents on all the games run (Alien, Breakout), and on each configuration's own
    der_alien = (739.9 - 227.8) / (7127.7 - 227.8)  # DER's published Alien, human-normalised
    assert f"| DER (published per-game means, the games of der: Alien) | 1 | - | {der_alien:.3f} |" in aggregate
    assert "| DrQ(eps) (published per-game means, same games) | 2 |" in aggregate
    assert (tmp_path / "atari_profile.png").stat().st_size > 0
    runs = (tmp_path / "atari_runs.md").read_text().splitlines()[4:]  # one row per run, from its files
    for algo in ("der", "drq_eps"):
        summary = json.loads((atari100k_runs[algo] / "summary.json").read_text())
        row = next(line for line in runs if line.startswith(f"| {algo} | {summary['env']} | {summary['seed']} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        score = summary["final_eval_mean_return"]
        random, human = {"Alien": (227.8, 7127.7), "Breakout": (1.7, 30.5)}[summary["env"]]
        drq_eps = {"Alien": 865.16, "Breakout": 19.76}[summary["env"]]  # rliable's released runs' means
        assert cells[3:6] == [f"{score:.1f}", f"{(score - random) / (human - random):.3f}", f"{score / drq_eps:.0%}"]
        assert cells[6] == f"{summary['wall_seconds'] / 60:.0f}"
        assert cells[8] == f"{summary['wall_seconds'] / summary['update_seconds']:.2f}x"
        assert cells[10].startswith(summary["cpu"])
    assert len(runs) == 2


def test_a_suite_growing_game_by_game_keeps_its_complete_blocks():
    """8 games x 3 seeds, then a 9th game with 1: rliable needs as many runs in every game, so
    the aggregate table has both the 3-run block of the 8 games and the 1-run block of all 9,
    each beside the published agents on its own games."""
    from dqn_cli.app import atari_scores
    from dqn_cli.app.benchmark import (
        Suite,
        aggregate,
        aggregate_markdown,
        games_markdown,
        human_normalized,
        interval_estimates,
    )

    first8 = ["Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout"]
    rng = np.random.default_rng(0)
    scores = {g: [atari_scores.HUMAN[g] * f for f in rng.uniform(0.05, 0.6, 3)] for g in first8}
    scores["ChopperCommand"] = [1200.0]
    suite = Suite("drq_eps", scores)
    three, one = suite.blocks()
    assert (three.key, three.owner, three.games, three.scores.shape) == (
        "drq_eps|3",
        "drq_eps with 3 runs",
        first8,
        (3, 8),
    )
    assert (one.key, one.owner, one.scores.shape) == ("drq_eps|1", "drq_eps with 1 run", (1, 9))
    assert one.games == sorted([*first8, "ChopperCommand"])
    assert three.scores[2, 0] == pytest.approx(human_normalized(scores["Alien"][2], "Alien"))
    assert one.scores[0, one.games.index("ChopperCommand")] == pytest.approx(human_normalized(1200.0, "ChopperCommand"))
    assert suite.matrix()[1].shape == (3, 8)  # the profile's: the block with the most scores
    estimates = interval_estimates([suite])
    assert estimates["drq_eps|3"][0] == pytest.approx(aggregate(three.scores))
    table = aggregate_markdown([suite], estimates)
    rows = [line for line in table.splitlines() if line.startswith("| drq_eps (this tool) |")]
    assert [row.split(" | ")[1:3] for row in rows] == [["8", "3"], ["9", "1"]]
    assert rows[0].count("[") == 4 and rows[1].count("[") == 0  # one run a game: no interval to show
    assert f"| {aggregate(one.scores)[0]:.3f} |" in rows[1]
    assert "(published per-game means, same games) | 9 |" in table  # all the games run
    assert "(published per-game means, the games of drq_eps with 3 runs: Alien, Amidar, " in table
    per_game = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[3] for line in games_markdown([suite]).splitlines()[4:]
    }
    assert per_game["ChopperCommand"] == "1200.0, 1"  # one run: its score, no interval
    assert per_game["Alien"].startswith(f"{np.mean(scores['Alien']):.1f} [") and per_game["Alien"].endswith(", 3")
    one_block = Suite("der", {"Alien": [634.3], "Amidar": [86.5]})  # one block: its games are der's
    assert [b.owner for b in one_block.blocks()] == ["der"]
