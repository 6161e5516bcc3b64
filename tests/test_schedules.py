"""Schedules are pure functions of the env step: checked by value."""

from __future__ import annotations

import math

import pytest
from helpers import compose

from dqn_cli.config import ReplayConfig, ScheduleConfig, TrainConfig, validate
from dqn_cli.core.schedules import beta_schedule, epsilon_schedule, exponential, linear, piecewise


def test_linear_by_value():
    f = linear(1.0, 0.1, 1000)
    assert f(0) == 1.0
    assert f(250) == pytest.approx(0.775)
    assert f(500) == pytest.approx(0.55)
    assert f(1000) == pytest.approx(0.1)
    assert f(5000) == pytest.approx(0.1)  # constant after the end
    assert f(-10) == 1.0  # never before the start
    rising = linear(0.4, 1.0, 100)
    assert rising(25) == pytest.approx(0.55) and rising(100) == pytest.approx(1.0)
    assert linear(0.3, 0.2, 0)(1) == pytest.approx(0.2)  # zero duration: at the end from step 1


def test_exponential_by_value():
    f = exponential(1.0, 0.05, 1000)
    assert f(0) == 1.0
    assert f(1000) == pytest.approx(0.05 + 0.95 * math.exp(-1))  # 0.399486...
    assert f(1000) == pytest.approx(0.3994860, abs=1e-6)
    assert f(2000) == pytest.approx(0.05 + 0.95 * math.exp(-2))
    assert f(10**7) == pytest.approx(0.05)
    assert f(-5) == 1.0
    values = [f(s) for s in range(0, 5000, 100)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing


def test_piecewise_by_value():
    f = piecewise([[0, 1.0], [5000, 0.1], [20000, 0.02]])
    assert f(0) == 1.0
    assert f(2500) == pytest.approx(0.55)
    assert f(5000) == pytest.approx(0.1)
    assert f(12500) == pytest.approx(0.06)
    assert f(20000) == pytest.approx(0.02)
    assert f(10**6) == pytest.approx(0.02)
    g = piecewise([[100, 0.5], [0, 1.0]])  # given out of order
    assert g(50) == pytest.approx(0.75) and g(-1) == 1.0
    h = piecewise([[1000, 0.3], [2000, 0.1]])
    assert h(0) == 0.3  # constant before the first point
    assert piecewise([[10, 0.7]])(10**9) == 0.7


def test_epsilon_schedule_dispatch():
    lin = epsilon_schedule(
        ScheduleConfig(name="linear", epsilon_start=1.0, epsilon_end=0.05, epsilon_decay_steps=10_000)
    )
    assert lin(5000) == pytest.approx(0.525) and lin(20_000) == pytest.approx(0.05)
    exp = epsilon_schedule(
        ScheduleConfig(name="exponential", epsilon_start=1.0, epsilon_end=0.05, epsilon_decay_steps=5000)
    )
    assert exp(5000) == pytest.approx(0.05 + 0.95 / math.e)
    pw = epsilon_schedule(ScheduleConfig(name="piecewise", points=[[0, 1.0], [100, 0.0]]))
    assert pw(25) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        epsilon_schedule(ScheduleConfig(name="cosine"))


def test_beta_schedule_by_value():
    beta = beta_schedule(ReplayConfig(beta_start=0.4, beta_end=1.0, beta_steps=100_000))
    assert beta(0) == pytest.approx(0.4)
    assert beta(25_000) == pytest.approx(0.55)
    assert beta(50_000) == pytest.approx(0.7)
    assert beta(100_000) == pytest.approx(1.0)
    assert beta(200_000) == pytest.approx(1.0)


def test_beta_has_its_own_settings_whatever_the_epsilon_schedule():
    """schedule=exponential used to bend beta's curve too; beta now reads only the replay group."""
    for schedule in (
        ["schedule=linear"],
        ["schedule=exponential"],
        ["schedule=piecewise", "schedule.points=[[0,1.0],[10,0.1]]"],
    ):
        cfg = compose("replay=prioritized", *schedule, "total_steps=100000")
        assert cfg.replay.beta_steps == 100_000  # fixed when the run starts
        start = cfg.replay.beta_start
        assert beta_schedule(cfg.replay)(50_000) == pytest.approx(start + (1 - start) / 2)


def test_beta_horizon_survives_a_resume_with_a_larger_budget(tmp_path):
    """resume=... total_steps=4N must not stretch beta's annealing (it would jump backwards)."""
    from omegaconf import OmegaConf

    from dqn_cli.run.resume import resumed_config

    first = compose("replay=prioritized", "total_steps=1000", "learning_starts=100")
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.structured(first), tmp_path / ".hydra" / "config.yaml")
    composed = compose("replay=prioritized", "total_steps=4000", "learning_starts=100")
    resumed = resumed_config(composed, tmp_path, [f"resume={tmp_path}", "total_steps=4000"])
    assert resumed.total_steps == 4_000 and resumed.replay.beta_steps == 1_000
    assert beta_schedule(resumed.replay)(1_000) == pytest.approx(1.0)
    assert beta_schedule(resumed.replay)(500) == beta_schedule(first.replay)(500)


def test_schedules_are_pure():
    f = linear(1.0, 0.0, 10)
    assert [f(s) for s in (3, 7, 3)] == [f(3), f(7), f(3)]
    g = piecewise([[0, 1.0], [10, 0.0]])
    assert g(4) == g(4) == pytest.approx(0.6)


def test_points_without_the_piecewise_schedule_are_refused_not_ignored():
    from dqn_cli.config import ConfigError

    with pytest.raises(ConfigError, match="schedule.points is read by schedule=piecewise only"):
        compose("schedule=linear", "+schedule.points=[[0,1.0],[100,0.1]]")
    compose("schedule=piecewise", "schedule.points=[[0,1.0],[100,0.1]]")


def test_learning_rate_is_constant_or_annealed_linearly_over_a_fixed_horizon():
    from dqn_cli.config import OptimizerConfig
    from dqn_cli.core.schedules import learning_rate_schedule

    assert learning_rate_schedule(OptimizerConfig(lr=3e-4))(10**9) == 3e-4
    cfg = validate(TrainConfig(optimizer=OptimizerConfig(lr=1e-3, lr_end=1e-4), total_steps=10_000))
    assert cfg.optimizer.lr_decay_steps == 10_000  # fixed when the run starts, like beta's horizon
    lr = learning_rate_schedule(cfg.optimizer)
    assert lr(0) == pytest.approx(1e-3) and lr(5_000) == pytest.approx(5.5e-4) and lr(20_000) == pytest.approx(1e-4)
