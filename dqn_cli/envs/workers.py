"""Env worker processes: start them deaf to Ctrl-C, name the one that died, close them without hanging.

The trainer stops on the first SIGINT/SIGTERM itself (checkpoint first), so
workers start with those signals blocked; a worker that dies surfaces as
:class:`EnvWorkerDied` naming it, and after an error the workers are killed
rather than waited for (gymnasium's close() would read from dead pipes).
"""

from __future__ import annotations

import functools
import logging
import signal
import time
from contextlib import contextmanager
from typing import Iterator

import gymnasium as gym
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv

log = logging.getLogger("dqn")

# what a dead env subprocess looks like from the parent's end of its pipe
WORKER_GONE = (EOFError, BrokenPipeError, ConnectionResetError)


def gymnasium_vector_env(fns: list, vectorization: str, pausable: bool = False) -> VectorEnv:
    """Gymnasium's vector env of the env factories ``fns`` (picklable zero-argument callables),
    autoreset SAME_STEP: ``async``, one ``spawn`` subprocess each; ``sync``, all in this process.
    ``pausable``: each env in a :class:`Pausable` (evaluation envs), and the vector env says so
    (its ``pausable`` attribute)."""
    if pausable:
        fns = [functools.partial(_pausable, fn) for fn in fns]
    if vectorization == "async":
        envs: VectorEnv = AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP, context="spawn")
    else:
        envs = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    envs.pausable = pausable
    return envs


class Pausable(gym.Wrapper):
    """An env that can sit out: while ``paused`` (set through the vector env's ``set_attr``) a
    step returns its last observation, no reward and no end, without stepping the game. An
    evaluation's env that has played its quota of episodes waits so, instead of playing more
    episodes that nobody scores (on Atari, up to 27,000 steps of one more game)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.paused = False
        self._last = None

    def reset(self, **kwargs):
        self.paused = False
        self._last, info = self.env.reset(**kwargs)
        return self._last, info

    def step(self, action):
        if self.paused:
            return self._last, 0.0, False, False, {}
        self._last, reward, terminated, truncated, info = self.env.step(action)
        return self._last, reward, terminated, truncated, info


def _pausable(fn) -> Pausable:
    return Pausable(fn())


def dead_workers_text(err: BaseException, env_cfg, envs=None, eval_envs=None) -> str:
    """``"env worker 1 of 2 (CartPole-v1, pid 123) was killed by SIGKILL"``: the workers that are gone."""
    name = env_cfg.label
    dead = [
        f"{kind}env worker {i} of {total} ({name}, pid {p.pid}) {_exit_text(p.exitcode)}"
        for kind, i, total, p in _dead_workers({"": envs, "evaluation ": eval_envs})
    ]
    return "; ".join(dead) if dead else f"an env worker of {name} stopped answering ({type(err).__name__})"


def _exit_text(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _async_env(envs) -> AsyncVectorEnv | None:
    """The AsyncVectorEnv inside a (possibly wrapped) vector env; None for in-process backends."""
    while envs is not None and not isinstance(envs, AsyncVectorEnv):
        envs = getattr(envs, "env", None)
    return envs


def _worker_processes(envs) -> list:
    vec = _async_env(envs)
    return list(vec.processes) if vec is not None else []


def _dead_workers(labelled_envs: dict, wait: float = 2.0) -> list[tuple[str, int, int, object]]:
    """(label, index, number of workers, process) of the workers of the vector envs that are gone;
    waits up to ``wait`` seconds for one (a pipe breaks a moment before its process is reaped)."""
    workers = [
        (label, i, len(procs), p)
        for label, vec in labelled_envs.items()
        for procs in [_worker_processes(vec)]
        for i, p in enumerate(procs)
    ]
    deadline = time.monotonic() + wait
    while True:
        dead = [w for w in workers if not w[3].is_alive()]
        if dead or not workers or time.monotonic() > deadline:
            return dead
        time.sleep(0.05)


def ignore_sigint_in_vector_worker() -> None:
    """In a Gymnasium AsyncVectorEnv subprocess (named "Worker<AsyncVectorEnv>-i") ignore SIGINT.

    Env factories call it first: Ctrl-C, sent to the whole process group, then
    reaches only the trainer, which saves a checkpoint and closes the workers.
    """
    import multiprocessing

    if multiprocessing.parent_process() is not None and multiprocessing.current_process().name.startswith("Worker<"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def deaf_workers(vectorization: str) -> Iterator[None]:
    """Env subprocesses started inside this block (``vectorization``: the env's backend) are
    deaf to SIGINT and SIGTERM: the signals are blocked here while they start, and they inherit
    the mask.

    A Ctrl-C (sent to the whole process group) or a SIGTERM to the group reaches
    only the trainer, which saves a checkpoint and then closes the workers itself.
    In this process the signals are only delayed until the workers are up.
    """
    if vectorization == "async":
        # multiprocessing starts its resource tracker with the first worker and *unblocks*
        # SIGINT/SIGTERM afterwards, which would undo the mask: start it first (and keep its
        # registry in step with ours should it be killed)
        from . import resource_tracker

        resource_tracker.install()
    blocked = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def close_envs(envs, force: bool) -> None:
    """Close a vector env. ``force``: after an error or a second signal, kill its workers
    (they ignore SIGINT/SIGTERM, and one may be dead) instead of waiting for them."""
    if envs is None:
        return
    if not force:
        envs.close()
        return
    vec = _async_env(envs)
    if vec is None:
        try:
            envs.close()
        except Exception as err:  # a half-closed env must not hide the error that got us here
            log.debug("closing envs after an error: %s", err)
        return
    for p in vec.processes:
        if p.is_alive():
            p.kill()
    for p in vec.processes:
        p.join()
    # the workers are gone: release the pipes and mark the env closed ourselves (gymnasium's
    # close() would first try to read the answer to a pending step from the dead pipes)
    for pipe in vec.parent_pipes:
        if pipe is not None:
            pipe.close()
    vec.closed = True
