"""``dqn train resume=RUN_DIR [total_steps=N]``: continue a run in its own directory.

The run's saved ``.hydra/config.yaml`` is the config; the command line may only change what
does not alter the experiment (budget, cadences, device, display), and a refused resume
writes nothing. Classic-control envs are captured in the checkpoint and continue exactly;
other envs (and EnvPool's, whose C++ state Python cannot read) start fresh episodes. What continues, and when a resume is bitwise exact:
docs/resume.md in the repository.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from dqn_cli.config import (
    ConfigError,
    EnvConfig,
    TrainConfig,
    check_stored,
    stored_imports,
    to_dict,
    to_train_config,
    validate,
)
from dqn_cli.files import UnreadableYaml, atomic_write_text, hydra_file, read_yaml_data

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


def resumed_config(composed: TrainConfig, run_dir: Path, overrides: list[str]) -> TrainConfig:
    """The saved config with the command line's changeable overrides applied.

    composed: the config Hydra composed for this command (defaults + overrides).
    overrides: the command line's task overrides, e.g. ["resume=...", "total_steps=100000"].
    Raises ConfigError (one line) on a conflicting override; writes nothing
    (:func:`save_config` records the result once the checkpoint is known good).
    """
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


def save_config(run_dir: Path, cfg: TrainConfig) -> None:
    """Record a resumed run's config (new total_steps, cadences) in its ``.hydra/config.yaml``, atomically."""

    text = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    atomic_write_text(hydra_file(run_dir, "config.yaml"), text)


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
    saved, now = state["config"], to_dict(cfg)
    for group, keys in _IDENTITY.items():
        for key in keys:
            old, new = saved.get(group, {}).get(key), now[group][key]
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


# ------------------------------------------------------------- env state
_EXACT_MODULE = "gymnasium.envs.classic_control."
_SIM_ATTRS = ("state", "steps_beyond_terminated")  # a classic-control simulator's whole mutable state


def capture_envs(envs, stacker, env_cfg: EnvConfig) -> dict | None:
    """The training envs' simulator state and the agent's stacked observations, as
    tensors, lists and numbers; None where the envs cannot be restored exactly
    (see the module docstring). Call between steps (the vector env idle)."""
    if env_cfg.kind != "classic" or env_cfg.vectorization == "envpool":
        return None
    units = envs.get_attr("unwrapped")  # async: the small env objects pickled back from the workers
    if not all(type(u).__module__.startswith(_EXACT_MODULE) for u in units):
        return None
    sim = {}
    for attr in _SIM_ATTRS:
        if all(hasattr(u, attr) for u in units):
            sim[attr] = [_plain_value(getattr(u, attr)) for u in units]
    limited = all(envs.call("has_wrapper_attr", "_elapsed_steps"))
    return {
        "kind": "classic_control",
        "env_type": type(units[0]).__name__,
        "sim": sim,
        "np_random": [u.np_random.bit_generator.state for u in units],
        "elapsed_steps": [int(s) for s in envs.get_attr("_elapsed_steps")] if limited else None,
        "obs": torch.from_numpy(np.array(stacker.obs, copy=True)),
    }


def restore_envs(envs, stacker, saved: dict | None) -> bool:
    """Put the envs (already reset) and the frame stacks back where :func:`capture_envs`
    found them; False (nothing changed) when there is nothing to restore."""
    if not saved or saved.get("kind") != "classic_control":
        return False
    units = envs.get_attr("unwrapped")
    if type(units[0]).__name__ != saved["env_type"] or len(units) != len(saved["np_random"]):
        return False
    if tuple(saved["obs"].shape) != stacker.obs.shape:
        return False
    for attr, values in saved["sim"].items():
        envs.set_attr(attr, [_array_value(v) for v in values])
    generators = []
    for state in saved["np_random"]:
        g = np.random.Generator(getattr(np.random, state["bit_generator"])())
        g.bit_generator.state = state
        generators.append(g)
    envs.set_attr("np_random", generators)
    if saved["elapsed_steps"] is not None:
        envs.set_attr("_elapsed_steps", list(saved["elapsed_steps"]))
    stacker.obs[...] = saved["obs"].numpy()
    return True


def _plain_value(value):
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, (tuple, list)):
        return torch.from_numpy(np.asarray(value).copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _array_value(value):
    return value.numpy().copy() if isinstance(value, torch.Tensor) else value


def _plain(value):
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value
