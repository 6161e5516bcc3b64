"""One process per run dir: an exclusive lock held for a run's whole life.

``fcntl.flock`` on ``RUN_DIR/.lock`` (flock(2)): the kernel releases it when the process ends,
however it ends, so kill -9 leaves no stale lock behind; the file holds the holder's PID for
the message a second process gets. Readers (``dqn eval``, ``dqn plot``) take no lock.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dqn_cli.config import ConfigError
from dqn_cli.errors import RunDirBusy

LOCK_NAME = ".lock"


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; RunDirBusy (one line) when another process holds it.
    Once held, temporary files that an earlier process left (killed mid-write) are removed."""
    import fcntl

    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # a read-only mount, or a folder of someone else's: bad input, nothing written
        raise ConfigError(
            f"{run_dir} is not writable ({err.strerror}); a run writes into its run dir: "
            "copy it somewhere writable (cp -r) and resume the copy"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RunDirBusy(
                f"{run_dir} is in use by another dqn process (PID {holder}); one process per run dir: "
                "wait for it to finish, or stop it (it checkpoints on SIGINT) and resume then"
            ) from None
        remove_leftovers(run_dir)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Delete the temporary files of atomic writes (``.NAME.XXXX.tmp``, files.atomic_path) that a
    process killed mid-write left in the run dir or its checkpoints/; returns what was removed."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if folder.is_dir():
            for path in folder.glob(".*.tmp"):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
