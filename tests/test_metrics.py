"""What TensorBoard shows after a run: the tags users know, against env steps, and the HParams tab."""

from __future__ import annotations

import io
import json
import math
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import TINY, TRAINING_TAGS, run_dqn
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from dqn_cli.run.metrics import HPARAM_METRICS, RunLogger, encode_gif, flatten_config

TAGS = TRAINING_TAGS
PER_TAGS = ["per/beta", "per/mean_importance_weight"]
TOTAL_STEPS = 400  # TINY's budget


def load(tb_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def per_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("per") / "cartpole_per"
    proc = run_dqn("train", *TINY, "replay=prioritized", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


# ------------------------------------------------------------ end to end
@pytest.mark.slow
def test_a_run_logs_the_usual_tags_against_env_steps(trained_run):
    acc = load(trained_run / "tb")
    tags = set(acc.Tags()["scalars"])
    missing = [t for t in TAGS if t not in tags]
    assert not missing, f"missing TensorBoard tags {missing}; have {sorted(tags)}"
    for tag in TAGS:
        s = steps(acc, tag)
        assert s == sorted(s), f"{tag} steps go backwards"
        assert all(0 < x <= TOTAL_STEPS for x in s), f"{tag} not logged against env steps: {s}"
    assert steps(acc, "eval/mean_return") == [200, 400]  # eval.every=200 and the final one
    assert steps(acc, "perf/env_steps_per_second") == [100, 200, 300, 400]  # log_every=100 env steps
    assert steps(acc, "losses/td_loss")[-1] == TOTAL_STEPS
    assert not any(t.startswith("per/") for t in tags)  # no PER stats with uniform replay


@pytest.mark.slow
def test_prioritized_replay_adds_its_stats(per_run):
    acc = load(per_run / "tb")
    tags = set(acc.Tags()["scalars"])
    for tag in TAGS + PER_TAGS:
        assert tag in tags, f"missing {tag}; have {sorted(tags)}"
    assert steps(acc, "per/beta")[-1] == TOTAL_STEPS
    beta = [e.value for e in acc.Scalars("per/beta")]
    assert all(0 < b <= 1 for b in beta) and beta == sorted(beta)  # annealed towards 1
    assert all(0 < e.value <= 1 for e in acc.Scalars("per/mean_importance_weight"))  # max-normalised


@pytest.mark.slow
def test_hparams_are_in_the_runs_own_tb_dir(trained_run):
    tb = trained_run / "tb"
    assert not [p for p in tb.iterdir() if p.is_dir()], "hparams must not go to a sub-directory (add_hparams)"
    acc = load(tb)
    content = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= content.keys()

    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = dict(start.hparams)
    config = yaml.safe_load((trained_run / ".hydra" / "config.yaml").read_text())
    assert hp["optimizer.lr"].number_value == pytest.approx(float(config["optimizer"]["lr"]))
    assert hp["batch_size"].number_value == 16
    assert hp["replay.capacity"].number_value == 1000
    assert hp["env.id"].string_value == "CartPole-v1"
    assert hp["network.hidden_sizes"].string_value == "[16]"
    assert hp["resume"].string_value == "null"

    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == set(HPARAM_METRICS)

    summary = json.loads((trained_run / "summary.json").read_text())
    for tag in HPARAM_METRICS:  # the metrics are curves the run logs anyway: no one-point hparams/* cards
        events = acc.Scalars(tag)
        assert len(events) >= 2 and events[-1].step == TOTAL_STEPS
    assert acc.Scalars("eval/mean_return")[-1].value == pytest.approx(summary["final_eval_mean_return"])
    assert acc.Scalars("eval/best_mean_return")[-1].value == pytest.approx(summary["best_eval_mean_return"])
    assert not [tag for tag in acc.Tags()["scalars"] if tag.startswith("hparams/")]


# ------------------------------------------------------------- the pieces
def test_flatten_config_makes_dotted_keys_of_plain_values():
    flat = flatten_config(
        {
            "seed": 1,
            "double_q": True,
            "resume": None,
            "network": {"hidden_sizes": [64, 64], "name": "mlp", "dueling": {"on": False}},
            "optimizer": {"lr": 1e-4, "max_grad_norm": None},
            "shape": (1, 2),
            "gamma": np.float32(0.5),
        }
    )
    assert flat == {
        "seed": 1,
        "double_q": True,
        "resume": "null",
        "network.hidden_sizes": "[64, 64]",
        "network.name": "mlp",
        "network.dueling.on": False,
        "optimizer.lr": 1e-4,
        "optimizer.max_grad_norm": "null",
        "shape": "[1, 2]",
        "gamma": 0.5,
    }
    assert all(isinstance(v, (int, float, str, bool)) for v in flat.values())


def _decode(data: bytes) -> tuple[int, list[int], tuple[int, int]]:
    gif = Image.open(io.BytesIO(data))
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    return gif.n_frames, durations, gif.size


def test_encode_gif_keeps_it_small_and_real_time():
    frames = []
    for i in range(1000):  # a red block moving over white, as a game screen would
        frame = np.full((400, 600, 3), 255, dtype=np.uint8)
        frame[100:140, (i % 280) * 2 : (i % 280) * 2 + 40] = (200, 30, 30)
        frames.append(frame)
    data, height, width = encode_gif(frames, fps=50)
    n, durations, size = _decode(data)
    assert (width, height) == size == (300, 200)  # at most 320 wide, aspect kept
    assert n <= 300
    stride = math.ceil(1000 / 300)
    assert durations[1] == pytest.approx(1000 * stride / 50, abs=10)  # real time
    short, h, w = encode_gif(frames[:20], fps=50)
    n, durations, _ = _decode(short)
    assert n == 10 and durations[1] == pytest.approx(40, abs=10)  # every 2nd frame at 25 fps
    odd, h, w = encode_gif([np.zeros((41, 63, 3), np.uint8), np.full((41, 63, 3), 255, np.uint8)], fps=15)
    assert (h, w) == (41, 63) and _decode(odd)[0] == 2


def test_run_logger_writes_video_hparams_and_closes(tmp_path):
    logger = RunLogger(tmp_path / "tb", total_steps=100, progress="off")
    logger.video("eval/video", [], 10)  # nothing recorded: nothing written
    frames = [np.zeros((210, 160, 3), dtype=np.uint8) for _ in range(8)]
    for i, frame in enumerate(frames):
        frame[100:110, i * 10 : i * 10 + 10] = 255  # a moving ball
    logger.video("eval/video", frames, 50, fps=15)
    logger.hparams(
        {"seed": 3, "optimizer": {"lr": 3e-4}, "network": {"hidden_sizes": [8]}},
        {
            "total_steps": 100,
            "final_eval_mean_return": 9.5,
            "best_eval_mean_return": float("-inf"),
            "env_steps_per_second": 123.4,
        },
        first=["optimizer.lr", "no.such.key"],
    )
    logger.close()
    acc = load(tmp_path / "tb")
    (image,) = acc.Images("eval/video")
    assert image.step == 50 and (image.width, image.height) == (160, 210)
    assert _decode(image.encoded_image_string)[0] == 4  # every 2nd frame
    assert acc.Tags()["scalars"] == []  # the HParams metrics are the run's own curves
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info
    assert start.hparams["optimizer.lr"].number_value == pytest.approx(3e-4)
    assert start.hparams["network.hidden_sizes"].string_value == "[8]"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/experiment"]
    ).experiment
    assert [h.name for h in experiment.hparam_infos] == ["optimizer.lr", "seed", "network.hidden_sizes"]


def test_overridden_keys_are_the_keys_the_command_line_set():
    from dqn_cli.run.metrics import overridden_keys

    given = ["optimizer.lr=3e-4", "env=minatar", "+search=cartpole", "hydra.run.dir=x", "seed=2", "seed=3"]
    assert overridden_keys(given) == ["optimizer.lr", "env.name", "seed"]


def test_a_resumed_logger_goes_on_from_the_episodes_it_kept(tmp_path):
    """The console's return(20) and the last-100 objective of a resumed run are those of the
    uninterrupted run at the same step: the episodes logged up to the checkpoint count, later ones
    (orphans of the stopped life) do not."""
    first = RunLogger(tmp_path / "tb", total_steps=1000, progress="off")
    returns = [float(i * i % 37) for i in range(130)]
    for i, r in enumerate(returns):
        first.episode(r, length=5, step=5 * (i + 1))
    first.close()
    resumed = RunLogger(tmp_path / "tb", total_steps=1000, start_step=500, progress="off")  # episodes 1-100 kept
    assert resumed.mean_recent_return == pytest.approx(np.mean(returns[80:100]))
    assert list(resumed.last_100_returns) == returns[:100]
    resumed.episode(99.0, length=5, step=505)
    assert resumed.mean_recent_return == pytest.approx(np.mean(returns[81:100] + [99.0]))
    resumed.close()
    fresh = RunLogger(tmp_path / "fresh" / "tb", total_steps=10, progress="off")
    assert fresh.recent_returns == deque()
    fresh.close()


def test_the_eta_is_paced_by_the_learning_steps_not_the_warm_up(tmp_path, monkeypatch, caplog):
    """Warm-up steps only act and store; the ETA waits for one whole window of learning, then
    counts the remaining steps at the mean pace since (evaluations included)."""
    clock = [0.0]
    monkeypatch.setattr("dqn_cli.run.metrics.time.perf_counter", lambda: clock[0])
    logger = RunLogger(tmp_path / "tb", total_steps=10_000, progress="log")
    lines = []
    for step, seconds, learning in [(1000, 1.0, False), (2000, 20.0, True), (3000, 50.0, True), (4000, 100.0, True)]:
        clock[0] = seconds
        caplog.clear()
        with caplog.at_level("INFO", logger="dqn"):
            logger.status(step, epsilon=0.5, sps=1000.0, learning=learning)
        lines.append(caplog.messages[-1])
    logger.close()
    assert all("return(20) -  eps" in line for line in lines)  # no episode has ended: no mean yet
    assert [line.rsplit("eta ", 1)[1] for line in lines] == [
        "?",  # the warm-up's pace (1,000 steps/s) says nothing of the rest
        "?",  # learning began inside this window: it anchors the pace
        "0:03:30",  # 7,000 steps left at 30 s per 1,000 steps since step 2000
        "0:04:00",  # 6,000 steps left at 40 s per 1,000 (80 s for 2,000)
    ]


def test_a_resumed_runs_first_update_rate_counts_its_own_updates(tmp_path, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("dqn_cli.run.metrics.time.perf_counter", lambda: clock[0])
    logger = RunLogger(tmp_path / "tb", total_steps=10_000, start_step=5000, progress="off", start_updates=4900)
    clock[0] = 10.0
    sps, ups = logger.rates(6000, 5900)  # 1,000 steps and 1,000 updates in 10 s, not 5,900
    logger.close()
    assert (sps, ups) == (100.0, 100.0)
