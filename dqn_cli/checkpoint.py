"""Checkpoints: atomic writes, keep-last-N, safe loading (RL_NOTES 16-17).

A checkpoint is a dict of tensors, plain containers and numbers only, so it
loads with ``torch.load(..., weights_only=True)``: a file crafted to run code
when unpickled is refused and nothing runs.

Files in ``run_dir/checkpoints/``::

    step_000050000.pt   step-numbered, the newest ``keep`` kept
    last.pt             always the newest complete checkpoint
    replay.npz          the replay buffer, when checkpoint.save_replay=true

Every file is written to a temporary name in the same directory, fsynced,
then ``os.replace``d into place, so a kill -9 at any moment leaves the
previous complete file (RL_NOTES 17).
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

FORMAT = "dqn-checkpoint"
FORMAT_VERSION = 1
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why."""


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, then rename over ``path``.

    On any error (a full disk, say) the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def step_path(ckpt_dir: Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step_{step:09d}.pt"


def step_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Step-numbered checkpoints in ``ckpt_dir``, oldest first."""
    found = []
    if Path(ckpt_dir).is_dir():
        for p in Path(ckpt_dir).iterdir():
            m = _STEP_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(ckpt_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Write ``state`` as ``step_<step>.pt`` and ``last.pt``; prune to the newest ``keep``.

    Returns the step file's path. ``last.pt`` is written only after the step
    file is complete, and pruning never removes the file ``last.pt`` matches.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    target = step_path(ckpt_dir, step)
    atomic_write(target, lambda f: torch.save(payload, f))
    atomic_write(ckpt_dir / "last.pt", lambda f: torch.save(payload, f))
    for _, old in step_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def save_replay(ckpt_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    """The replay buffer's arrays, beside (not inside) the model checkpoints."""
    path = Path(ckpt_dir) / "replay.npz"
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def load_replay(ckpt_dir: Path) -> dict[str, np.ndarray] | None:
    path = Path(ckpt_dir) / "replay.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely; raise CheckpointError with a one-line reason.

    Missing, empty, truncated, corrupt, foreign (not written by dqn) and
    code-carrying files are all refused; nothing in the file is executed.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass checkpoint=RUN_DIR/checkpoints/last.pt")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass a .pt file such as {path}/checkpoints/last.pt")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); use another file from its checkpoints/ dir")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()
        detail = next((ln for ln in reason if "GLOBAL" in ln or "Unsupported" in ln), reason[0] if reason else "")
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data; refused without running it "
            f"({detail.strip()[:160]})"
        ) from None
    except Exception as err:  # zip, pickle-stream and storage errors of a damaged file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({first[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dqn checkpoint (no '{FORMAT}' marker); pass a file written by dqn train")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state.get('format_version')}; this dqn reads up to {FORMAT_VERSION}"
        )
    return state
