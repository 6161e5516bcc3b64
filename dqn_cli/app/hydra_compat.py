"""Every way dqn bends Hydra (hydra-core 1.3) to its CLI contract, each with why. Public API only:
the Compose API, the override parser, HydraConfig, OmegaConf, and Hydra's own overrides.

* Bad input on the command line gets one line and exit 2 (:func:`bad_value`), where Hydra prints
  4-12 lines and exits 1: a value of the wrong type (``total_steps=abc``: Hydra's "Error merging
  override" block), override syntax (``'optimizer.lr=[1,'``, a word with no ``=``), an unknown
  key with the one meant (:func:`unknown_key`: ``optimizr.lr`` -> ``optimizer.lr``; Hydra only
  says it is not in the struct), an unknown group option with the options, a sweep list without
  ``-m``, and every job of a sweep validated before the first starts (Hydra launches job 0
  first). The overrides are composed first through the Compose API for this.
* Integer keys take ``1e5`` as well as ``100_000`` when the value is an exact integer:
  :func:`exact_integers` rewrites such overrides before Hydra sees them (OmegaConf refuses
  a float for an int key).
* A run or sweep dir that cannot be created (``hydra.run.dir=/dev/null/run``) gets one line;
  Hydra creates it before the app runs and fails with two chained tracebacks.
* Two mode flags at once (``--cfg job -m``) are refused here in one line; Hydra raises a
  ValueError with a traceback.
* A refused run leaves nothing behind: Hydra creates the run dir, ``.hydra/`` and ``train.log``
  before the app runs. ``hydra.output_subdir=null`` (:data:`RECORD_CONFIG`) stops the first, and
  :class:`HeldRunLog` holds the log records, until the input has passed every check; then
  :func:`record_run_config` writes Hydra's files as Hydra would have (the trainer writes the
  run's config.yaml, resolved and validated, into :func:`run_config_dir`). Hydra also makes the run
  dir's parents (``outputs/DATE/``, ``hydra.run.dir=/a/b/c``): :func:`existing_root` notes what
  existed before, and :func:`remove_if_empty` removes what a refusal left empty.

Hydra has none of these as an option (hydra-core 1.3); each goes when Hydra gains it.
"""

from __future__ import annotations

import logging
import logging.handlers
from dataclasses import fields, is_dataclass
from pathlib import Path

from dqn_cli.files import HYDRA_DIR

MODE_FLAGS = {"--multirun": "-m", "--cfg": "-c", "--info": "-i", "--shell-completion": "-sc"}
RECORD_CONFIG = "hydra.output_subdir=null"  # a single run's .hydra/ is written once its input passed every check


def int_keys(schema) -> set[str]:
    """Dotted names of the int-typed keys of a dataclass schema (nested groups included)."""
    import dataclasses
    import typing

    keys = set()
    for name, hint in typing.get_type_hints(schema).items():  # resolved once per schema, not per field
        if dataclasses.is_dataclass(hint):
            keys |= {f"{name}.{k}" for k in int_keys(hint)}
        elif hint is int or hint == typing.Optional[int]:
            keys.add(name)
    return keys


def exact_integers(args: list[str], schema) -> list[str]:
    """``args`` with each value of an int key written as a float (``total_steps=1e5``, also in a
    sweep ``seed=1e0,2e0``) rewritten as the integer it is; other values are left for Hydra to judge."""
    keys = int_keys(schema)
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+") in keys and value:
            try:
                numbers = [float(v) for v in value.split(",")]
            except ValueError:
                numbers = []
            if numbers and all(x.is_integer() for x in numbers) and any(c in value for c in ".eE"):
                arg = f"{key}={','.join(str(int(x)) for x in numbers)}"
        out.append(arg)
    return out


def unwritable_dir(args: list[str]) -> str | None:
    """The one-line refusal for a ``hydra.run.dir`` / ``hydra.sweep.dir`` (or, without them, the
    working directory Hydra writes ``outputs/`` into) where no directory can be made, else None."""
    import os

    given = {k: v for k, _, v in (a.partition("=") for a in args) if k in ("hydra.run.dir", "hydra.sweep.dir")}
    multirun = "-m" in args or "--multirun" in args
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    target = Path(given[key]) if key in given else Path.cwd() / "outputs"
    if "${" in str(target):  # an interpolation: resolved by Hydra, checked there
        return None
    target = target.absolute()
    missing = []  # the dirs a trial mkdir makes, removed again (Hydra makes them for the run)
    probe = target
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
        if not os.access(target, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as err:
        where = f"{key}={given[key]}" if key in given else f"the working directory {Path.cwd()}"
        return f"{where}: cannot create the run directory there ({err.strerror or err}); choose a writable path"
    finally:
        for made in missing:
            try:
                made.rmdir()
            except OSError:
                break
    return None


def conflicting_modes(args: list[str]) -> str | None:
    """The one-line refusal for more than one of Hydra's run modes in ``args``, else None."""
    given = sorted({long for long, short in MODE_FLAGS.items() if long in args or short in args})
    if len(given) > 1:
        return f"{' and '.join(given)} cannot be combined; use one of --run, --multirun, --cfg, --info"
    return None


def bad_value(config_dir: str, config_name: str, args: list[str]) -> str | None:
    """``"key=value: reason"`` for the first override whose value does not fit its key's type, else None.

    Composes the config through the Compose API with the plain overrides of ``args`` (each value of a
    sweep in turn); anything else that goes wrong is left to Hydra, which reports it its own way.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf import open_dict
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    value_of_flag = {
        *("-sc", "--shell-completion", "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir"),
        *("-c", "--cfg", "-p", "--package", "-i", "--info"),  # --cfg job, --package _global_, --info defaults
    }
    plain = [
        a
        for previous, a in zip(["", *args], args)
        if "=" in a and not a.startswith("-") and previous not in value_of_flag
    ]
    multirun = "-m" in args or "--multirun" in args
    for previous, a in zip(["", *args], args):  # a bare word: Hydra's "missing EQUAL at '<EOF>'"
        if "=" not in a and not a.startswith("-") and previous not in value_of_flag:
            return f"{a!r} is not an override; write KEY=VALUE (optimizer.lr=1e-4) or GROUP=OPTION (env=minatar)"
    parser = OverridesParser.create()
    for a in plain:  # a syntax error, named with Hydra's reason in one line
        try:
            parser.parse_overrides([a])
        except Exception as err:
            reason = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
            return f"cannot read the override {a!r} ({reason}); the grammar: https://hydra.cc/docs/advanced/override_grammar/basic/"
    parsed = parser.parse_overrides(plain)
    base, variants = [], []
    for override in parsed:
        if override.is_sweep_override() and not multirun and not override.is_hydra_override():
            return (
                f"{override.input_line}: a list of values is a sweep; add -m (--multirun) to run one job "
                "per value, or write a list value in brackets (network.hidden_sizes=[64,64])"
            )
        if override.is_sweep_override():
            try:
                values = [f"{override.get_key_element()}={v}" for v in override.sweep_string_iterator()]
            except Exception:  # interval() and the like: for the sweeper to sample
                continue
            base.append(values[0])
            variants += [(len(base) - 1, v) for v in values[1:]]
        else:
            base.append(override.input_line)
    for position, value in [(None, None), *variants]:
        overrides = list(base) if position is None else [*base[:position], value, *base[position + 1 :]]
        try:
            with initialize_config_dir(config_dir, version_base="1.3"):  # (hydra.* overrides need hydra's config)
                composed = compose(config_name, overrides=overrides, return_hydra_config=True)
        except MissingConfigException as err:  # algo=foo: Hydra's message spans a dozen lines
            group, _, option = (err.missing_cfg_file or "").rpartition("/")
            if not err.options or not group:
                return None
            return f"{group}={option}: no such option; choose one of {', '.join(err.options)}"
        except ConfigCompositionException as err:
            cause = err.__cause__
            if (
                isinstance(cause, (ConfigAttributeError, ConfigKeyError))
                and cause.full_key
                and is_dataclass(cause.object_type)
            ):
                return unknown_key(cause.full_key, cause.object_type)
            if isinstance(cause, ValidationError):
                reason = str(cause).strip().splitlines()[0]
                return f"{cause.full_key}={cause.value}: {reason}" if cause.full_key else reason
            return first_line(err)  # e.g. ~foo: "Could not delete from config. 'foo' does not exist."
        except Exception as err:  # e.g. +network=1: "Config group override must be a string or a list. Got int"
            groups = sorted(p.name for p in Path(config_dir).iterdir() if p.is_dir())
            for o in parsed:
                if o.key_or_group in groups and not isinstance(o.value(), str):
                    options = sorted(p.stem for p in (Path(config_dir) / o.key_or_group).glob("*.yaml"))
                    return f"{o.input_line}: {o.key_or_group} is a config group; choose a preset by name: {', '.join(options)}"
            mine = " ".join(o for o in overrides if not o.lstrip("+~").startswith("hydra"))
            return f"{first_line(err).split(' : Override(')[0]} (in {mine})"
        with open_dict(composed):
            del composed["hydra"]
        if config_name == "train" and not any(o.lstrip("+").startswith("resume=") for o in overrides):
            from dqn_cli.config import ConfigError, to_train_config, validate

            try:  # every job of a sweep, before the first starts
                validate(to_train_config(composed, strict=True))
            except ConfigError as err:
                return str(err) if value is None else f"{value}: {err}"
    return None


def first_line(err: Exception) -> str:
    return next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)


def unknown_key(full_key: str, schema: type) -> str:
    """``"network.hiden_sizes: no such key; did you mean network.hidden_sizes? ..."`` for a key
    that ``schema`` (the dataclass holding it) does not have. A key that lives one group down
    is pointed to there: ``video=true`` -> ``did you mean eval.video?``."""
    import difflib

    parent, _, key = full_key.rpartition(".")
    names = [f.name for f in fields(schema)]
    close = difflib.get_close_matches(key, names, n=1)
    nested = [path for path in _nested_keys(schema) if path.rpartition(".")[2] == key]
    if close:
        hint = f"did you mean {'.'.join(filter(None, (parent, close[0])))}?"
    elif nested:
        hint = f"did you mean {' or '.join('.'.join(filter(None, (parent, p))) for p in nested)}?"
    else:
        hint = f"{schema.__name__} has {', '.join(names)}"
    return f"{full_key}: no such key; {hint} (dqn train --cfg job shows every key)"


def _nested_keys(schema: type) -> list[str]:
    """``["env.num_envs", ..., "eval.video", ...]``: the keys of the dataclass groups that
    ``schema``'s fields hold, one level down."""
    import typing

    hints = typing.get_type_hints(schema)
    return [
        f"{f.name}.{g.name}" for f in fields(schema) if is_dataclass(hints.get(f.name)) for g in fields(hints[f.name])
    ]


def run_config_dir(hc) -> str | None:
    """Where in the run dir its config.yaml goes: Hydra's output_subdir (``.hydra``, where Hydra
    itself writes a sweep job's files), or ``.hydra`` where dqn told Hydra not to write them
    (:data:`RECORD_CONFIG`); None where the user asked for no ``.hydra/``."""
    if hc.output_subdir is None and RECORD_CONFIG not in hc.overrides.hydra:
        return None
    return hc.output_subdir or HYDRA_DIR


def record_run_config(run_dir: Path, hc, config=None) -> None:
    """Hydra's files of a run whose input passed every check, where Hydra was told not to write
    them (hydra.yaml, overrides.yaml), and ``config`` where given (``dqn eval``'s; ``dqn train``'s
    trainer records the run's config itself, resolved and validated, and again on resume)."""
    from omegaconf import OmegaConf

    subdir = run_config_dir(hc)
    if subdir is None:
        return  # the user asked for no .hydra/
    out = run_dir / subdir
    out.mkdir(parents=True, exist_ok=True)
    if hc.output_subdir is None:
        hydra_cfg = OmegaConf.create({"hydra": OmegaConf.to_container(hc)})
        hydra_cfg.hydra.output_subdir = HYDRA_DIR
        hydra_cfg.hydra.overrides.hydra = [o for o in hc.overrides.hydra if o != RECORD_CONFIG]
        OmegaConf.save(hydra_cfg, out / "hydra.yaml")
        OmegaConf.save(hc.overrides.task, out / "overrides.yaml")  # as given: ${..} in them unresolved
    if config is not None:
        OmegaConf.save(config, out / "config.yaml")


class HeldRunLog:
    """Holds the records meant for the run's train.log (Hydra's file handler) until
    :meth:`release`, or drops them with :meth:`discard`."""

    def __init__(self):
        root = logging.getLogger()
        self.files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        self.memory = logging.handlers.MemoryHandler(capacity=10**6, flushLevel=logging.CRITICAL + 1)
        self.released = False
        for handler in self.files:
            root.removeHandler(handler)
        root.addHandler(self.memory)

    def release(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.memory)
        for handler in self.files:
            root.addHandler(handler)
            for record in self.memory.buffer:
                if record.levelno >= handler.level:
                    handler.handle(record)
        self.memory.buffer.clear()
        self.released = True

    def discard(self) -> None:
        logging.getLogger().removeHandler(self.memory)
        self.memory.buffer.clear()


def existing_root(run_dir: str) -> Path:
    """The deepest folder on the way to ``run_dir`` that exists now (the working dir when the
    path holds an interpolation, such as ``${now:...}``, that Hydra resolves later)."""
    if "${" in run_dir:
        return Path.cwd()
    folder = Path(run_dir).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder if folder != Path(run_dir).absolute() else folder.parent


def remove_if_empty(run_dir: Path, root: Path | None = None) -> None:
    """Remove the run dir Hydra made for input that was refused (only if nothing is in it), and
    its parents that are left empty inside ``root`` (the working directory: outputs/DATE/)."""
    run_dir, root = Path(run_dir).absolute(), Path(root or Path.cwd()).absolute()
    for folder in (run_dir, *run_dir.parents):
        if folder != run_dir and (folder == root or root not in folder.parents):
            return
        try:
            folder.rmdir()
        except OSError:  # not empty (or not ours to remove): stop here
            return
