"""The algorithms by name (configs/algo/ and configs/algo_env/): what each composes to on each env,
that the command line still wins, that every tuned file is reachable, and every algo through the
real entrypoint on CartPole and MinAtar: train, resume, `dqn eval`, the Python API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import ROOT, TINY, assert_no_repeated_or_forked_points, compose, last_json_line, run_dqn
from test_minatar import TINY_MINATAR

import dqn_cli
from dqn_cli.config import ALGOS, to_dict
from dqn_cli.errors import CheckpointError
from dqn_cli.run.resume import check_resumable

pytest.importorskip("minatar")

ENVS = [p.stem for p in (ROOT / "configs" / "env").glob("*.yaml")]


def test_the_algo_group_is_the_algos_the_schema_knows():
    assert sorted(p.stem for p in (ROOT / "configs" / "algo").glob("*.yaml")) == sorted(ALGOS)


FAMILIES = [p.stem for p in (ROOT / "configs" / "family").glob("*.yaml")]


def test_every_tuned_file_names_an_algo_and_an_env_family_that_exist():
    """configs/algo_env/ is an optional group: a misspelled file would be skipped without a word."""
    for path in (ROOT / "configs" / "algo_env").glob("*.yaml"):
        matches = [(a, f) for a in ALGOS for f in FAMILIES if path.stem == f"{a}_{f}"]
        assert matches, f"{path.name} is not <algo>_<family> for an algo in {ALGOS} and a family in {FAMILIES}"


def test_every_env_preset_belongs_to_a_family_and_each_family_has_an_env():
    """The family (configs/family/) an env preset sets picks configs/algo_env/ALGO_FAMILY.yaml."""
    seen = {}
    for env in ENVS:
        text = (ROOT / "configs" / "env" / f"{env}.yaml").read_text()
        seen[env] = next((ln.split(":")[1].strip() for ln in text.splitlines() if "override /family:" in ln), None)
    assert {f for f in seen.values() if f} | {"classic"} == set(FAMILIES), seen
    assert seen["cartpole"] is None and seen["atari"] == "atari" and seen["atari100k"] == "atari100k"


def test_dqn_is_the_default_and_changes_nothing():
    for env in ("cartpole", "minatar", "breakout"):
        assert to_dict(compose(f"env={env}", "algo=dqn")) == to_dict(compose(f"env={env}"))
    assert compose().algo == "dqn"


def test_rainbow_sets_all_six_parts_and_no_epsilon():
    for env, network in (("minatar", "minatar_cnn"), ("breakout", "nature_cnn")):
        cfg = compose(f"env={env}", "algo=rainbow")
        n = cfg.network
        assert (cfg.algo, n.name, n.distributional, n.noisy, n.dueling) == ("rainbow", network, "c51", True, True)
        assert cfg.double_q and cfg.replay.name == "prioritized" and cfg.replay.n_step == 3
        assert cfg.schedule.epsilon_start == cfg.schedule.epsilon_end == 0.0


def test_rainbow_on_cartpole_trades_noisy_nets_for_the_presets_epsilon():
    """Measured: noisy nets left CartPole's final greedy policy unsolved on most tuning seeds."""
    cfg = compose("algo=rainbow")
    n, s = cfg.network, cfg.schedule
    assert (n.distributional, n.noisy, n.dueling, cfg.replay.name, cfg.replay.n_step) == (
        "c51",
        False,
        True,
        "prioritized",
        3,
    )
    assert (s.epsilon_start, s.epsilon_end) == (1.0, 0.05)
    assert compose("algo=rainbow", "network.noisy=true").network.noisy  # one switch puts them back


def test_rainbow_on_atari_has_the_papers_values():
    """Hessel et al. 2018, Table 1; the env preset's protocol and replay size stay."""
    cfg = compose("env=breakout", "algo=rainbow")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.eps) == ("adam", 6.25e-5, 1.5e-4)
    assert (cfg.replay.alpha, cfg.replay.beta_start, cfg.replay.beta_end) == (0.5, 0.4, 1.0)
    assert (cfg.network.atoms, cfg.network.v_min, cfg.network.v_max, cfg.network.noisy_std) == (51, -10, 10, 0.5)
    assert (cfg.target_update_period, cfg.learning_starts) == (8_000, 20_000)  # 32K and 80K frames
    assert cfg.replay.capacity == 1_000_000 and cfg.env.game == "Breakout" and cfg.env.clip_rewards
    assert to_dict(compose("env=atari", "env.game=Breakout", "algo=rainbow")) == {
        **to_dict(cfg),
        "env": {**to_dict(cfg)["env"], "name": "Breakout"},
    }


def test_nature_dqn_on_atari_is_the_papers_agent():
    cfg = compose("env=pong", "algo=nature_dqn")
    assert not cfg.double_q and not cfg.network.dueling and cfg.replay.n_step == 1 and cfg.replay.name == "uniform"
    o = cfg.optimizer
    assert (o.name, o.lr, o.alpha, o.eps, o.max_grad_norm) == ("rmsprop", 2.5e-4, 0.95, 0.01, None)
    assert (cfg.schedule.epsilon_end, cfg.schedule.epsilon_decay_steps) == (0.1, 1_000_000)
    assert cfg.target_update_period == 10_000 * cfg.train_every and cfg.tau == 1.0
    assert (cfg.eval.epsilon, cfg.eval.episodes, cfg.eval.max_episode_steps * cfg.env.frame_skip) == (0.05, 30, 18_000)


def test_c51_and_qr_dqn_switch_the_head_only_on_small_envs_and_take_the_papers_values_on_atari():
    dqn = to_dict(compose())
    # on CartPole C51 is the paper's (no dueling, the DQN target) and QR keeps the agent at twice its rate;
    # both keep the discount they were measured at (0.99) where the DQN preset moved to 0.998
    for algo, head, also in (("c51", "c51", {"double_q", "gamma"}), ("qr_dqn", "qr", {"optimizer", "gamma"})):
        cfg = to_dict(compose(f"algo={algo}"))
        changed = {k for k in dqn if dqn[k] != cfg[k]}
        assert changed == {"algo", "network", *also} and cfg["network"]["distributional"] == head
    c51 = compose("algo=c51")
    assert not c51.double_q and not c51.network.dueling and c51.network.norm == compose().network.norm == "layer"
    assert (c51.network.v_min, c51.network.v_max) == (0.0, 100.0)  # CartPole's returns: [0, 1 / (1 - gamma)]
    assert c51.network.v_max == pytest.approx(1 / (1 - c51.gamma))
    assert compose().gamma == 0.998 and compose("algo=nature_dqn").gamma == 0.99  # the Nature paper's discount
    acrobot = compose("algo=c51", "env=classic", "env.id=Acrobot-v1")  # -1 per step: negative returns too
    assert (acrobot.network.v_min, acrobot.network.v_max) == (-100.0, 100.0)
    assert compose("algo=qr_dqn").network.quantiles < compose("env=breakout", "algo=qr_dqn").network.quantiles == 200
    qr = compose("env=breakout", "algo=qr_dqn")
    assert (qr.optimizer.lr, qr.optimizer.eps, qr.double_q) == (5e-5, 3.125e-4, False)
    c51_atari = compose("env=breakout", "algo=c51")
    assert (c51_atari.optimizer.lr, c51_atari.optimizer.eps, c51_atari.double_q) == (2.5e-4, 3.125e-4, False)


def test_the_command_line_wins_over_the_algo_and_its_tuned_values():
    cfg = compose(
        "env=breakout",
        "algo=rainbow",
        "optimizer.lr=1e-3",
        "replay=uniform",
        "network.noisy=false",
        "schedule.epsilon_start=1.0",
        "target_update_period=1000",
    )
    assert (cfg.optimizer.lr, cfg.replay.name, cfg.network.noisy) == (1e-3, "uniform", False)
    assert (cfg.schedule.epsilon_start, cfg.target_update_period) == (1.0, 1000)
    assert cfg.network.distributional == "c51" and cfg.replay.n_step == 3  # what was not overridden stays
    # the order of the words does not matter
    assert to_dict(compose("optimizer.lr=1e-3", "algo=rainbow", "env=breakout")) == to_dict(
        compose("env=breakout", "algo=rainbow", "optimizer.lr=1e-3")
    )


def test_an_unknown_algo_gets_one_line_naming_the_choices(tmp_path):
    proc = run_dqn("train", "algo=rainbo", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and not (tmp_path / "run").exists()
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "algo=rainbo: no such option; choose one of c51, der, dqn, drq_eps, nature_dqn, pqn, qr_dqn, rainbow"
        in lines[0]
    )


def test_a_checkpoint_of_one_head_is_refused_by_a_run_of_another(tmp_path):
    state = {"counters": {"env_steps": 10}, "agent": {}, "rng": {}, "config": to_dict(compose("algo=c51"))}
    check_resumable(state, compose("algo=c51", "total_steps=2000"), tmp_path / "last.pt")  # its own head: fine
    for other in ("algo=dqn", "algo=qr_dqn", "algo=rainbow", "network.atoms=21"):
        with pytest.raises(CheckpointError, match=r"was saved for (network|replay)\.\w+=.* but the run's config has"):
            check_resumable(state, compose(other, "total_steps=2000"), tmp_path / "last.pt")


# ------------------------------------------------------- through the entrypoint
SMALL_HEADS = ["network.quantiles=8", "network.atoms=11"]  # seconds, not minutes, on 2 cores


@pytest.mark.parametrize("algo", [a for a in ALGOS if a != "drq_eps"])  # (drq_eps augments images: MinAtar below)
def test_every_algo_trains_resumes_and_evaluates_on_cartpole(tmp_path, algo):
    run = tmp_path / "run"
    first = run_dqn("train", f"algo={algo}", *TINY, *SMALL_HEADS, "total_steps=200", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_dqn("train", f"resume={run}", "total_steps=400")
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["algo"], summary["total_steps"]) == (algo, 400) and summary["updates"] > 0
    steps = assert_no_repeated_or_forked_points(run / "tb")
    loss = {"c51": "c51_loss", "qr_dqn": "qr_loss", "rainbow": "c51_loss", "der": "c51_loss"}.get(algo, "td_loss")
    assert steps[f"losses/{loss}"][-1] == 400
    evaluated = run_dqn("eval", f"checkpoint={run}", "episodes=2", f"hydra.run.dir={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert len(last_json_line(evaluated.stdout)["returns"]) == 2
    agent = dqn_cli.load(run)  # the Python side rebuilds the head the checkpoint records
    assert agent.config.algo == algo and agent.config.network == dqn_cli.load(run).config.network
    obs = np.zeros((3, 4), dtype=np.float32)
    actions, _ = agent.predict(obs)
    q = agent.q_network(torch.as_tensor(obs)[:, None])
    np.testing.assert_array_equal(actions, q.argmax(dim=1).numpy())


@pytest.mark.parametrize("algo", ALGOS)
def test_every_algo_trains_on_minatar(tmp_path, algo):
    run = tmp_path / "run"
    proc = run_dqn("train", *TINY_MINATAR, f"algo={algo}", *SMALL_HEADS, f"hydra.run.dir={run}", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["algo"] == algo and summary["updates"] > 0 and summary["final_eval_mean_return"] is not None
    saved = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert saved["config"]["algo"] == algo and saved["config"]["network"]["name"] == "minatar_cnn"
