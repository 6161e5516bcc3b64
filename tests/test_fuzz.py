"""Fuzz the front door: ``dqn train OVERRIDES`` with overrides drawn from the config schema.

Each example is one to four overrides: a schema key with a value of its type (in and out of range),
a value of the wrong type, broken override syntax, an unknown key, or a preset of a config group.
Whatever is drawn, ``dqn train`` must exit 0 (accepted) or 2 (refused in one line, no traceback,
nothing left behind: no run dir and no parent Hydra made for it). The entrypoint runs in-process
(``dqn_cli.app.cli.main``) with training itself replaced by a no-op once every check has passed,
so a case costs a config composition and the checks, not a run.

CI runs a fixed (derandomized) set of examples; ``scripts/fuzz_cli.sh N`` runs N random ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shutil
import string
import tempfile
import typing
from pathlib import Path

import pytest
from helpers import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dqn_cli.run.trainer as trainer
from dqn_cli.app.cli import main
from dqn_cli.config import TrainConfig

EXAMPLES = int(os.environ.get("DQN_FUZZ_EXAMPLES", "120"))
RANDOM = "DQN_FUZZ_EXAMPLES" in os.environ  # the script's long random run; CI's examples are fixed
# env.imports imports what it names (an importable name runs its code: that is what it is for);
# resume= is covered case by case in test_faults.py and test_untrusted.py
SKIP = {"env.imports", "resume"}
# Atari presets make an emulator to check the game (seconds each): only in the script's long run
ENVS = sorted(
    p.stem
    for p in (ROOT / "configs" / "env").glob("*.yaml")
    if RANDOM or "atari" not in p.read_text().split("kind:")[-1][:10]
)
ALGOS = sorted(p.stem for p in (ROOT / "configs" / "algo").glob("*.yaml"))
WORDS = [
    "mlp", "nature_cnn", "minatar_cnn", "relu", "gelu", "mean", "max", "none", "c51", "qr", "layer",
    "uniform", "prioritized", "linear", "piecewise", "exponential", "adam", "adamw", "rmsprop", "sgd",
    "huber", "mse", "auto", "cpu", "cuda", "cuda:3", "tpu", "sync", "async", "ale", "envpool", "classic",
    "atari", "minatar", "Breakout", "Pong", "Freeway", "NoSuchGame", "CartPole-v1", "Acrobot-v1",
    "Pendulum-v1", "NoSuchEnv-v0", "no_such_mod:Foo-v0", "bar", "log", "off", "atari100k", "last", "",
]  # fmt: skip
BROKEN = ["[1,", "'", '"', "{a:", "]", "a=b", "${oc.env:HOME}", "${nope}", "1,2", "(", "\\", "[[0,1],[", "~"]


def schema_keys(cls, prefix: str = ""):
    """(dotted key, type) of every leaf of a config dataclass."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from schema_keys(kind, f"{prefix}{f.name}.")
        elif prefix + f.name not in SKIP:
            yield prefix + f.name, kind


KEYS = list(schema_keys(TrainConfig))


def value_of(kind) -> st.SearchStrategy[str]:
    """Override text for a value of ``kind``, in range or not, plus a value of the wrong type."""
    ints = st.one_of(st.integers(-5, 300_000), st.sampled_from([0, -1, 2**31, 2**63, 10**13])).map(str)
    floats = st.one_of(
        st.floats(-2.0, 2.0), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1e-4, 1e30])
    ).map(lambda x: repr(float(x)))
    wrong = st.one_of(st.sampled_from(WORDS), st.text(string.ascii_letters + string.digits + "_-.:/", max_size=10))
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Union:  # Optional[X]
        return st.one_of(st.just("null"), value_of(next(a for a in args if a is not type(None))))
    if origin in (list, typing.List):
        item = ints if args and args[0] is int else st.one_of(ints, floats, st.lists(floats, max_size=3).map(str))
        return st.one_of(st.lists(item, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"), wrong)
    if kind is bool:
        return st.one_of(st.sampled_from(["true", "false"]), wrong)
    if kind is int:
        return st.one_of(ints, floats, wrong)
    if kind is float:
        return st.one_of(floats, ints, wrong)
    return st.one_of(st.sampled_from(WORDS), wrong)  # str


@st.composite
def override(draw) -> str:
    choice = draw(st.integers(0, 9))
    if choice <= 5:  # a key of the schema with a value of (or not of) its type
        key, kind = draw(st.sampled_from(KEYS))
        return f"{key}={draw(value_of(kind))}"
    if choice == 6:  # broken syntax
        key, _ = draw(st.sampled_from(KEYS))
        return f"{key}={draw(st.sampled_from(BROKEN))}"
    if choice == 7:  # a key the schema does not have, in each of Hydra's forms
        name = draw(st.sampled_from(["foo", "optimizer.lrr", "env.nope", "hydra.nope", "network"]))
        return draw(st.sampled_from(["", "+", "++", "~"])) + f"{name}=1"
    group = draw(st.sampled_from(["env", "algo"]))  # a preset of a group, or one that does not exist
    return f"{group}={draw(st.sampled_from((ENVS if group == 'env' else ALGOS) + ['nope']))}"


@pytest.fixture(scope="module", autouse=True)
def no_training():
    """Every check runs and the CLI's on_start writes what it writes; then, instead of training,
    the run returns."""

    def started(cfg, run_dir, checked, multirun, record_config):
        return {"objective": None}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "_train", started)
        yield


def dqn_train(*args: str) -> tuple[int, str]:
    """``dqn train ARGS`` in this process: (exit code, stderr). The logging set-up Hydra makes for
    the run (a train.log handler in its run dir) is undone after, so it does not outlive the run."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), logging_restored():
        try:
            code = main(["train", *args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, err.getvalue()


@contextlib.contextmanager
def logging_restored():
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    saved = {id(lg): (lg, list(lg.handlers), lg.level, lg.propagate, lg.disabled) for lg in loggers}
    try:
        yield
    finally:
        for lg in [logging.getLogger()] + [
            lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
        ]:
            handlers, level, propagate, disabled = saved.get(id(lg), (lg, [], logging.NOTSET, True, False))[1:]
            for handler in lg.handlers:
                if handler not in handlers:
                    handler.close()
            lg.handlers, lg.level, lg.propagate, lg.disabled = handlers, level, propagate, disabled


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(st.lists(override(), min_size=1, max_size=4))
def test_any_overrides_are_accepted_or_refused_in_one_line(overrides):
    where = Path(tempfile.mkdtemp(prefix="dqn_fuzz_"))
    try:
        code, stderr = dqn_train(*overrides, f"hydra.run.dir={where / 'made' / 'run'}")
        assert "Traceback" not in stderr, stderr
        assert code in (0, 2), (code, stderr)
        if code == 2:
            lines = [ln for ln in stderr.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("dqn train: error: "), stderr
            assert not (where / "made").exists(), "a refused run left its run dir"
        else:
            assert (where / "made" / "run" / ".hydra" / "config.yaml").is_file()
    finally:
        shutil.rmtree(where, ignore_errors=True)
