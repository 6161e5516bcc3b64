"""Stopping a run from outside: the first SIGINT/SIGTERM/SIGUSR2 asks the loop to stop after the
current step (checkpoint, exit 128 + the signal), a second one quits at once."""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager

log = logging.getLogger("dqn")


class StopRequested(BaseException):
    """Raised by :class:`StopRequest` inside :meth:`StopRequest.abandoning`: the work in
    progress (an evaluation) is dropped so the run can checkpoint and exit now."""


class Abort(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: quit at once, without a checkpoint (the last complete one stays)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StopRequest:
    """SIGINT/SIGTERM handler: the first signal asks the loop to stop after the
    current step (checkpoint, clean exit with 128 + the signal number); a
    second one raises :class:`Abort` at once."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}
        self._abandon = False

    def __enter__(self) -> "StopRequest":
        # SIGUSR2: SLURM's warning before the time limit (submitit's --signal=USR2@120)
        for sig in (signal.SIGINT, signal.SIGTERM, *([signal.SIGUSR2] if hasattr(signal, "SIGUSR2") else [])):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise Abort(signum)  # second signal: stop now
        self.signal = signum
        log.warning(
            "%s received: finishing this step and saving a checkpoint (again to quit at once)",
            signal.Signals(signum).name,
        )
        if self._abandon:
            raise StopRequested

    @contextmanager
    def abandoning(self):
        """Inside, the first signal also interrupts the work at once (it raises StopRequested)."""
        self._abandon = True
        try:
            yield
        finally:
            self._abandon = False

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __bool__(self) -> bool:
        return self.signal is not None
