"""``dqn train resume=RUN_DIR [total_steps=N]``: continue a run in its own directory, end to end.

Before Hydra composes, :func:`rewrite_resume_args` points the run at RUN_DIR (the CLI's one
call); then the trainer's :func:`resumed_config` merges the saved config with the command
line, :func:`check_resumable` refuses a checkpoint of another run, and :func:`continue_run`
restores the state into the rebuilt run.

The run's saved ``.hydra/config.yaml`` is the config; the command line may only change what
does not alter the experiment (budget, cadences, device, display), and a refused resume
writes nothing. Classic-control envs and Atari envs on the sync and async backends are captured
in the checkpoint and continue exactly; other envs start fresh episodes (envs.snapshot). What
continues, and when a resume is bitwise exact: docs/resume.md in the repository.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from dqn_cli.config import (
    ConfigError,
    TrainConfig,
    check_stored,
    stored_imports,
    to_dict,
    to_train_config,
    validate,
)
from dqn_cli.envs.vector import restore_envs
from dqn_cli.files import UnreadableYaml, hydra_file, read_yaml_data
from dqn_cli.run import checkpoint as ckpt
from dqn_cli.run.state import Counters
from dqn_cli.runtime import seeds

log = logging.getLogger("dqn")

# keys a resumed run may change; everything else must match the saved config
CHANGEABLE = (
    "total_steps",
    "checkpoint",
    "eval",
    "log_every",
    "progress",
    "device",
    "torch_threads",
    "compile",
    "resume",
    "tracker",  # where the run is reported; a resume continues the tracker runs it started
)


def _resume_value(args: list[str]) -> str | None:
    for arg in args:
        if arg.startswith("resume=") or arg.startswith("+resume="):
            return arg.split("=", 1)[1]
    return None


def rewrite_resume_args(args: list[str]) -> list[str]:
    """Point Hydra's run dir at the run being resumed; refuse what is not a run.

    Hydra is told not to write ``.hydra/`` (the run's own config stays as it
    is until the resume is known to be valid). Raises ValueError with a
    one-line message.
    """
    value = _resume_value(args)
    if value in (None, "", "null"):
        return args
    if any(a in ("-m", "--multirun") for a in args):
        raise ValueError("resume= continues one run; it cannot be combined with --multirun")
    run_dir = Path(value).expanduser()
    if not run_dir.is_dir():
        raise ValueError(f"resume={value}: no such directory; pass a run directory such as outputs/DATE/TIME_cartpole")
    if not hydra_file(run_dir, "config.yaml").is_file():
        sweep = (run_dir / "multirun.yaml").is_file()
        hint = " (it is a sweep directory: pass one of its job directories)" if sweep else ""
        raise ValueError(
            f"resume={value} is not a dqn run (no .hydra/config.yaml in it){hint}; pass the run directory itself"
        )
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise ValueError(f"resume={value} has no checkpoints/last.pt to continue from; start a new run instead")
    absolute = "'" + str(run_dir.resolve()).replace("'", "\\'") + "'"  # one Hydra value, whatever the path holds
    rest = [a for a in args if not a.startswith(("resume=", "+resume=", "hydra.run.dir=", "hydra.output_subdir="))]
    return [*rest, f"resume={absolute}", f"hydra.run.dir={absolute}", "hydra.output_subdir=null"]


def resumed_config(composed: TrainConfig | DictConfig, run_dir: Path, overrides: list[str]) -> TrainConfig:
    """The saved config with the command line's changeable overrides applied, validated.

    composed: the config Hydra composed for this command (defaults + overrides).
    overrides: the command line's task overrides, e.g. ["resume=...", "total_steps=100000"].
    Raises ConfigError (one line) on a conflicting override; writes nothing (the trainer
    records the result once the checkpoint is restored).
    """
    if not isinstance(composed, TrainConfig):
        composed = to_train_config(composed, strict=True)
    saved_path = hydra_file(run_dir, "config.yaml")
    try:
        saved = read_yaml_data(saved_path, strict=True)
    except UnreadableYaml as err:
        raise ConfigError(f"resume: {saved_path} is unreadable ({err}); it is not a usable dqn run") from None
    saved = check_stored(saved, f"resume: {saved_path}", stored_imports(to_dict(composed)))
    saved_cfg = to_train_config(saved)
    fresh = OmegaConf.structured(composed)
    merged = OmegaConf.structured(saved_cfg)
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key.startswith("hydra.") or key.startswith("hydra/"):
            continue
        key = key.replace("/", ".")
        new = OmegaConf.select(fresh, key)
        old = OmegaConf.select(merged, key)
        if key.split(".")[0] in CHANGEABLE or key == "env.worker_restarts":
            OmegaConf.update(merged, key, new, merge=False)
        elif _plain(new) != _plain(old):
            raise ConfigError(
                f"resume: {key} was {_plain(old)!r} in {run_dir}, the command line gives {_plain(new)!r}; "
                "a resumed run keeps its env, network, replay and agent settings (start a new run to change them)"
            )
    OmegaConf.update(merged, "resume", str(run_dir), merge=False)
    return validate(to_train_config(merged))


# what must agree between the run's config and its checkpoint for the weights and replay to fit
_IDENTITY = {
    "env": ("kind", "id", "game", "num_envs", "frame_stack", "screen_size"),
    "network": (
        "name",
        "hidden_sizes",
        "activation",
        "dueling",
        "cnn_hidden",
        "distributional",
        "atoms",
        "quantiles",
        "noisy",
        "norm",
    ),
    "replay": ("name", "capacity"),
}


def check_resumable(state: dict, cfg: TrainConfig, path: Path) -> dict:
    """Refuse a checkpoint that does not belong to this run's config, or a run with nothing left to do.

    Returns the checkpoint's counters. Raises CheckpointError / ConfigError (one line).
    """
    from dqn_cli.errors import CheckpointError

    missing = [k for k in ("counters", "agent", "config", "rng") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; it cannot continue a run")
    saved = state["config"]
    for group, keys in _IDENTITY.items():
        for key in keys:
            old, new = saved.get(group, {}).get(key), getattr(getattr(cfg, group), key)
            if old is not None and old != new:
                raise CheckpointError(
                    f"checkpoint {path} was saved for {group}.{key}={old!r} but the run's config has {new!r}; "
                    "the checkpoint belongs to another run"
                )
    counters = state["counters"]
    done = int(counters.get("env_steps", 0))
    if done > cfg.total_steps or (done == cfg.total_steps and counters.get("finished", False)):
        state_word = "finished" if counters.get("finished", False) else "stopped"
        raise ConfigError(
            f"resume: the run {state_word} at {done} env steps and total_steps={cfg.total_steps}; "
            f"pass a larger budget, e.g. total_steps={max(2 * done, done + 1)}"
        )
    return counters


# ------------------------------------------------------------- the run's state
def continue_run(
    state: dict, cfg: TrainConfig, run_dir: Path, agent, replay, envs, stacker, stats
) -> tuple[Counters, np.ndarray]:
    """Put a checkpoint's ``state`` (checked by :func:`check_resumable`) back into a run's freshly
    built parts. Returns the counters and the stacked observations
    (E, S, *frame_shape) the envs act on next.

    The envs start fresh episodes from seeds of their own (so a resumed run explores on), unless
    :func:`~dqn_cli.envs.vector.restore_envs` puts them back exactly; either way no frame stack or
    n-step window in replay spans the resume.
    """
    n = _restore(state, agent, replay, run_dir)
    env_seeds = seeds(cfg.seed, "resume_envs", cfg.env.num_envs, n.env_steps)
    obs = stacker.reset(envs.reset(seed=env_seeds)[0])
    continued = restore_envs(envs, stacker, state.get("envs"))
    if continued:  # the episodes continue exactly
        stats.load_state_dict(state["episode_stats"])
    if replay is not None:
        replay.resume_episodes(obs, continued)
    log.info("resumed %s at env step %d (%d updates)", run_dir, n.env_steps, n.updates)
    return n, obs


def _restore(state: dict, agent, replay, run_dir: Path) -> Counters:
    """Networks, optimizer, counters, RNGs and (when replay.npz matches) the replay buffer of ``state``
    (agent: a DQNAgent or PQNAgent; replay None for algo=pqn)."""
    try:
        agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError, ValueError) as err:
        first = str(err).strip().splitlines()
        raise ckpt.CheckpointError(
            f"checkpoint {run_dir / 'checkpoints' / 'last.pt'} does not fit this run's network or optimizer "
            f"({(first[1] if len(first) > 1 else first[0]).strip()[:160] if first else type(err).__name__})"
        ) from None
    known = {f.name for f in fields(Counters)}
    n = Counters(**{k: v for k, v in state["counters"].items() if k in known})
    n.finished = False
    rng = state["rng"]
    random.setstate(_as_tuple(rng["python"]))
    kind, keys, *rest = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():  # per GPU, for as many as this machine has
        for index, cuda_state in enumerate(rng["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    if replay is None:  # algo=pqn: nothing to refill
        return n
    with ckpt.open_replay(run_dir / "checkpoints") as saved:
        if saved is None:
            log.info("no replay.npz: the replay buffer starts empty (checkpoint.save_replay=true keeps it)")
        elif saved[0] != n.env_steps:
            log.warning(
                "replay.npz is from env step %d, last.pt from %d: the replay buffer starts empty", saved[0], n.env_steps
            )
        else:
            try:
                replay.load_state_dict(saved[1])
            except (ValueError, KeyError) as err:
                raise ckpt.CheckpointError(
                    f"{run_dir / 'checkpoints' / 'replay.npz'} does not fit this run's replay buffer ({err}); "
                    "delete it to resume with an empty buffer"
                ) from None
            log.info("replay buffer restored: %d transitions", len(replay))
    return n


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _plain(value):
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value
