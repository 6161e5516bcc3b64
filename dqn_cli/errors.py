"""Every error the tool reports to a user, and its exit code, in one place.

Two kinds, each printed by the CLI as one line (``dqn COMMAND: error: MESSAGE``), no traceback
(``dqn --debug`` shows it):

* :class:`BadInput`, exit 2: what was given cannot run (a value, a file, a run dir); nothing
  started, nothing left behind.
* :class:`Fault`, exit 1: something failed while running (an env process, the loss, the disk);
  the last good checkpoint is kept, and the message says how to continue when one exists.

A stop by signal is not an error: ``dqn`` exits 128 + the signal after its checkpoint.
"""

from __future__ import annotations

import errno
from pathlib import Path


class DqnError(Exception):
    """An error reported to the user as one line; ``exit_code`` is what ``dqn`` exits with."""

    exit_code = 1


class BadInput(DqnError):
    """Input that cannot run: exit 2, nothing started."""

    exit_code = 2


class Fault(DqnError):
    """A failure while running: exit 1, the last good checkpoint kept."""

    exit_code = 1


class ConfigError(BadInput, ValueError):
    """A configuration value, preset, env or run dir that cannot be used; the message says why
    and what would be right."""


class RunDirBusy(ConfigError):
    """Another live process holds the run dir (its lock)."""


class VideoUnavailable(ConfigError):
    """The env cannot render rgb frames here (a missing renderer dependency)."""


class CheckpointError(BadInput, ValueError):
    """A checkpoint that cannot be used; the message says why."""


class PlotError(BadInput, ValueError):
    """Bad input for ``dqn plot`` (a path, a damaged CSV, an unwritable output)."""


class CheckpointWriteError(Fault, OSError):
    """A checkpoint that could not be written (disk full, permissions); the previous one is intact."""

    def __init__(self, path: Path, err: OSError):
        reason = err.strerror or str(err) or type(err).__name__
        code = f"{errno.errorcode.get(err.errno, err.errno)}: " if err.errno else ""
        hint = "; free some disk space" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
        last = Path(path).parent / "last.pt"
        kept = f"the previous checkpoint {last} is intact" if last.is_file() else "no earlier checkpoint exists"
        super().__init__(f"could not write {path} ({code}{reason}); {kept}{hint}")


class NonFiniteLoss(Fault, RuntimeError):
    """The loss (or the network's parameters) stopped being finite: training stops."""

    def __init__(self, step: int, value: float, what: str = "the TD loss"):
        super().__init__(
            f"{what} became {value} at env step {step}; training stopped, the last good checkpoint is kept "
            "(try a lower optimizer.lr, loss=huber, or optimizer.max_grad_norm=10)"
        )


class EnvWorkerDied(Fault, RuntimeError):
    """Env subprocesses died more often than ``env.worker_restarts`` allows: the message names
    the worker (``dqn_cli.envs.workers.dead_workers_text``)."""

    def __init__(self, what: str, step: int, run_dir: Path):
        super().__init__(
            f"{what} at env step {step}; training stopped, the last checkpoint is kept "
            f"(continue with: dqn train resume={run_dir})"
        )


class ReplayDiverged(Fault, RuntimeError):
    """A replayed episode did not end as the scored one did (the env is not deterministic given
    its seed): ``dqn eval`` writes no video."""
