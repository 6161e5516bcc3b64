"""`dqn plot`: curves over seeds from a real sweep, with a table whose numbers match the runs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from helpers import job_dirs, run_dqn, sweep
from PIL import Image

from dqn_cli.app.plot import moving_average_curve
from dqn_cli.app.stats import bootstrap_ci, iqm


def test_statistics_by_hand():
    assert iqm(np.array([1.0, 2.0, 3.0, 4.0, 100.0, -50.0, 5.0, 6.0])) == pytest.approx(np.mean([2, 3, 4, 5]))
    lo, hi = bootstrap_ci(np.array([1.0, 2.0, 3.0, 4.0]), np.random.default_rng(0))
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    assert bootstrap_ci(np.array([7.0]), np.random.default_rng(0)) == (7.0, 7.0)
    episodes = np.array([[10, 1.0], [20, 3.0], [30, 5.0]])
    got = moving_average_curve(episodes, np.array([5, 10, 25, 30]), window=2)
    assert np.isnan(got[0]) and got[1:].tolist() == [1.0, 2.0, 4.0]


def test_plot_of_a_sweep_groups_seeds_and_tabulates_their_summaries(tmp_path):
    sweep_dir, proc = sweep(tmp_path, "seed=1,2", "optimizer.lr=1e-3,3e-3", "eval.every=100", "eval.episodes=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "fig" / "curves.png"
    proc = run_dqn("plot", str(sweep_dir), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    with Image.open(out) as image:
        image.load()
        assert image.size[0] > 200 and image.size[1] > 200
    with open(out.with_suffix(".csv"), newline="") as f:
        rows = {r["configuration"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"optimizer.lr=0.001", "optimizer.lr=0.003"}
    for label, row in rows.items():
        lr = float(label.split("=")[1])
        finals = [
            json.loads((d / "summary.json").read_text())["final_eval_mean_return"]
            for d in job_dirs(sweep_dir)
            if yaml.safe_load((d / ".hydra" / "config.yaml").read_text())["optimizer"]["lr"] == lr
        ]
        assert len(finals) == 2 and int(row["runs"]) == 2
        assert float(row["final_mean"]) == pytest.approx(np.mean(finals))
        assert float(row["ci95_low"]) <= float(row["final_mean"]) <= float(row["ci95_high"])
    assert "| optimizer.lr=0.001 | 2 |" in out.with_suffix(".md").read_text()
    train = run_dqn("plot", str(sweep_dir), "--metric", "train", "--reference", "CartPole-v1=475", cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    assert (sweep_dir / "plot_train.png").is_file()


def test_bad_paths_get_one_line(tmp_path):
    proc = run_dqn("plot", str(tmp_path / "nope"), cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "no such file" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_dqn("plot", str(tmp_path / "empty"), cwd=tmp_path)
    assert proc.returncode == 2 and "no runs in it" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_dqn("plot", str(tmp_path / "empty"), "--reference", "oops", cwd=tmp_path)
    assert proc.returncode == 2 and "ENV=VALUE" in proc.stderr


def test_a_run_saved_before_a_key_existed_groups_with_one_at_its_default(tmp_path):
    """Committed results outlive the schema: a config without network.noisy or algo reads as their
    defaults, so it is one configuration with a newer run that has them; a real difference still splits."""
    from dqn_cli.app.plot import group_runs, read_run
    from dqn_cli.config import TrainConfig, to_dict

    new = to_dict(TrainConfig())
    old = {**new, "network": {k: v for k, v in new["network"].items() if k not in ("noisy", "atoms")}}
    old.pop("algo")
    other = {**new, "algo": "rainbow", "network": {**new["network"], "noisy": True}}
    for name, config in (("old", old), ("new", new), ("other", other)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(config))
    groups = group_runs([read_run(tmp_path / n) for n in ("old", "new", "other")])
    assert sorted(len(g.runs) for g in groups) == [1, 2]
    assert {g.label for g in groups} == {"algo=dqn", "algo=rainbow"}  # not the keys rainbow switches


def test_with_several_algos_a_panel_with_one_algo_still_names_it(tmp_path):
    """MinAtar by algo: Seaquest ran only dqn, and its line says algo=dqn as the other panels' do."""
    from dqn_cli.app.plot import group_runs, read_run
    from dqn_cli.config import TrainConfig, to_dict

    base = to_dict(TrainConfig())
    runs = {
        "a_dqn": {**base, "env": {**base["env"], "id": "A-v0"}},
        "a_pqn": {**base, "env": {**base["env"], "id": "A-v0"}, "algo": "pqn"},
        "b_dqn": {**base, "env": {**base["env"], "id": "B-v0"}},
    }
    for name, config in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(config))
    groups = group_runs([read_run(tmp_path / n) for n in runs])
    assert sorted((g.env, g.label) for g in groups) == [
        ("A-v0", "algo=dqn"),
        ("A-v0", "algo=pqn"),
        ("B-v0", "algo=dqn"),
    ]
