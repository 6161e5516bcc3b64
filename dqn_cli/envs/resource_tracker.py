"""multiprocessing's resource tracker, kept in step with this process if someone kills it.

The async env backend (Gymnasium's ``AsyncVectorEnv``, ``spawn`` context) makes
named POSIX semaphores (its error queue's locks). Python registers each with
the *resource tracker*, a helper process that unlinks them should this process
die without doing so, and unregisters them when they are closed. The tracker
ignores SIGINT and SIGTERM, but ``kill -9`` ends it; the standard library then
starts a new one on next use, with an empty registry, and every later
unregister of a semaphore made before that makes the new tracker print a
``KeyError`` traceback (CPython ``Lib/multiprocessing/resource_tracker.py``;
the same noise is reported in e.g. vllm-project/vllm#5468).

:func:`install` keeps a ledger of the names this process has registered and
not yet unregistered. At the first registration or unregistration after the
tracker was replaced, the names are registered with the new one (so from then on
they are cleaned up again if this process dies), and one warning line says so,
instead of the stdlib's two-line warning and the tracebacks. Nothing changes
while the tracker lives.
"""

from __future__ import annotations

import logging
import warnings
from multiprocessing import resource_tracker

log = logging.getLogger("dqn")

_STDLIB_REGISTER = resource_tracker.register
_STDLIB_UNREGISTER = resource_tracker.unregister
_REENTRANT = getattr(resource_tracker, "ReentrantCallError", ())  # Python >= 3.11.6

_ledger: dict[str, str] = {}  # name -> resource type, registered here and not yet unregistered
_known_pid: int | None = None  # the tracker the ledger's names were registered with


def install() -> None:
    """Start the tracker now (before any worker) and route this process's (un)registrations
    through the ledger. Idempotent."""
    global _known_pid
    resource_tracker.ensure_running()
    if resource_tracker.register is _register:
        return
    warnings.filterwarnings("ignore", message="resource_tracker: process died unexpectedly", category=UserWarning)
    _known_pid = _tracker_pid()
    resource_tracker.register = _register
    resource_tracker.unregister = _unregister


def _tracker_pid() -> int | None:
    return getattr(resource_tracker._resource_tracker, "_pid", None)


def _in_step() -> None:
    """Relaunch a dead tracker and give the new one the ledger's names."""
    global _known_pid
    try:
        resource_tracker.ensure_running()
    except _REENTRANT:  # called from a finalizer inside the tracker's own call: it copes itself
        return
    pid = _tracker_pid()
    if pid is None or pid == _known_pid:  # (None: a tracker this process inherited, alive)
        return
    old, _known_pid = _known_pid, pid
    for name, rtype in list(_ledger.items()):
        _STDLIB_REGISTER(name, rtype)
    log.warning(
        "multiprocessing's resource tracker (%s) was killed; a new one (pid %d) now tracks "
        "the %d semaphores of the env workers",
        "an inherited one" if old is None else f"pid {old}",
        pid,
        len(_ledger),
    )


def _register(name: str, rtype: str) -> None:
    _in_step()
    _ledger[name] = rtype
    _STDLIB_REGISTER(name, rtype)


def _unregister(name: str, rtype: str) -> None:
    _in_step()
    _ledger.pop(name, None)
    _STDLIB_UNREGISTER(name, rtype)
