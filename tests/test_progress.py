"""What the terminal shows while training: a live bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest
from helpers import ROOT, TINY, run_dqn

from dqn_cli.run.metrics import use_progress_bar

# TINY without its progress=log: the default, auto, decides.
AUTO = [arg for arg in TINY if not arg.startswith("progress=")] + ["progress=auto"]
# the ETA is "?" until one whole log window has run gradient steps
LOG_LINE = re.compile(r"step \d+/400 +\d+ steps/s +return\(20\) [\d.-]+ +eps [\d.]+ +eta (\d+:\d\d:\d\d|\?)")


def run_on_terminal(*args: str, timeout: float = 120) -> tuple[int, str]:
    """Run `python -m dqn_cli ARGS` with stdout and stderr on a pseudo-terminal (120 columns);
    return its exit code and everything it printed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "xterm"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dqn_cli", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"dqn did not finish in {timeout} s on a terminal")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode("utf-8", errors="replace")


@pytest.mark.slow
def test_a_terminal_gets_a_live_progress_bar(tmp_path):
    code, out = run_on_terminal("train", *AUTO, f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 0, out[-3000:]
    assert "\r" in out.replace("\r\n", "\n"), "no carriage returns: no live bar"
    bar = [ln for ln in re.split(r"[\r\n]+", out) if "%|" in ln]
    assert bar, out[-2000:]
    last = bar[-1]
    assert re.search(r"\d+/400\b", last), last  # env steps of the budget
    assert re.search(r"step/s|it/s", last), last  # throughput
    assert re.search(r"\[\d+:\d\d<\d+:\d\d", last), last  # elapsed<ETA
    assert re.search(r"return [\d.-]+", last) and re.search(r"eps \d\.\d{3}", last), last
    assert not LOG_LINE.search(out), "the plain progress lines belong to the log file, not under the bar"
    assert "final eval return" in out  # log lines still reach the terminal
    log_file = (tmp_path / "run" / "train.log").read_text()
    assert LOG_LINE.search(log_file), "the log file keeps the periodic lines"
    assert "\r" not in log_file and "%|" not in log_file


@pytest.mark.slow
def test_redirected_output_gets_plain_lines_without_carriage_returns(tmp_path):
    proc = run_dqn("train", *AUTO, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout + proc.stderr
    assert "\r" not in printed
    assert "%|" not in printed
    etas = LOG_LINE.findall(printed)
    assert len(etas) >= 3, printed[-2000:]  # log_every=100 over 400 steps
    assert etas[-1] != "?", printed[-2000:]  # learning from step 100: paced by step 300
    assert "\r" not in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.slow
def test_a_multirun_on_a_terminal_gets_plain_lines(tmp_path):
    code, out = run_on_terminal("train", "-m", *AUTO, "seed=1", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code == 0, out[-3000:]
    assert "%|" not in out and "\r" not in out.replace("\r\n", "\n")
    assert LOG_LINE.search(out), out[-2000:]


def test_auto_means_a_bar_only_on_a_terminal_and_never_in_a_multirun(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert use_progress_bar("auto", multirun=False)
    assert not use_progress_bar("auto", multirun=True)
    assert not use_progress_bar("log", multirun=False) and not use_progress_bar("off", multirun=False)
    assert use_progress_bar("bar", multirun=True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not use_progress_bar("auto", multirun=False)
