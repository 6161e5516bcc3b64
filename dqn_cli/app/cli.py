"""The ``dqn`` console script: subcommand dispatch and the Hydra apps.

``dqn train ...`` and ``dqn eval ...`` are Hydra apps (every Hydra flag works
after the subcommand); ``dqn bench`` is a plain argparse tool.

Exit codes and stderr (one line, no traceback; ``dqn --debug ...`` or
``HYDRA_FULL_ERROR=1`` shows the full traceback instead):

* 0: done.
* 2: bad input (a config value, a checkpoint, ``resume=``), refused before
  any env process starts; nothing of an existing run is touched.
* 1: a fault during training: the loss or the weights became NaN/inf, an
  env subprocess died, a checkpoint could not be written (disk full). The
  last complete checkpoint is kept; the line says how to continue.
* 130 / 143 (128 + the signal): SIGINT (Ctrl-C) or SIGTERM stopped training
  after the current step with a checkpoint written, envs and TensorBoard
  closed; ``dqn train resume=RUN_DIR`` continues. A second signal quits at
  once without a checkpoint (the last complete one stays), same code.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from pathlib import Path

from dqn_cli import __version__
from dqn_cli.app.hydra_compat import (
    RECORD_CONFIG,
    HeldRunLog,
    bad_value,
    conflicting_modes,
    exact_integers,
    existing_root,
    record_run_config,
    remove_if_empty,
    run_config_dir,
    unwritable_dir,
)

USAGE = f"""usage: dqn [--version] [--debug] COMMAND [ARGS]

Train and evaluate Deep Q-Network agents (dqn {__version__}).

commands:
  train   train an agent:            dqn train [env=breakout] [replay=prioritized] [key=value ...]
          sweep (Hydra multirun):    dqn train -m seed=1,2,3 optimizer.lr=1e-4,3e-4
          continue a stopped run:    dqn train resume=outputs/DATE/TIME_cartpole
  eval    play a saved agent:        dqn eval checkpoint=PATH [episodes=N] [seed=S] [epsilon=E] [video=true]
  bench   measure this machine:      dqn bench [all|envs|replay|update] [--quick]
  plot    learning curves over seeds: dqn plot RUN_OR_SWEEP_DIR... [--metric eval|train] [--out FILE]

Each of train and eval is a Hydra app: `dqn train --help` lists the config
groups, `dqn train --cfg job` prints the composed config.
"""

COMMANDS = ("train", "eval", "bench", "plot")


def config_dir() -> str:
    """The Hydra config directory: inside the installed package, or the repo's configs/."""
    here = Path(__file__).resolve().parent.parent  # the dqn_cli package
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"dqn's configs/ not found next to {here}; reinstall the package")


def fail(command: str, message: str, code: int = 2) -> None:
    """One line on stderr, no traceback; exit ``code``."""
    print(f"dqn {command}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def debug() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


# ------------------------------------------------------------------ train app
def _train_task(cfg) -> float:
    """The body of ``dqn train``; returns the final eval mean return (what sweepers optimise)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from dqn_cli.errors import BadInput, CheckpointWriteError, DqnError, NonFiniteLoss
    from dqn_cli.run.trainer import train

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    held_log = None if multirun else HeldRunLog()  # train.log waits until the input is known good
    resuming = bool(cfg.get("resume"))

    def on_start() -> None:  # every check passed: from here on the run dir is written
        if not resuming:  # (a resumed run keeps its hydra.yaml and overrides.yaml)
            record_run_config(run_dir, hc)
        if held_log is not None:
            held_log.release()

    try:
        summary = train(
            cfg,
            run_dir,
            multirun=multirun,
            on_start=on_start,
            overrides=OmegaConf.to_container(hc.overrides.task),
            config_dir=run_config_dir(hc),
        )
    except DqnError as err:  # one line; BadInput exits 2, a Fault 1 (dqn_cli.errors)
        if debug():
            raise
        if isinstance(err, BadInput) and held_log is not None and not held_log.released:  # left as it was
            held_log.discard()
            remove_if_empty(run_dir, _existing_root[0] if _existing_root else Path(hc.runtime.cwd))
        has_checkpoint = (run_dir / "checkpoints" / "last.pt").is_file()
        message = str(err)
        if isinstance(err, NonFiniteLoss) and not has_checkpoint:  # (it cannot know whether one was written)
            message = message.replace("the last good checkpoint is kept", "no checkpoint had been written yet")
        resumable = isinstance(err, CheckpointWriteError) and has_checkpoint
        hint = f"; continue later with: dqn train resume={run_dir}" if resumable else ""
        fail("train", f"{message}{hint}", code=err.exit_code)
    except OSError as err:  # a full disk or a vanished mount while writing logs: a fault, in one line
        if debug() or err.errno not in WRITE_FAULTS:
            raise
        where = f" {err.filename}" if err.filename else ""
        resumable = (run_dir / "checkpoints" / "last.pt").is_file()
        hint = f"; continue later with: dqn train resume={run_dir}" if resumable else "; no checkpoint was written"
        fail("train", f"could not write{where} ({err.strerror or err}){hint}", code=1)
    if summary.get("stopped"):  # SIGINT/SIGTERM, checkpoint written: the job ends normally for Hydra
        _stopped_by.append(int(summary["signal"]))  # (a sweep lists it as stopped); dqn exits 128 + signal
        return float("nan")
    objective = summary.get("objective")
    return float("nan") if objective is None else float(objective)


_stopped_by: list[int] = []  # signals that stopped a training run in this process
# the deepest folder of a literal hydra.run.dir=PATH that existed before Hydra made the run dir: a
# refused run removes the run dir and the parents it made up to there (else up to the working dir)
_existing_root: list[Path] = []
# errno values of a write that failed for reasons outside the run: disk full, quota, read-only, I/O
WRITE_FAULTS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def _eval_task(cfg) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dqn_cli.errors import DqnError, Fault
    from dqn_cli.run.evaluate import eval_checkpoint

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    held_log = None if multirun else HeldRunLog()  # eval.log waits until the evaluation is done

    try:
        summary = eval_checkpoint(cfg, run_dir)
    except DqnError as err:  # one line; BadInput exits 2, a Fault 1 (dqn_cli.errors)
        if debug():
            raise
        fault = isinstance(err, Fault)  # (ReplayDiverged: the env is not deterministic given its seed, no video)
        if held_log is not None and not fault:  # bad input: nothing is left behind
            held_log.discard()
            remove_if_empty(run_dir, _existing_root[0] if _existing_root else Path(hc.runtime.cwd))
        elif held_log is not None:
            record_run_config(run_dir, hc, cfg)
            held_log.release()
        fail("eval", f"{err}; no video was written" if fault else str(err), code=err.exit_code)
    record_run_config(run_dir, hc, cfg)
    if held_log is not None:
        held_log.release()
    return summary


def _hydra_app(task, config_name: str):
    import hydra

    from dqn_cli.config import register_configs

    register_configs()
    return hydra.main(config_path=config_dir(), config_name=config_name, version_base="1.3")(task)


# Hydra flags that inspect instead of running (they write no run dir)
INSPECTING = {
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--help",
    "-h",
    "--hydra-help",
    "-p",
    "--package",
    "-sc",
    "--shell-completion",
    "-m",
    "--multirun",
}


def run_hydra(command: str, args: list[str]) -> int:
    """Run a Hydra app as if ``dqn COMMAND`` were its program name."""
    if command == "train":
        from dqn_cli.run.resume import rewrite_resume_args

        try:
            args = rewrite_resume_args(args)
        except ValueError as err:
            fail("train", str(err))
    inspecting = INSPECTING & set(args) or any(a.startswith("hydra.output_subdir=") for a in args)
    if not inspecting:  # train and eval: .hydra/ is written once the input passed every check
        args = [*args, RECORD_CONFIG]
    from dqn_cli.config import EvalCommandConfig, TrainConfig

    args = exact_integers(args, TrainConfig if command == "train" else EvalCommandConfig)
    task = _train_task if command == "train" else _eval_task
    config_name = "train" if command == "train" else "eval"
    app = _hydra_app(task, config_name)
    if not debug():
        problem = conflicting_modes(args) or bad_value(config_dir(), config_name, args)
        if problem is None and not INSPECTING & set(args) - {"-m", "--multirun"}:
            problem = unwritable_dir(args)
        if problem:
            fail(command, problem)
    _existing_root[:] = [existing_root(a.split("=", 1)[1]) for a in args if a.startswith("hydra.run.dir=")][-1:]
    argv0 = sys.argv[0]
    sys.argv = [f"dqn {command}", *args]
    try:
        app()
    except KeyboardInterrupt as err:  # a second signal (trainer.Abort), or a Ctrl-C before training began
        if debug():
            raise
        signum = getattr(err, "signum", signal.SIGINT)
        fail(
            command,
            f"interrupted by {signal.Signals(signum).name}; stopped at once "
            "(the last complete checkpoint, if any, is kept)",
            code=128 + signum,
        )
    finally:
        sys.argv[0] = argv0
    return 128 + _stopped_by[-1] if _stopped_by else 0


# ------------------------------------------------------------ tab completion
BENCH_WORDS = ("all", "envs", "update", "replay", "--quick", "--threads")


def complete(args: list[str]) -> int:
    """Answer a shell's completion query: ``dqn -sc query=bash`` with ``COMP_LINE`` set.

    The script from ``dqn train --shell-completion install=bash`` calls it on
    TAB. The first word after ``dqn`` completes to a command; after ``train``
    or ``eval`` Hydra completes config groups, keys and values for that app
    (it is asked with the command word taken out of the line, as if
    ``dqn train`` were one program).
    """
    line = os.environ.get("COMP_LINE", "dqn ")
    words = line.split()
    typing_command = len(words) < 2 or (len(words) == 2 and not line.endswith(" "))
    if typing_command:
        print(" ".join(COMMANDS))
        return 0
    command = words[1]
    if command == "bench":
        print(" ".join(BENCH_WORDS))
        return 0
    if command == "plot":
        print("--metric --out --reference --title")
        return 0
    if command not in ("train", "eval"):
        return 0
    program, _ = line.lstrip().split(maxsplit=1)  # "dqn train env=" -> "dqn env=", whatever dqn's path holds
    os.environ["COMP_LINE"] = program + line.lstrip()[len(program) :].lstrip().removeprefix(command)
    return run_hydra(command, ["-sc", *args])


# ----------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `dqn train --help | head`: the reader left; say nothing more (Python's docs, signal)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it


def _main(argv: list[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--debug":
        os.environ["HYDRA_FULL_ERROR"] = "1"
        args = args[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] in ("-V", "--version"):
        print(f"dqn {__version__}")
        return 0
    if args[0] in ("-sc", "--shell-completion") and any(a.startswith("query=") for a in args[1:]):
        return complete(args[1:])
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        fail("", f"unknown command {command!r}; expected one of: {', '.join(COMMANDS)} (see dqn --help)")
    logging.captureWarnings(True)
    if command == "bench":
        from dqn_cli.bench.main import main as bench_main

        return bench_main(rest)
    if command == "plot":
        from dqn_cli.app.plot import main as plot_main

        return plot_main(rest)
    return run_hydra(command, rest)


if __name__ == "__main__":
    raise SystemExit(main())
