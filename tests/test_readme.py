"""Every `dqn` command of the README's quick start and everyday commands runs as written.

Each command is taken from README.md itself, given a tiny budget (appended
overrides win over the command's own) and pointed at a scratch directory;
placeholders for an earlier run's directory are replaced by a real one.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from helpers import ROOT, TINY, last_json_line, run_dqn

README = ROOT / "README.md"
RUN_PLACEHOLDERS = (
    "outputs/2026-11-20/12-00-00_cartpole",
    "outputs/DATE/TIME_cartpole",
    "multirun/2026-11-20/14-03-12_cartpole",
    "multirun/DATE/TIME_cartpole",
)  # a run is a plot's input too
ATARI_TINY = [
    "total_steps=64",
    "learning_starts=32",
    "batch_size=8",
    "replay.capacity=2000",
    "eval.episodes=1",
    "eval.every=0",
    "eval.final_episodes=1",  # (env=atari100k's final evaluation: 100 episodes)
    "checkpoint.every=0",
    "env.max_episode_steps=30",
    "env.num_envs=2",
]


def readme_commands(
    sections=("# dqn — Deep Q-Networks from the command line", "## Set up", "## Everyday commands"),
) -> list[str]:
    """`dqn ...` lines of the bash blocks in the given sections, comments stripped."""
    text = README.read_text()
    commands = []
    for title in sections:
        start = text.index(title + "\n")
        end = text.find("\n## ", start + len(title))
        for block in re.findall(r"```bash\n(.*?)```", text[start : end if end > 0 else None], re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if line.startswith("dqn "):
                    commands.append(line)
    return commands


COMMANDS = list(dict.fromkeys(readme_commands()))


def test_the_readme_has_the_commands_users_need():
    joined = "\n".join(COMMANDS)
    for needle in ("dqn train\n", "env=breakout", "-m seed=", "dqn eval checkpoint=", "resume=", "dqn bench"):
        assert needle in joined + "\n", needle
    text = README.read_text()
    assert "make train" in text and "make test" in text and "tensorboard --logdir" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, trained_run, tmp_path):
    args = shlex.split(command)[1:]
    run_copy = tmp_path / "earlier_run"
    shutil.copytree(trained_run, run_copy)
    args = [_replace_placeholders(a, run_copy) for a in args]
    sub = args[0]
    if sub == "train" and ("--help" in args or "--cfg" in args):
        proc = run_dqn(*args)
    elif sub == "train" and any(a in ("-m", "--multirun") for a in args):
        proc = run_dqn(
            *args,
            *TINY,
            "eval.every=0",
            "checkpoint.every=0",
            "total_steps=200",
            f"hydra.sweep.dir={tmp_path}/sweep",
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (tmp_path / "sweep" / "summary.csv").is_file()
        return
    elif sub == "train":
        atari = any(
            a.startswith("env=") and a.split("=")[1] in ("breakout", "pong", "atari", "atari100k") for a in args
        )
        budget = ATARI_TINY if atari else TINY
        if any(a.startswith("resume=") for a in args):
            args = [a for a in args if not a.startswith("total_steps=")] + ["total_steps=600"]
            proc = run_dqn(*args, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert json.loads((run_copy / "summary.json").read_text())["total_steps"] == 600
            return
        proc = run_dqn(*args, *budget, "device=cpu", f"hydra.run.dir={tmp_path}/run", timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
        return
    elif sub == "eval":
        proc = run_dqn(*args, f"hydra.run.dir={tmp_path}/eval", timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = last_json_line(proc.stdout)
        assert {"mean_return", "std_return", "episodes"} <= result.keys()
        if "video=true" in args:
            assert Path(result["video"]).is_file()
        return
    elif sub == "plot":  # written to scratch, never into the checkout
        proc = run_dqn(*args, "--out", str(tmp_path / "plot.png"), timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (tmp_path / "plot.png").is_file() and proc.stdout.strip().endswith("plot.png")
        return
    elif sub == "bench":
        proc = run_dqn(*args, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        figures = last_json_line(proc.stdout)
        assert "per_sample_update_us" in figures and "uniform_sample_us" in figures
        # replay memory: one 84x84 frame plus slot fields per transition, not stacked obs + next_obs
        assert 84 * 84 < figures["uniform_bytes_per_transition"] <= 7300 < figures["stacked_bytes_per_transition"]
        assert any(k.endswith("_env_steps_per_second") for k in figures)
        assert "verdict" in figures
        return
    else:
        proc = run_dqn(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _replace_placeholders(arg: str, run_dir: Path) -> str:
    for placeholder in RUN_PLACEHOLDERS:
        arg = arg.replace(placeholder, str(run_dir))
    if arg == "checkpoint=...":
        arg = f"checkpoint={run_dir}/checkpoints/last.pt"
    return arg


def test_the_readme_python_api_example_runs(trained_run):
    """The README's Python block, with its run dir placeholder pointed at a real run."""
    text = README.read_text()
    start = text.index("### Python API\n")
    (block,) = re.findall(r"```python\n(.*?)```", text[start : text.index("\n## ", start)], re.S)
    code = block.replace('"outputs/DATE/TIME_cartpole"', repr(str(trained_run)))
    assert code != block
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["done"] and namespace["agent"].config.env.id == "CartPole-v1"
