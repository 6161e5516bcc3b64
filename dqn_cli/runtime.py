"""What a run needs from the machine and from its seed: the device, threads, memory, and every random stream.

Seeds (NumPy's "Parallel random number generation" guide). Every random stream of a run is derived from its one
``seed`` through :class:`numpy.random.SeedSequence`, each stream under its own
spawn key, so two runs with different seeds share no env seed, and within a
run no stream replays another's numbers (the exploration generator no longer
repeats the weight initialisation's). A stream may take more keys: the
evaluation envs are seeded per evaluation (``stream(seed, "eval_envs", k)``
for the k-th evaluation), so each evaluation plays fresh start states, and the
envs restarted on resume per env step.

Integers handed to envs and generators are 63-bit (two 32-bit words of the
sequence's state): collisions between runs are then as unlikely as between
any two 63-bit draws. Envs whose own seeding takes fewer bits fold the seed
down themselves (MinAtar, ale-py's vector env).
"""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

from dqn_cli.config import ConfigError

# One spawn key per stream; never renumber (a run's numbers would change).
STREAMS = {
    "train_envs": 0,  # the training envs' first resets and their action spaces
    "eval_envs": 1,  # key (k,): the k-th evaluation's envs and its epsilon draws
    "resume_envs": 2,  # key (env_step,): envs restarted on resume at that step
    "exploration": 3,  # the agent's epsilon-greedy generator
    "replay": 4,  # replay sampling
    "init": 5,  # network initialisation (torch's global generator) and python/numpy globals
    "video": 6,  # key (k,): the k-th evaluation's filmed episode
    "augment": 7,  # network.augment's shifts and intensity noise
    "restarted_envs": 8,  # key (k,): the training envs after their k-th restart (env.worker_restarts)
}


def stream(seed: int, name: str, *key: int) -> np.random.SeedSequence:
    """The SeedSequence of stream ``name`` (with optional extra ``key`` ints) of run ``seed`` >= 0."""
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(STREAMS[name], *(int(k) for k in key)))


def seeds(seed: int, name: str, n: int, *key: int) -> list[int]:
    """``n`` independent 63-bit seeds of stream ``name``, e.g. one per env."""
    words = stream(seed, name, *key).generate_state(2 * n, np.uint64)
    return [int(w >> np.uint64(1)) for w in words[::2]] if n else []


def int_seed(seed: int, name: str, *key: int) -> int:
    """One 63-bit seed of stream ``name`` (for a torch.Generator or numpy default_rng)."""
    return seeds(seed, name, 1, *key)[0]


def fold_seed(seed: int, bits: int = 32) -> int:
    """A seed for an env whose own seeding takes ``bits`` bits, mixed from all of ``seed``'s bits."""
    return int(np.random.SeedSequence(int(seed)).generate_state(1, np.uint64)[0] >> np.uint64(64 - bits))


def seed_globals(seed: int) -> None:
    """Python's, numpy's and torch's global generators (torch's initialises the networks)."""
    init = int_seed(seed, "init")
    random.seed(init)
    np.random.seed(init % 2**32)
    torch.manual_seed(init)


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; refuses cuda when there is none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} but no CUDA device is available; use device=auto or device=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name} but only {torch.cuda.device_count()} CUDA device(s) exist; use cuda:0...")
    return device


def torch_threads_for(requested: int, env_workers: int) -> int:
    """Intra-op threads for torch: ``requested`` if > 0, else the cores the env workers leave.

    Torch's default (one thread per core) competes with env subprocesses for
    the same cores; on a small machine that spin-waiting slows both down by
    an order of magnitude. ``env_workers``: processes or threads stepping envs
    besides this one (num_envs for async/ale backends, 0 for sync).
    """
    if requested > 0:
        return requested
    return max(1, available_cpus() - env_workers)


def available_cpus() -> int:
    """The cores this process may run on (its affinity: a container's or a SLURM job's share),
    not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (not Linux)
        return os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, e.g. "Intel(R) Xeon(R) Processor"),
    to print beside every timing: the same work can take twice as long on another CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def keep_freed_memory() -> None:
    """Let glibc's malloc reuse freed blocks of up to 32 MiB instead of returning them to the OS.

    By default a block over 128 KiB is mmap'd, and unmapped when freed: every update's batch
    tensors (an Atari batch of 32 float frames is 3.6 MB) are then new pages, each faulted in on
    first touch. With M_MMAP_THRESHOLD at its maximum (32 MiB on 64-bit) and a trim threshold
    above it, they come from the heap, already mapped (mallopt(3)); the Nature CNN's update runs
    ~10% faster on this project's CPUs. No effect where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if os.name != "posix" or name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)
        libc.mallopt(M_TRIM_THRESHOLD, 256 * 2**20)
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        pass


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_fits_in_memory(needed: int, capacity: int, what: str = "replay buffer") -> None:
    """Refuse up front, with the estimate, a buffer that would not fit in RAM."""
    avail = available_memory_bytes()
    if needed > 0.9 * avail:
        raise ConfigError(
            f"replay.capacity={capacity:,} needs about {needed / 2**30:.1f} GiB for the {what} "
            f"but only {avail / 2**30:.1f} GiB of memory is available; "
            f"use replay.capacity <= {int(capacity * 0.9 * avail / needed):,}"
        )
