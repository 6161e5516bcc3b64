"""A run dir's files: the one atomic write every writer uses, and the one reader of the
``.hydra/`` files Hydra records in it.

Writes (checkpoints, replay.npz, configs, summaries, videos) go beside the target, are fsynced and
renamed over it: a kill -9 or a full disk at any moment leaves either the old file or the new
one, never half of one (POSIX rename(2) is atomic).

Reads of ``.hydra/config.yaml``, ``overrides.yaml`` and ``hydra.yaml`` (by resume, plot, the
sweep summary and TensorBoard's HParams) take them as plain YAML data: no tag builds an object and
no ``${..}`` interpolation is resolved, since a run dir may be someone else's.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

HYDRA_DIR = ".hydra"  # where Hydra records a run's config.yaml, overrides.yaml and hydra.yaml


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp path beside ``path`` to write to; when the block ends cleanly it is fsynced and
    renamed over ``path``, on any error removed (``path`` untouched). ``suffix``: the temp
    name's ending (a writer that picks its format by extension needs the real one)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a binary temp file beside ``path``, then rename it over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
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


class UnreadableYaml(ValueError):
    """A YAML file that cannot be read or parsed; ``str(err)`` says why in one short line."""


def hydra_file(run_dir: str | os.PathLike, name: str) -> Path:
    """``RUN_DIR/.hydra/NAME``: ``config.yaml``, ``overrides.yaml`` or ``hydra.yaml``."""
    return Path(run_dir) / HYDRA_DIR / name


def read_yaml_data(path: str | os.PathLike, strict: bool = False) -> Any:
    """The plain data of a YAML file (``yaml.safe_load``: mappings, lists, scalars; nothing
    resolved or built). None when the file is absent; when it is unreadable, None too, or with
    ``strict`` :class:`UnreadableYaml`."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        if not strict:
            return None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnreadableYaml(first[:160]) from None
