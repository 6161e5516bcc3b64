"""The config's path from the command line into the training loop, as a newcomer would follow it:
every call of the package whose arguments hold the run's config (or one of its groups), in order,
from Hydra's call of `dqn train`'s task until the loop starts; then the files in that order, how many, and how often the
path returns to a higher layer (app > run/bench > core/replay/envs > runtime > config).

    .venv/bin/python scripts/config_path.py                       # a tiny CartPole run in a temp dir
    .venv/bin/python scripts/config_path.py env=minatar env.game=Breakout
    .venv/bin/python scripts/config_path.py --resume                # dqn train resume=RUN_DIR

Before Hydra runs the task, `hydra_compat.bad_value` composes each job's config on its own
to refuse bad input in one line (through the same `config.validate`); that check is not on the
path. A call never climbs (tests/test_layout.py: imports point one way); the returns count the times
the path comes back up, e.g. from building a part to the module that asked for it.
"""

import os
import sys
import tempfile

run_dir = tempfile.mkdtemp(prefix="config_path_")
resuming = "--resume" in sys.argv
sys.argv = [
    "dqn", "train", "total_steps=1200", "learning_starts=100", "eval.episodes=0", "progress=off",
    f"hydra.run.dir={run_dir}/run", *(a for a in sys.argv[1:] if a != "--resume"),
]  # fmt: skip
import dqn_cli.config as C  # noqa: E402
from dqn_cli.app.cli import main  # noqa: E402

if resuming:  # a run to resume, made untraced; then the path of `dqn train resume=RUN_DIR total_steps=2400`
    assert main(sys.argv[1:]) == 0, "the run to resume failed"
    sys.argv = ["dqn", "train", f"resume={run_dir}/run", "total_steps=2400"]

CFG_TYPES = tuple(  # the run's config and its groups: the dataclasses of dqn_cli.config (not OmegaConf's DictConfig)
    t for n in dir(C) if n.endswith("Config") and isinstance(t := getattr(C, n), type) and t.__module__ == C.__name__
)
ROOT = os.path.dirname(os.path.dirname(C.__file__))
seen, order, stop, started = [], [], [False], [False]


def is_run_config(a) -> bool:
    """The run's composed config as Hydra hands it over (not Hydra's own config, HydraConfig)."""
    return type(a).__name__ == "DictConfig" and "total_steps" in a


def tracer(frame, event, arg):
    if stop[0] or event != "call":
        return None
    code = frame.f_code
    f = code.co_filename
    if "dqn_cli" not in f:
        return None
    if code.co_name in ("dqn_loop", "pqn_loop"):
        stop[0] = True
        order.append((os.path.relpath(f, ROOT), code.co_name))
        return None
    args = [frame.f_locals.get(v) for v in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]]
    if code.co_name == "_train_task":
        started[0] = True
    if started[0] and any(isinstance(a, CFG_TYPES) or is_run_config(a) for a in args):
        order.append((os.path.relpath(f, ROOT), code.co_name))
    return None


sys.settrace(tracer)
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.settrace(None)
files = []
for f, fn in order:
    if not files or files[-1] != f:
        files.append(f)
print("calls:", len(order))
for f, fn in order:
    print(f, fn)
print("file sequence:", " -> ".join(files))
print("distinct files:", len(set(files)))
LAYER = {"config": 0, "files": 0, "runtime": 1, "core": 2, "replay": 2, "envs": 2, "run": 3, "bench": 3, "app": 4}


def layer(f):
    parts = f.replace(".py", "").split("/")
    return LAYER.get(parts[1], 5) if len(parts) > 1 else 5


ups = sum(1 for a, b in zip(files, files[1:]) if layer(b) > layer(a))
print("returns to a higher layer:", ups)
