"""`dqn train resume=RUN_DIR`: full-state checkpoints, exact resume, TensorBoard continuity,
and refusals that leave the run untouched."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import EXACT, TINY, assert_no_repeated_or_forked_points, compose, run_dqn, snapshot, without

from dqn_cli.config import EnvConfig
from dqn_cli.envs.vector import capture_envs, restore_envs


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}.{k} differs"


# ------------------------------------------------------------ the checkpoint
def test_checkpoint_holds_the_full_state_as_plain_data(trained_run):
    state = load(trained_run / "checkpoints" / "last.pt")  # weights_only=True: tensors and plain data only
    for key in ("config", "spec", "counters", "agent", "episode_stats", "rng", "envs"):
        assert key in state, key
    assert set(state["agent"]) >= {"q_network", "target_network", "optimizer", "exploration"}
    assert state["agent"]["optimizer"]["state"], "optimizer moments are saved"
    assert {"env_steps", "updates", "target_updates", "wall_seconds", "finished"} <= state["counters"].keys()
    assert state["counters"]["finished"] is True
    assert {"python", "numpy", "torch"} <= state["rng"].keys()
    envs = state["envs"]  # classic-control envs: simulator state for an exact resume
    assert envs["kind"] == "classic_control" and len(envs["np_random"]) == 4
    assert tuple(envs["obs"].shape) == (4, 1, 4)
    assert not (trained_run / "checkpoints" / "replay.npz").exists()  # only with checkpoint.save_replay=true


def assert_envs_continue_after_a_round_trip(make, cfg, stacker, actions) -> None:
    """Envs ``a`` stepped 100 steps, captured, saved and loaded as data (weights_only), restored
    into envs ``b`` reset with other seeds: the next steps (episode ends and new episodes'
    starts included) are bitwise the same. ``make(cfg)`` builds a vector env of 2 envs,
    ``stacker()`` a FrameStacker for it, ``actions`` (T, 2)."""
    a, b = make(cfg), make(cfg)
    try:
        sa, sb = stacker(), stacker()
        sa.reset(a.reset(seed=[1, 2])[0])
        for t in range(100):
            frames, _, term, trunc, _ = a.step(actions[t])
            sa.step(frames, term | trunc)
        buf = io.BytesIO()
        torch.save(capture_envs(a, sa, cfg), buf)
        buf.seek(0)
        saved = torch.load(buf, weights_only=True)
        sb.reset(b.reset(seed=[50, 60])[0])
        assert restore_envs(b, sb, saved)
        np.testing.assert_array_equal(sa.obs, sb.obs)
        ends = 0
        for t in range(100, len(actions)):
            fa, ra, ta, ua, _ = a.step(actions[t])
            fb, rb, tb, ub, _ = b.step(actions[t])
            np.testing.assert_array_equal(fa, fb)
            assert (ra == rb).all() and (ta == tb).all() and (ua == ub).all()
            ends += int((ta | ua).sum())
        assert ends >= 4  # the episodes that started after the restore were drawn the same way
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_env_state_round_trips_through_a_checkpoint(vectorization):
    """Classic-control envs (CartPole, 30-step episodes)."""
    from dqn_cli.envs.vector import FrameStacker, make_vector_env

    assert_envs_continue_after_a_round_trip(
        lambda cfg: make_vector_env(cfg, 2, seed=1),
        EnvConfig(vectorization=vectorization, num_envs=2, max_episode_steps=30),
        lambda: FrameStacker(2, 1, (4,), np.float32),
        np.random.default_rng(0).integers(0, 2, size=(250, 2)),
    )


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_atari_state_round_trips_through_a_checkpoint(vectorization):
    """Atari envs with no-op starts and lives, and a short frame cap so that games restart (their
    no-op draws included) after the restore."""
    from dqn_cli.envs.atari import make_vector_env
    from dqn_cli.envs.vector import FrameStacker

    cfg = EnvConfig(kind="atari", game="Breakout", vectorization=vectorization, num_envs=2, max_episode_steps=60)
    assert_envs_continue_after_a_round_trip(
        lambda cfg: make_vector_env(cfg, 2, seed=1),
        cfg,
        lambda: FrameStacker(2, 4, (84, 84), np.uint8),
        np.random.default_rng(0).integers(0, 4, size=(250, 2)),
    )


def test_atari_state_is_not_restored_into_another_game():
    from dqn_cli.envs.atari import make_vector_env
    from dqn_cli.envs.vector import FrameStacker

    cfg = EnvConfig(kind="atari", game="Breakout", vectorization="sync", num_envs=1)
    other = EnvConfig(kind="atari", game="Pong", vectorization="sync", num_envs=1)
    a, b = make_vector_env(cfg, 1, seed=1), make_vector_env(other, 1, seed=1)
    try:
        sa, sb = FrameStacker(1, 4, (84, 84), np.uint8), FrameStacker(1, 4, (84, 84), np.uint8)
        sa.reset(a.reset(seed=[1])[0])
        sb.reset(b.reset(seed=[1])[0])
        before = sb.obs.copy()
        assert not restore_envs(b, sb, capture_envs(a, sa, cfg))
        np.testing.assert_array_equal(sb.obs, before)
    finally:
        a.close()
        b.close()


def test_envs_whose_state_does_not_round_trip_are_not_captured():
    """The C++ threads of the ale and envpool backends; sticky actions (ALE keeps the action a
    sticky step repeats outside its saved state); Qbert and Tetris (ALE 0.12's restore misses
    their partial-frame flag): those resumes start fresh episodes instead of claiming exactness."""
    from dqn_cli.envs.atari import restores_exactly

    for cfg in (
        EnvConfig(kind="atari", vectorization="ale"),
        EnvConfig(kind="atari", vectorization="envpool"),
        EnvConfig(kind="atari", vectorization="sync", sticky_action_prob=0.25),
        EnvConfig(kind="atari", vectorization="sync", game="Qbert"),
        EnvConfig(kind="atari", vectorization="async", game="tetris"),
    ):
        assert not restores_exactly(cfg)
        assert capture_envs(None, None, cfg) is None
    assert restores_exactly(EnvConfig(kind="atari", vectorization="sync", game="ms_pacman"))
    assert restore_envs(None, None, None) is False


# ------------------------------------------------------------ resume end to end
def test_resume_continues_the_run_tensorboard_and_summary(tmp_path):
    run = tmp_path / "run"
    first = run_dqn("train", *TINY, "torch_threads=1", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    first_summary = json.loads((run / "summary.json").read_text())
    overrides_before = (run / ".hydra" / "overrides.yaml").read_text()

    again = run_dqn("train", f"resume={run}", "total_steps=800")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.strip() == ""
    assert "resumed" in again.stdout and "at env step 400" in again.stdout

    summary = json.loads((run / "summary.json").read_text())
    assert summary["total_steps"] == 800
    assert summary["wall_seconds"] > first_summary["wall_seconds"]  # over both lives
    last = load(run / "checkpoints" / "last.pt")
    # counters continued: 300 + 400 owed, less the few owed while the empty buffer refilled (dropped)
    dropped = last["counters"]["updates_dropped"]
    assert 0 < dropped <= 40 and summary["updates"] == 700 - dropped
    assert last["counters"]["env_steps"] == 800 and last["counters"]["updates"] == 700 - dropped
    assert last["agent"]["optimizer"]["state"][0]["step"].item() == 700 - dropped  # Adam's moments continued too
    steps = assert_no_repeated_or_forked_points(run / "tb")
    assert steps["eval/mean_return"][-1] == 800 and steps["charts/epsilon"][-1] == 800
    # the CSVs continue too: the rows up to the checkpoint kept, none repeated
    evals = [int(line.split(",")[0]) for line in (run / "evals.csv").read_text().splitlines()[1:]]
    assert evals == steps["eval/mean_return"] and evals[-1] == 800
    episode_steps = [int(line.split(",")[0]) for line in (run / "episodes.csv").read_text().splitlines()[1:]]
    assert episode_steps == sorted(episode_steps) and episode_steps == steps["charts/episodic_return"]
    assert max(steps["charts/epsilon"][:-1]) < 800
    # one run dir: the resumed life wrote into it, with the new budget recorded
    assert "total_steps: 800" in (run / ".hydra" / "config.yaml").read_text()
    assert (run / ".hydra" / "overrides.yaml").read_text() == overrides_before
    assert "resumed" in (run / "train.log").read_text()
    assert [p.name for p in (run / "checkpoints").glob("step_*.pt")] and len(list(run.parent.iterdir())) == 1


def test_exact_resume_gives_the_parameters_of_the_uninterrupted_run(tmp_path):
    """CPU, fixed seed, checkpoint.save_replay=true, classic-control envs: 200 steps then
    resume to 400 == 400 steps at once, bitwise (networks, optimizer, counters, episode stats)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    a = run_dqn("train", *EXACT, f"hydra.run.dir={straight}")
    assert a.returncode == 0, a.stderr[-3000:]
    b = run_dqn("train", *without(EXACT, "total_steps"), "total_steps=200", f"hydra.run.dir={split}")
    assert b.returncode == 0, b.stderr[-3000:]
    c = run_dqn("train", f"resume={split}", "total_steps=400")
    assert c.returncode == 0, c.stderr[-3000:]
    assert "replay buffer restored" in c.stdout

    # the state at 200 was the same (a mid-run checkpoint vs the end of a 200-step run) ...
    assert_same_tensors(
        load(straight / "checkpoints" / "step_000000200.pt")["agent"]["q_network"],
        load(split / "checkpoints" / "step_000000200.pt")["agent"]["q_network"],
        "q@200",
    )
    # ... and so is the state at 400
    x = load(straight / "checkpoints" / "step_000000400.pt")
    y = load(split / "checkpoints" / "step_000000400.pt")
    assert_same_tensors(x["agent"]["q_network"], y["agent"]["q_network"], "q_network")
    assert_same_tensors(x["agent"]["target_network"], y["agent"]["target_network"], "target_network")
    for i, s in x["agent"]["optimizer"]["state"].items():
        assert_same_tensors(s, y["agent"]["optimizer"]["state"][i], f"adam[{i}]")
    assert x["agent"]["exploration"] == y["agent"]["exploration"]
    for k in ("env_steps", "updates", "target_updates"):
        assert x["counters"][k] == y["counters"][k], k
    assert x["episode_stats"] == y["episode_stats"]
    np.testing.assert_array_equal(x["envs"]["obs"].numpy(), y["envs"]["obs"].numpy())
    assert (
        json.loads((straight / "summary.json").read_text())["final_eval_mean_return"]
        == json.loads((split / "summary.json").read_text())["final_eval_mean_return"]
    )
    assert_no_repeated_or_forked_points(split / "tb")


def test_resume_without_saved_replay_continues_but_is_not_exact(tmp_path):
    """Without replay.npz the buffer restarts empty (resume.py explains why that is not exact);
    networks, optimizer and counters still continue from the checkpoint."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    base = without(EXACT, "checkpoint.save_replay")
    assert run_dqn("train", *base, f"hydra.run.dir={straight}").returncode == 0
    assert run_dqn("train", *without(base, "total_steps"), "total_steps=200", f"hydra.run.dir={split}").returncode == 0
    at_200 = load(split / "checkpoints" / "last.pt")
    proc = run_dqn("train", f"resume={split}", "total_steps=400", "log_every=4")  # logs before its 1st update
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replay buffer starts empty" in proc.stdout
    y = load(split / "checkpoints" / "last.pt")
    dropped = y["counters"]["updates_dropped"] - at_200["counters"].get("updates_dropped", 0)
    assert 0 < dropped <= 40  # owed while the empty buffer refilled: dropped, not run in a burst
    assert y["counters"]["env_steps"] == 400 and y["counters"]["updates"] == 300 - dropped
    assert y["counters"]["target_updates"] == 8
    assert y["agent"]["optimizer"]["state"][0]["step"].item() == 300 - dropped  # Adam continued from 100 updates
    assert y["episode_stats"]["episodes"] > at_200["episode_stats"]["episodes"]
    x = load(straight / "checkpoints" / "step_000000400.pt")
    differs = any(not torch.equal(v, y["agent"]["q_network"][k]) for k, v in x["agent"]["q_network"].items())
    assert differs, "without the replay buffer the resumed run cannot be exact"


def test_resume_after_the_final_evaluation_needs_a_larger_budget(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = snapshot(run)
    proc = run_dqn("train", f"resume={run}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "finished at 400 env steps" in proc.stderr and "total_steps=800" in proc.stderr
    assert snapshot(run) == before


def test_replay_is_written_into_a_run_without_checkpoints_yet(tmp_path):
    """The replay is written before the model files, so the run's first checkpoint makes the dir."""
    from dqn_cli.run import checkpoint as ckpt

    ckpt.save_replay(tmp_path / "run" / "checkpoints", {"a": np.arange(3)}, 5)
    with ckpt.open_replay(tmp_path / "run" / "checkpoints") as (step, arrays):
        assert step == 5 and arrays["a"].tolist() == [0, 1, 2]


def test_checkpoint_replay_round_trip(tmp_path):
    """replay.npz is tagged with its env step and read back one array at a time."""
    from dqn_cli.replay.storage import ReplayBuffer
    from dqn_cli.run import checkpoint as ckpt

    buf = ReplayBuffer(64, 2, (3,), np.float32, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        buf.add(
            rng.random((2, 1, 3), dtype=np.float32),
            np.array([0, 1]),
            np.ones(2, np.float32),
            np.zeros(2, bool),
            np.zeros(2, bool),
            None,
        )
    ckpt.save_replay(tmp_path, buf.state_dict(), step=40)
    other = ReplayBuffer(64, 2, (3,), np.float32, seed=5)
    with ckpt.open_replay(tmp_path) as saved:
        step, arrays = saved
        assert step == 40
        other.load_state_dict(arrays)
    np.testing.assert_array_equal(other.frames, buf.frames)
    assert other.sample(8).indices.tolist() == buf.sample(8).indices.tolist()  # sampling generator restored
    (tmp_path / "replay.npz").write_bytes(b"not a zip")
    with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt"):
        with ckpt.open_replay(tmp_path):
            pass


# ------------------------------------------------- the buffer meets resumed envs
def _chain_buffer(kind: str, num_envs=2, frame_stack=2, n_step=3, capacity=120):
    """A buffer whose frames are [episode id, t]: any stack or window that mixes episodes shows."""
    from dqn_cli.replay.samplers import PrioritizedSampler, UniformSampler
    from dqn_cli.replay.storage import ReplayBuffer

    sampler = PrioritizedSampler(alpha=0.6, eps=1e-6) if kind == "prioritized" else UniformSampler()
    return ReplayBuffer(
        capacity, num_envs, (2,), np.float32, frame_stack=frame_stack, n_step=n_step, gamma=0.5, sampler=sampler
    )


def _play(buf, stacker, episode_ids, steps, start_t=0):
    """``steps`` vector steps of never-ending episodes; returns the stacks after the last one."""
    E = len(episode_ids)
    for t in range(start_t, start_t + steps):
        obs = stacker.obs.copy()
        buf.add(obs, np.ones(E, np.int64), np.ones(E, np.float32), np.zeros(E, bool), np.zeros(E, bool), None)
        frames = np.array([[ep, t + 1] for ep in episode_ids], np.float32)
        stacker.step(frames, np.zeros(E, bool))
    return stacker.obs.copy()


def _all_valid(buf):
    envs, slots = np.nonzero(buf.valid)
    return buf._gather(envs, slots, np.ones(envs.size, np.float32))


@pytest.mark.parametrize("kind", ["uniform", "prioritized"])
def test_restored_buffer_ends_the_open_episodes_when_the_envs_start_fresh(kind):
    """Atari (and any env resume cannot capture) starts new episodes on resume: the episodes the
    restored buffer left open end there as truncated, so no window or stack spans the two."""
    from dqn_cli.envs.vector import FrameStacker

    buf = _chain_buffer(kind)
    stacker = FrameStacker(2, 2, (2,), np.float32)
    stacker.reset(np.array([[1, 0], [2, 0]], np.float32))
    _play(buf, stacker, [1, 2], 10)
    resumed = _chain_buffer(kind)
    resumed.load_state_dict(buf.state_dict())

    stacker = FrameStacker(2, 2, (2,), np.float32)
    fresh = stacker.reset(np.array([[7, 0], [8, 0]], np.float32))
    resumed.resume_episodes(fresh, continued=False)
    _play(resumed, stacker, [7, 8], 10)

    batch = _all_valid(resumed)
    ids = np.concatenate([batch.obs[..., 0], batch.next_obs[..., 0]], axis=1)
    assert (ids == ids[:, :1]).all(), "a transition mixes two episodes"
    old = batch.obs[:, -1, 0] < 7
    assert old.sum() == 2 * 9  # per env: steps 0..8 of the old episode; step 9 became its final frame
    last = old & (batch.obs[:, -1, 1] == 8)  # truncated after one step: r, bootstrap gamma from frame 9
    np.testing.assert_array_equal(batch.next_obs[last][:, -1, 1], [9, 9])
    np.testing.assert_allclose(batch.discounts[last], 0.5)
    np.testing.assert_allclose(batch.returns[last], 1.0)
    two_back = old & (batch.obs[:, -1, 1] == 7)
    np.testing.assert_allclose(batch.discounts[two_back], 0.25)
    np.testing.assert_allclose(batch.returns[two_back], 1.5)
    start = ~old & (batch.obs[:, -1, 1] == 0)  # the new episodes' first stacks are reset padding
    np.testing.assert_array_equal(batch.obs[start][:, :, 1], [[0, 0], [0, 0]])


def test_continued_episodes_into_an_empty_buffer_keep_the_stacks_acted_on():
    """Exact env resume without replay.npz: the stored stacks equal those the agent acted on."""
    from dqn_cli.envs.vector import FrameStacker

    stacker = FrameStacker(2, 3, (2,), np.float32)
    stacker.reset(np.array([[1, 0], [2, 0]], np.float32))
    scratch = _chain_buffer("uniform", frame_stack=3)
    acted_on = _play(scratch, stacker, [1, 2], 5)  # frames t = 3, 4, 5 in each env's stack

    buf = _chain_buffer("uniform", frame_stack=3)
    buf.resume_episodes(acted_on, continued=True)
    _play(buf, stacker, [1, 2], 6, start_t=5)
    batch = _all_valid(buf)
    first = batch.obs[:, -1, 1] == 5
    np.testing.assert_array_equal(batch.obs[first], acted_on[np.argsort(acted_on[:, -1, 0])])
    assert len(buf) == 2 * (6 - 3)  # history slots are never sampled as starts


class ChainEnv(gym.Env):
    """obs = [1000 * reset seed + episode, t], reward 1, never terminates: an env resume cannot capture."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.base, self.ep = seed % 10_000, -1  # run seeds are 63-bit: folded so ids stay exact in float32
        self.ep, self.t = self.ep + 1, 0
        return np.array([self.base * 1000 + self.ep, 0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.base * 1000 + self.ep, self.t], np.float32), 1.0, False, False, {}


def test_resume_with_fresh_episodes_and_the_saved_buffer_mixes_no_episodes(tmp_path):
    """The real trainer, run then resumed with checkpoint.save_replay=true, on an env whose state
    is not captured: the saved buffer's transitions each stay within one episode."""
    from helpers import load_replay

    from dqn_cli.replay.storage import ReplayBuffer
    from dqn_cli.run.trainer import train

    if "TestChain-v0" not in gym.registry:
        gym.register("TestChain-v0", entry_point=ChainEnv, max_episode_steps=500)
    (tmp_path / ".hydra").mkdir()

    def cfg(total, resume):
        return compose(
            "env.name=chain",
            "env.id=TestChain-v0",
            "env.num_envs=2",
            "env.frame_stack=2",
            "network.hidden_sizes=[8]",
            "replay.capacity=200",
            "replay.n_step=3",
            "eval.every=0",
            "eval.episodes=1",
            "checkpoint.every=0",
            "checkpoint.save_replay=true",
            f"total_steps={total}",
            "learning_starts=10",
            "batch_size=4",
            "gamma=0.5",
            "device=cpu",
            "progress=off",
            "torch_threads=1",
            f"resume={resume or 'null'}",
        )

    train(cfg(20, None), tmp_path)
    train(
        cfg(40, str(tmp_path)), tmp_path, overrides=["total_steps=40"]
    )  # the envs restart with fresh seeds (runtime's resume_envs stream)
    buf = ReplayBuffer(200, 2, (2,), np.float32, frame_stack=2, n_step=3, gamma=0.5)
    buf.load_state_dict(dict(load_replay(tmp_path / "checkpoints")))
    batch = _all_valid(buf)
    ids = np.concatenate([batch.obs[..., 0], batch.next_obs[..., 0]], axis=1)
    assert len(np.unique(ids[:, 0])) == 4  # two episodes per env: before and after the resume
    assert (ids == ids[:, :1]).all(), "a transition mixes two episodes"
