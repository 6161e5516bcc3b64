"""The `dqn` command as users run it: train, eval, help, version, run directory layout."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, TRAINING_TAGS, last_json_line, run_dqn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SUMMARY_KEYS = {
    "total_steps",
    "wall_seconds",
    "env_steps_per_second",
    "final_eval_mean_return",
    "final_eval_std_return",
    "best_eval_mean_return",
    "replay_bytes_per_transition",
}


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_train_writes_the_run_directory_of_the_spec(trained_run):
    run = trained_run
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / ".hydra" / "overrides.yaml").is_file()
    assert (run / "train.log").is_file() and "final eval return" in (run / "train.log").read_text()
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_000000200.pt", "step_000000400.pt"]
    summary = json.loads((run / "summary.json").read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert 0 < summary["eval_seconds"] < summary["wall_seconds"]  # its evaluations, part of the run
    assert summary["total_steps"] == 400
    assert summary["replay_bytes_per_transition"] > 0
    assert summary["cpu"] and summary["device"].split(":")[0] in ("cpu", "cuda") and summary["torch_threads"] >= 1


def test_checkpoint_reads_back_with_weights_only(trained_run):
    state = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    assert state["counters"]["env_steps"] == 400
    assert state["config"]["env"]["id"] == "CartPole-v1"
    assert state["counters"]["updates"] == 400 - 100  # train_every=1 after learning_starts
    q = state["agent"]["q_network"]
    assert q["torso.body.1.weight"].shape == (16, 4)  # hidden 16 over CartPole's 4 inputs
    last = torch.load(trained_run / "checkpoints" / "step_000000400.pt", weights_only=True)
    for k, v in q.items():
        torch.testing.assert_close(v, last["agent"]["q_network"][k])


def test_tensorboard_has_the_training_curves_against_env_steps(trained_run):
    tags = scalars(trained_run / "tb")
    for tag in TRAINING_TAGS:
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    assert [s for s, _ in tags["eval/mean_return"]] == [200, 400]
    eps = dict(tags["charts/epsilon"])
    assert eps[100] > eps[400]  # epsilon decays with env steps
    steps = [s for s, _ in tags["charts/episodic_return"]]
    assert steps == sorted(steps) and steps[-1] <= 400


def test_eval_prints_a_summary_and_a_json_last_line(trained_run, tmp_path):
    proc = run_dqn(
        "eval", f"checkpoint={trained_run}/checkpoints/last.pt", "episodes=3", "seed=7", f"hydra.run.dir={tmp_path}"
    )
    assert proc.returncode == 0, proc.stderr
    result = last_json_line(proc.stdout)
    for key in ("mean_return", "std_return", "min_return", "max_return", "episodes", "mean_length"):
        assert key in result
    assert result["episodes"] == 3
    assert result["min_return"] <= result["mean_return"] <= result["max_return"]
    assert "CartPole-v1: 3 episodes" in proc.stdout
    # same seed, same returns
    again = last_json_line(
        run_dqn(
            "eval",
            f"checkpoint={trained_run}/checkpoints/last.pt",
            "episodes=3",
            "seed=7",
            f"hydra.run.dir={tmp_path}/2",
        ).stdout
    )
    assert again["mean_return"] == result["mean_return"]


def test_best_checkpoint_is_the_best_evaluation_and_eval_plays_it(trained_run, tmp_path):
    """checkpoints/best.pt holds the network of the best evaluation so far (as SB3's EvalCallback);
    summary.json names its step; `dqn eval checkpoint=RUN_DIR which=best` plays it."""
    import csv

    summary = json.loads((trained_run / "summary.json").read_text())
    with open(trained_run / "evals.csv") as f:
        evals = [(int(r["env_step"]), float(r["mean_return"])) for r in csv.DictReader(f)]
    best_step, best_return = max(evals, key=lambda e: (e[1], -e[0]))  # the first evaluation reaching the max
    assert (summary["best_eval_step"], summary["best_eval_mean_return"]) == (best_step, best_return)
    best = torch.load(trained_run / "checkpoints" / "best.pt", weights_only=True)
    assert best["counters"]["env_steps"] == best_step
    last = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    assert summary["final_eval_mean_return"] == evals[-1][1]  # still the final network's
    if best_step != last["counters"]["env_steps"]:
        assert any(not torch.equal(best["agent"]["q_network"][k], v) for k, v in last["agent"]["q_network"].items())

    proc = run_dqn("eval", f"checkpoint={trained_run}", "which=best", "episodes=2", f"hydra.run.dir={tmp_path}/b")
    assert proc.returncode == 0, proc.stderr
    result = last_json_line(proc.stdout)
    assert result["env_steps"] == best_step and result["checkpoint"].endswith("best.pt")
    refused = run_dqn(
        "eval", f"checkpoint={trained_run}/checkpoints/last.pt", "which=best", f"hydra.run.dir={tmp_path}/r"
    )
    assert refused.returncode == 2 and "is a file" in refused.stderr and "Traceback" not in refused.stderr


def test_eval_with_full_exploration_matches_random_play(trained_run, tmp_path):
    proc = run_dqn(
        "eval",
        f"checkpoint={trained_run}/checkpoints/last.pt",
        "episodes=8",
        "epsilon=1.0",
        f"hydra.run.dir={tmp_path}",
    )
    result = last_json_line(proc.stdout)
    assert result["epsilon"] == 1.0
    assert result["mean_return"] < 60  # random CartPole play lasts ~22 steps


def test_help_version_and_subcommand_help():
    top = run_dqn("--help")
    assert top.returncode == 0 and "train" in top.stdout and "eval" in top.stdout and "bench" in top.stdout
    version = run_dqn("--version")
    assert version.returncode == 0 and version.stdout.startswith("dqn ")
    train_help = run_dqn("train", "--help")
    assert train_help.returncode == 0
    for group in ("env:", "network:", "replay:", "schedule:", "optimizer:"):
        assert group in train_help.stdout
    eval_help = run_dqn("eval", "--help")
    assert eval_help.returncode == 0 and "checkpoint=PATH" in eval_help.stdout and "which=last" in eval_help.stdout
    assert "network:" not in eval_help.stdout  # eval's own keys, not the training groups
    assert "+search=cartpole" in train_help.stdout and "Examples:" in train_help.stdout


def test_the_keys_train_help_lists_have_the_defaults_it_says():
    """Every `key=value` of `dqn train --help`'s key list is what `dqn train --cfg job` composes."""
    import re

    from omegaconf import OmegaConf

    text = run_dqn("train", "--help").stdout
    listed = text[text.index("Most used keys") : text.index("Examples:")]
    pairs = re.findall(r"\b([a-z_]+(?:\.[a-z_]+)?)=([\w.]+)", listed)
    composed = OmegaConf.create(run_dqn("train", "--cfg", "job").stdout)
    checked = 0
    for key, value in pairs:
        if value.isupper() or value == "N" or "|" in value:  # a placeholder such as RUN_DIR
            continue
        actual = OmegaConf.select(composed, key)
        assert str(actual).lower() == value.lower() or float(actual) == float(value), (key, value, actual)
        checked += 1
    assert checked >= 12


def test_cfg_job_composes_groups_and_overrides():
    proc = run_dqn("train", "--cfg", "job", "optimizer=rmsprop", "env=classic", "env.id=Acrobot-v1", "tau=0.005")
    assert proc.returncode == 0, proc.stderr
    assert "name: rmsprop" in proc.stdout and "id: Acrobot-v1" in proc.stdout and "tau: 0.005" in proc.stdout


def test_python_dash_m_and_console_script_agree():
    script = Path(sys.executable).parent / "dqn"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    import subprocess

    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.stdout == run_dqn("--version").stdout


def test_other_env_async_vectorization_and_options(tmp_path):
    proc = run_dqn(
        "train",
        *TINY,
        "env=classic",
        "env.id=Acrobot-v1",
        "env.vectorization=async",
        "env.num_envs=2",
        "optimizer=adamw",
        "loss=mse",
        "double_q=false",
        "tau=0.5",
        "target_update_period=50",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["env"] == "Acrobot-v1" and summary["total_steps"] == 400
    cfg = (tmp_path / ".hydra" / "config.yaml").read_text()
    assert "vectorization: async" in cfg and "name: adamw" in cfg


@pytest.mark.parametrize(
    "override,needle",
    [
        ("optimizer.lr=-1", "optimizer.lr must be > 0"),
        ("gamma=1.5", "gamma must be in (0, 1]"),
        ("batch_size=2000 replay.capacity=1000", "larger than replay.capacity"),
        ("replay.n_step=0", "replay.n_step must be >= 1"),
        ("env=classic", None),  # valid: sanity check of the harness
        ("env.id=NoSuchEnv-v0", "not a registered Gymnasium env"),
        ("env.id=Pendulum-v1", "DQN needs Discrete actions"),
        ("device=tpu", "device must be auto, cpu, cuda or cuda:N"),
        ("loss=l1", "loss must be huber or mse"),
        ("total_steps=abc", "total_steps=abc: Value 'abc' of type 'str' could not be converted to Integer"),
        ("--cfg hydra -m", "--cfg and --multirun cannot be combined"),
        ("-m seed=1,x", "seed=x: Value 'x' of type 'str' could not be converted to Integer"),  # each swept value
        ("learning_starts=50000", "leaves no gradient step in total_steps=50000"),  # no silent no-op
        ("total_steps=1000 learning_starts=998 train_every=4", "use learning_starts <= 996"),
        ("network.hidden_sizes=[]", "would make the Q-network linear"),
        ("total_steps=1.5e3.2", "total_steps=1.5e3.2"),
        ("env.id=no_such_mod:Foo-v0", "cannot import module 'no_such_mod'"),  # Gymnasium's module:Id
        ("network.hidden_sizes=[300000,300000]", "use smaller network.hidden_sizes"),  # 90G parameters
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, override, needle):
    run_dir = tmp_path / "made" / "by" / "hydra" / "run"
    args = ["train", *override.split(), f"hydra.run.dir={run_dir}"]
    if needle is None:
        proc = run_dqn(*args, "--cfg", "job")
        assert proc.returncode == 0
        return
    proc = run_dqn(*args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert not (tmp_path / "made").exists()  # refused input leaves no run dir behind, nor its parents


def test_bad_input_into_an_existing_run_dir_changes_nothing(trained_run, tmp_path):
    """The config, overrides and log of a run stay as they were (it can still be resumed as it was)."""
    import hashlib
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)

    def files() -> dict:
        return {p.relative_to(run): hashlib.md5(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}

    before = files()
    for override in ("optimizer.lr=-1", "env.id=NoSuchEnv-v0"):
        proc = run_dqn("train", override, f"hydra.run.dir={run}")
        assert proc.returncode == 2, proc.stderr
    assert files() == before


def test_unknown_key_and_group_option_fail_cleanly():
    """Exit 2 with one line naming what exists: the close key, or the group's options."""
    for override, line in (
        ("network.hiden_sizes=[3]", "network.hiden_sizes: no such key; did you mean network.hidden_sizes?"),
        ("optimizer.lrr=1", "optimizer.lrr: no such key; did you mean optimizer.lr?"),
        # a key of a group given at the top level: pointed to its group
        ("video=true", "video: no such key; did you mean eval.video?"),
        ("lr=1e-4", "lr: no such key; did you mean optimizer.lr?"),
        ("network=transformer", "network=transformer: no such option; choose one of minatar_cnn, mlp, nature_cnn"),
    ):
        proc = run_dqn("train", override)
        assert proc.returncode == 2, (override, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and line in proc.stderr, proc.stderr
    proc = run_dqn("train", "no_such_key=1")
    assert proc.returncode == 2 and "no_such_key: no such key; TrainConfig has env, network," in proc.stderr


def test_bench_bad_argument_is_one_line():
    proc = run_dqn("bench", "foo")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "dqn bench: error: argument what: invalid choice: 'foo' (choose from 'all', 'envs', 'update', 'replay') "
        "(see dqn bench --help)"
    ]


def test_unknown_command():
    proc = run_dqn("fly")
    assert proc.returncode == 2 and "unknown command 'fly'" in proc.stderr


def test_bash_tab_completion_of_commands_groups_and_keys(tmp_path):
    """The script `dqn train --shell-completion install=bash` prints, loaded into bash, completes
    the command, then config groups and keys of that command's Hydra app."""
    import shutil
    import subprocess

    dqn = Path(sys.executable).parent / "dqn"
    if not dqn.exists() or shutil.which("bash") is None:
        pytest.skip("needs the dqn console script and bash")
    script = (
        'eval "$(dqn train --shell-completion install=bash)"\n'
        'ask() { COMP_LINE="$1"; COMP_POINT=${#1}; read -ra COMP_WORDS <<< "$1"; '
        'COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); hydra_bash_completion; echo "${COMPREPLY[*]}"; }\n'
        'ask "dqn ev"\nask "dqn train env="\nask "dqn train optimizer.l"\n'
    )
    env = {**os.environ, "PATH": f"{dqn.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.stdout.splitlines() == [
        "eval",
        "env=atari env=atari100k env=breakout env=cartpole env=classic env=minatar env=pong",
        "optimizer.lr= optimizer.lr_decay_steps= optimizer.lr_end=",
    ], proc.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["checkpoint=/no/such/file.pt"], "does not exist"),
        (["episodes=0"], "episodes must be >= 1"),
        (["which=worst"], "which must be last or best"),
        ([], "checkpoint= is required"),
    ],
)
def test_a_refused_eval_leaves_no_run_dir(trained_run, tmp_path, args, needle):
    run_dir = tmp_path / "eval"
    if not any(a.startswith("checkpoint=") for a in args) and needle != "checkpoint= is required":
        args = [f"checkpoint={trained_run}", *args]
    proc = run_dqn("eval", *args, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not run_dir.exists()


def test_a_refused_run_leaves_no_empty_outputs_folders(tmp_path):
    """Hydra makes outputs/DATE/TIME_NAME before the input is checked; a refusal removes what it made."""
    for args in (["eval", "checkpoint=/no/such/file.pt"], ["train", "optimizer.lr=-1"]):
        proc = run_dqn(*args, cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert list(tmp_path.iterdir()) == []


def test_a_classic_run_is_named_after_its_env_and_says_where_it_is(tmp_path):
    """outputs/DATE/TIME_Acrobot-v1, not TIME_classic; the first and last lines name the run dir,
    the last with the commands to look at it."""
    proc = run_dqn("train", "env=classic", "env.id=Acrobot-v1", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/*")
    assert run_dir.name.endswith("_Acrobot-v1")
    out = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    relative = str(run_dir)
    assert f"results in {relative}" in out[0] and f"results in {relative}" in out[-2]
    assert f"dqn eval checkpoint={relative}" in out[-1] and f"tensorboard --logdir {relative}" in out[-1]


def test_integer_keys_take_exact_floats_and_refuse_the_rest(tmp_path):
    """1e5 and 100_000 are 100000 for an int key (also in a sweep); 1.5 is refused in one line."""
    proc = run_dqn("train", "total_steps=1e5", "replay.capacity=2_000", "env.num_envs=4.0", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "total_steps: 100000" in proc.stdout and "capacity: 2000" in proc.stdout and "num_envs: 4" in proc.stdout
    from dqn_cli.app.hydra_compat import exact_integers
    from dqn_cli.config import TrainConfig

    swept = exact_integers(["seed=1e0,2e0", "optimizer.lr=1e-3", "total_steps=abc", "eval.every=1e4"], TrainConfig)
    assert swept == ["seed=1,2", "optimizer.lr=1e-3", "total_steps=abc", "eval.every=10000"]  # float keys stay
    refused = run_dqn("train", "total_steps=1.5", f"hydra.run.dir={tmp_path / 'run'}")
    assert refused.returncode == 2 and "total_steps=1.5" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("where", ["/dev/null/run", "/proc/no/such/dir"])
def test_a_run_dir_that_cannot_be_made_is_one_line(where):
    proc = run_dqn("train", f"hydra.run.dir={where}", "total_steps=2000")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"hydra.run.dir={where}: cannot create the run directory" in lines[0], proc.stderr


def test_your_own_env_registered_on_import_trains_on_every_backend(tmp_path):
    """env.imports=[module] imports a package that registers its Gymnasium id, in this process and in
    every env worker; a module that cannot be imported is one line."""
    tests_dir = str(Path(__file__).resolve().parent)
    env = {"PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])}
    own = ["env=classic", "env.imports=[corridor_env]", "env.id=TestCorridor-v0", *TINY]
    for backend in ("sync", "async"):
        run_dir = tmp_path / backend
        proc = run_dqn("train", *own, f"env.vectorization={backend}", f"hydra.run.dir={run_dir}", env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads((run_dir / "summary.json").read_text())["env"] == "TestCorridor-v0"
        assert run_dir.name == backend
    missing = run_dqn("train", "env=classic", "env.imports=[no_such_env_pkg]", f"hydra.run.dir={tmp_path / 'm'}")
    assert missing.returncode == 2 and "env.imports: cannot import 'no_such_env_pkg'" in missing.stderr
    unregistered = run_dqn("train", "env=classic", "env.id=TestCorridor-v0", f"hydra.run.dir={tmp_path / 'u'}")
    assert unregistered.returncode == 2 and "env.imports=[my_package]" in unregistered.stderr
