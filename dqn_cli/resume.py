"""``dqn train resume=RUN_DIR [total_steps=N]``: continue a run in its own directory.

The run's saved ``.hydra/config.yaml`` is the config; the command line may
only change what does not alter the experiment (budget, cadences, device,
display). Anything else that differs is refused with the key named.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from dqn_cli.config import ConfigError, TrainConfig, to_train_config, validate

# keys a resumed run may change; everything else must match the saved config
CHANGEABLE = ("total_steps", "checkpoint", "eval", "log_every", "progress", "device", "torch_threads", "resume")


def _resume_value(args: list[str]) -> str | None:
    for arg in args:
        if arg.startswith("resume=") or arg.startswith("+resume="):
            return arg.split("=", 1)[1]
    return None


def rewrite_resume_args(args: list[str]) -> list[str]:
    """Point Hydra's run dir at the run being resumed; refuse what is not a run.

    Raises ValueError with a one-line message.
    """
    value = _resume_value(args)
    if value in (None, "", "null"):
        return args
    if any(a in ("-m", "--multirun") for a in args):
        raise ValueError("resume= continues one run; it cannot be combined with --multirun")
    run_dir = Path(value).expanduser()
    if not run_dir.is_dir():
        raise ValueError(f"resume={value}: no such directory; pass a run directory such as outputs/DATE/TIME_cartpole")
    if not (run_dir / ".hydra" / "config.yaml").is_file():
        raise ValueError(f"resume={value} is not a dqn run (no .hydra/config.yaml in it); pass the run directory itself")
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise ValueError(f"resume={value} has no checkpoints/last.pt to continue from; start a new run instead")
    absolute = str(run_dir.resolve())
    rest = [a for a in args if not a.startswith(("resume=", "+resume=", "hydra.run.dir="))]
    return [*rest, f"resume={absolute}", f"hydra.run.dir={absolute}", "hydra.output_subdir=null"]


def resumed_config(composed: TrainConfig, run_dir: Path, overrides: list[str]) -> TrainConfig:
    """The saved config with the command line's changeable overrides applied.

    composed: the config Hydra composed for this command (defaults + overrides).
    overrides: the command line's task overrides, e.g. ["resume=...", "total_steps=100000"].
    """
    saved_path = Path(run_dir) / ".hydra" / "config.yaml"
    saved = OmegaConf.load(saved_path)
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
        if key.split(".")[0] in CHANGEABLE:
            OmegaConf.update(merged, key, new, merge=False)
        elif _plain(new) != _plain(old):
            raise ConfigError(
                f"resume: {key} was {_plain(old)!r} in {run_dir}, the command line gives {_plain(new)!r}; "
                "a resumed run keeps its env, network, replay and agent settings (start a new run to change them)"
            )
    OmegaConf.update(merged, "resume", str(run_dir), merge=False)
    result = validate(to_train_config(merged))
    OmegaConf.save(OmegaConf.structured(result), saved_path)
    return result


def _plain(value):
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value
