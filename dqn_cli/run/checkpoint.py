"""Checkpoints: atomic writes, keep-last-N, safe loading (``torch.load(weights_only=True)``, torch's default since 2.6).

A checkpoint is a dict of tensors, plain containers and numbers only, so it
loads with ``torch.load(..., weights_only=True)``: a file crafted to run code
when unpickled is refused and nothing runs.

Files in ``run_dir/checkpoints/``::

    step_000050000.pt   step-numbered, the newest ``keep`` kept
    last.pt             always the newest complete checkpoint
    replay.npz          the replay buffer, when checkpoint.save_replay=true

Every file is written to a temporary name in the same directory, fsynced,
then ``os.replace``d into place, so a kill -9 at any moment leaves the
previous complete file. A write that fails (a full disk)
raises :class:`CheckpointWriteError` and leaves the previous files as they were.

``replay.npz`` is written before the model checkpoint and records the env step
it belongs to; a resume uses it only when that step is ``last.pt``'s.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dqn_cli.errors import CheckpointError, CheckpointWriteError, ConfigError
from dqn_cli.files import atomic_write

FORMAT = "dqn-checkpoint"
FORMAT_VERSION = 1
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since 1.6 (what dqn writes) is a zip archive
# torch's legacy format is a bare pickle stream opening with this number (a LONG1 opcode)
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_AGAIN = "use another file from its checkpoints/ dir"


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
    data = _serialized({"format": FORMAT, "format_version": FORMAT_VERSION, **state})
    target = step_path(ckpt_dir, step)
    _write(target, lambda f: f.write(data))
    _write(ckpt_dir / "last.pt", lambda f: f.write(data))
    for _, old in step_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return target


def save_best(ckpt_dir: Path, state: dict) -> Path:
    """Write ``state`` (the network with the best evaluation so far) as ``best.pt``; return its path."""
    path = Path(ckpt_dir) / "best.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _serialized({"format": FORMAT, "format_version": FORMAT_VERSION, **state})
    _write(path, lambda f: f.write(data))
    return path


def _serialized(payload: dict) -> bytes:
    """``torch.save``'s bytes, made in memory: written to a file directly, a full disk surfaces from
    torch's zip writer as a RuntimeError ("unexpected pos"), not the OSError it is; written as
    bytes, it is an OSError (ENOSPC) that names the disk. (Also serialised once for both files.)"""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _write(path: Path, write: Callable[[Any], None]) -> None:
    try:
        atomic_write(path, write)
    except OSError as err:
        raise CheckpointWriteError(path, err) from err


REPLAY_STEP_KEY = "checkpoint_env_steps"


def save_replay(ckpt_dir: Path, arrays: dict[str, np.ndarray], step: int) -> Path:
    """The replay buffer's arrays, beside (not inside) the model checkpoints, tagged with ``step``."""
    path = Path(ckpt_dir) / "replay.npz"
    path.parent.mkdir(parents=True, exist_ok=True)  # (the run's first checkpoint writes this file first)
    _write(path, lambda f: np.savez(f, **arrays, **{REPLAY_STEP_KEY: np.array(step, dtype=np.int64)}))
    return path


@contextmanager
def open_replay(ckpt_dir: Path) -> Iterator[tuple[int, Mapping[str, np.ndarray]] | None]:
    """``(env_step, arrays)`` of ``replay.npz``, or None when there is none.

    The arrays are read from the open file one at a time as they are asked
    for, so a large buffer is never held twice in memory. Raises
    CheckpointError for a damaged file.
    """
    path = Path(ckpt_dir) / "replay.npz"
    if not path.exists():
        yield None
        return
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as err:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({_first_line(err)}); delete it to resume without it"
        ) from None
    with data:
        arrays = _OneAtATime(data, path)
        step = int(arrays[REPLAY_STEP_KEY]) if REPLAY_STEP_KEY in data.files else -1
        yield step, arrays


class _OneAtATime(Mapping):
    """The members of an open .npz, read on access and cached one at a time."""

    def __init__(self, data, path: Path):
        self._data, self._path = data, path
        self._key, self._value = None, None

    def __getitem__(self, key: str) -> np.ndarray:
        if key != self._key:
            if key not in self._data.files:
                raise KeyError(key)
            try:
                value = self._data[key]
            except Exception as err:
                raise CheckpointError(
                    f"{self._path} is truncated or corrupt ({_first_line(err)}); delete it to resume without it"
                ) from None
            self._key, self._value = key, value
        return self._value

    def __iter__(self):
        return iter(self._data.files)

    def __len__(self) -> int:
        return len(self._data.files)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:160]


def checkpoint_path(path: str | os.PathLike, which: str = "last") -> Path:
    """The checkpoint ``path`` names: a ``.pt`` file itself, or a run dir's
    ``checkpoints/{which}.pt`` (``which`` checked by config.check_which). Raises CheckpointError /
    ConfigError when ``which`` cannot apply."""
    path = Path(path)
    if not path.is_dir():
        if which != "last":
            raise ConfigError(f"which={which} picks a checkpoint of a run dir; checkpoint={path} is a file")
        return path
    chosen = path / "checkpoints" / f"{which}.pt"
    if which == "best" and not chosen.exists() and chosen.with_name("last.pt").exists():
        raise CheckpointError(
            f"{chosen} does not exist: a run writes it at each evaluation that beats its best so far "
            "(none with eval.episodes=0); use which=last"
        )
    return chosen


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
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); {_AGAIN}")
    _check_archive(path)
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
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({first[:160]}); {_AGAIN}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a dqn checkpoint (no '{FORMAT}' marker); pass a file written by dqn train"
        )
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state.get('format_version')}; this dqn reads up to {FORMAT_VERSION}"
        )
    return state


def _check_archive(path: Path) -> None:
    """Refuse a file torch.load would misread: not a torch file, or a zip whose CRCs do not match.

    torch.load reads the zip format without checking its CRCs, so flipped bytes
    would load as garbage weights; this reads the file once to check them
    (fast: no unpickling, nothing in the file is run). A file that is neither
    a zip archive nor torch's legacy pickle format would otherwise reach the
    weights-only unpickler and be mistaken for a code-carrying pickle.
    """
    try:
        with path.open("rb") as f:
            head = f.read(32)
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} cannot be read ({_first_line(err)})") from None
    if not head.startswith(_ZIP_MAGIC):
        if head.startswith(b"\x80") and _LEGACY_MAGIC in head:
            return  # torch's legacy format: torch.load(weights_only=True) refuses anything but data
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a torch checkpoint (not a zip archive); "
            f"{_AGAIN}, or a file written by dqn train"
        )
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:  # the directory at the end of the zip is gone (cut short) or damaged
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt (its zip directory is missing or damaged); {_AGAIN}"
        ) from None
    except Exception as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({_first_line(err)}); {_AGAIN}") from None
    try:
        with archive:
            damaged = archive.testzip()
    except Exception as err:  # damaged member headers
        raise CheckpointError(f"checkpoint {path} is corrupt ({_first_line(err)}); {_AGAIN}") from None
    if damaged is not None:
        raise CheckpointError(f"checkpoint {path} is corrupt (member {damaged[:120]} fails its CRC check); {_AGAIN}")
