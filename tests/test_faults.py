"""Faults and bad input through the real entrypoint:
SIGTERM / Ctrl-C checkpoint and exit, a second Ctrl-C quits at once, an env subprocess that
dies, NaN loss, a full disk, and bad input refused in one line with nothing left behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from helpers import EXACT, ROOT, TINY, assert_no_repeated_or_forked_points, run_dqn, snapshot, without

# long runs that are stopped from outside; async envs so there are worker processes to check
LONG = [a for a in TINY if not a.startswith("total_steps=")] + [
    "total_steps=1000000",
    "torch_threads=1",
    "env.vectorization=async",
    "env.num_envs=2",
]


# the log line of the step-200 checkpoint (a bare "checkpoint" would match the results dir in the
# first line: pytest names tmp_path after the test, and these tests' names say "checkpoints")
FIRST_CHECKPOINT = "checkpoints/step_000000200.pt"


# ------------------------------------------------------------------ helpers
def marked_processes(marker: str) -> list[int]:
    """Live processes (not zombies) whose environment carries ``DQN_TEST_MARKER=marker``:
    the dqn process and everything it started (env workers inherit the environment)."""
    found = []
    needle = f"DQN_TEST_MARKER={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def assert_nothing_left(marker: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left behind: {left}"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class Dqn:
    """`python -m dqn_cli ARGS` in its own session (a terminal's process group), marked."""

    def __init__(self, *args: str, prelude: str | None = None, env: dict | None = None):
        self.marker = uuid.uuid4().hex
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "DQN_TEST_MARKER": self.marker, **(env or {})}
        env.pop("HYDRA_FULL_ERROR", None)
        if prelude is None:
            cmd = [sys.executable, "-m", "dqn_cli", *args]
        else:  # a fault injected into this process only, then the console script's main()
            code = prelude + "\nfrom dqn_cli.app.cli import main\nraise SystemExit(main(sys.argv[1:]))\n"
            cmd = [sys.executable, "-c", "import sys\n" + code, *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )

    def wait_for(self, path: Path, needle: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"dqn exited {self.proc.returncode} early:\n{err[-3000:]}")
            if path.exists() and needle in (text := path.read_text()):
                return text
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"{needle!r} never appeared in {path}")

    def children(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def workers(self) -> list[int]:
        return [p for p in self.children() if b"spawn_main" in _cmdline(p)]

    def finish(self, timeout: float) -> tuple[int, str, str, float]:
        start = time.monotonic()
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"dqn did not exit within {timeout} s")
        return self.proc.returncode, out, err, time.monotonic() - start

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.communicate()
        for pid in marked_processes(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def stderr_lines(err: str) -> list[str]:
    return [ln for ln in err.strip().splitlines() if ln.strip()]


def logged_steps(log_text: str) -> list[int]:
    return [int(m) for m in re.findall(r"step (\d+)/\d+", log_text)]


# ------------------------------------------------------------------ signals
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_a_signal_checkpoints_exits_and_resume_continues(tmp_path, how):
    """SIGTERM to the trainer (a scheduler's pre-emption) or SIGINT to the whole process group
    (Ctrl-C in a terminal): the step finishes, a checkpoint is written, envs and TensorBoard are
    closed, the exit code is 128 + the signal, no worker is left; resume= continues the curves."""
    run = tmp_path / "run"
    dqn = Dqn("train", *LONG, f"hydra.run.dir={run}")
    dqn.wait_for(run / "train.log", FIRST_CHECKPOINT)
    assert len(dqn.workers()) >= 2
    sig = getattr(signal, how)
    if how == "SIGINT":
        os.killpg(dqn.proc.pid, sig)  # what the terminal does: the workers get it too
    else:
        dqn.proc.send_signal(sig)
    code, out, err, took = dqn.finish(timeout=15)
    assert code == 128 + sig, err[-3000:]
    assert took < 10
    assert "Traceback" not in err and stderr_lines(err) == [], err
    assert f"{how} received" in out and "stopped at env step" in out
    assert_nothing_left(dqn.marker)

    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    stopped = last["counters"]["env_steps"]
    log_text = (run / "train.log").read_text()
    assert f"stopped at env step {stopped};" in log_text
    last_logged = max(logged_steps(log_text))  # a status line every log_every=100 env steps
    assert last_logged <= stopped < last_logged + 100
    assert (run / "checkpoints" / f"step_{stopped:09d}.pt").exists()
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert not (run / "summary.json").exists()  # written when the run completes

    target = stopped + 200
    again = run_dqn("train", f"resume={run}", f"total_steps={target}", env={"DQN_TEST_MARKER": dqn.marker})
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"at env step {stopped}" in again.stdout
    steps = assert_no_repeated_or_forked_points(run / "tb")
    assert steps["charts/epsilon"][-1] == target
    assert any(s < stopped for s in steps["charts/epsilon"]) and any(s > stopped for s in steps["charts/epsilon"])
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["counters"]["env_steps"] == target
    assert_nothing_left(dqn.marker)


def test_kill_9_leaves_a_loadable_checkpoint_no_orphans_and_resume_drops_the_orphaned_points(tmp_path):
    """kill -9 of the trainer: last.pt is complete, the workers exit on their own (their pipe
    closes), and resume= continues from last.pt; TensorBoard drops what the killed life logged
    after that checkpoint, so no step appears twice."""
    run = tmp_path / "run"
    dqn = Dqn("train", *without(LONG, "checkpoint.every"), "checkpoint.every=300", f"hydra.run.dir={run}")
    dqn.wait_for(run / "train.log", "step 400/")  # past the step-300 checkpoint, more points logged since
    time.sleep(0.5)
    dqn.proc.kill()
    dqn.finish(timeout=10)
    assert_nothing_left(dqn.marker, within=10)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    at = last["counters"]["env_steps"]
    assert at % 300 == 0 and at >= 300
    # (what the killed life logged after `at` reached the disk as far as its writer had flushed;
    # typically a few dozen points, which the resumed life's purge_step hides)
    again = run_dqn("train", f"resume={run}", f"total_steps={at + 200}", env={"DQN_TEST_MARKER": dqn.marker})
    assert again.returncode == 0, again.stderr[-3000:]
    steps = assert_no_repeated_or_forked_points(run / "tb")
    assert steps["charts/epsilon"][-1] == at + 200
    assert_nothing_left(dqn.marker)


SIGTERM_AT_UPDATE_150 = """
import os, signal
from dqn_cli.core.agent import DQNAgent
_update, _count = DQNAgent.update, [0]
def _counted(self, batch):
    _count[0] += 1
    if _count[0] == 150:  # env step 250: mid-run, between two checkpoints, in the middle of a step
        os.kill(os.getpid(), signal.SIGTERM)
    return _update(self, batch)
DQNAgent.update = _counted
"""


def test_sigterm_mid_run_then_resume_is_exact(tmp_path):
    """The checkpoint a SIGTERM writes (at whatever step) holds the envs' state too: resuming it
    gives bitwise the parameters of the run that was never interrupted."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run_dqn("train", *EXACT, f"hydra.run.dir={straight}").returncode == 0
    dqn = Dqn("train", *EXACT, f"hydra.run.dir={stopped}", prelude=SIGTERM_AT_UPDATE_150)
    code, out, err, _ = dqn.finish(timeout=120)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    at = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)["counters"]["env_steps"]
    assert at == 252  # the step that was under way finished (updates 149..152 belong to step 252)
    again = run_dqn("train", f"resume={stopped}")
    assert again.returncode == 0, again.stderr[-3000:]
    x = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    y = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)
    for k, v in x["agent"]["q_network"].items():
        assert torch.equal(v, y["agent"]["q_network"][k]), k
    assert x["counters"]["updates"] == y["counters"]["updates"] == 300
    assert_no_repeated_or_forked_points(stopped / "tb")


SLOW_SECOND_SAVE = """
import os, time, torch
_real, _calls = torch.save, [0]
def _save(obj, f, *a, **k):
    _calls[0] += 1
    _real(obj, f, *a, **k)
    if _calls[0] >= 3:  # the second checkpoint (step file + last.pt per checkpoint) hangs
        open(os.environ["SAVE_MARK"], "w").write("saving\\n")
        time.sleep(120)
torch.save = _save
"""


def test_a_second_ctrl_c_quits_at_once(tmp_path):
    run, mark = tmp_path / "run", tmp_path / "saving"
    dqn = Dqn(
        "train",
        *without(LONG, "checkpoint.every"),
        "checkpoint.every=100",
        f"hydra.run.dir={run}",
        prelude=SLOW_SECOND_SAVE,
        env={"SAVE_MARK": str(mark)},
    )
    dqn.wait_for(mark, "saving")  # stuck writing the step-200 checkpoint
    os.killpg(dqn.proc.pid, signal.SIGINT)
    dqn.wait_for(run / "train.log", "SIGINT received")
    time.sleep(0.3)
    os.killpg(dqn.proc.pid, signal.SIGINT)
    code, out, err, took = dqn.finish(timeout=15)
    assert code == 130 and took < 5, err[-3000:]
    assert "Traceback" not in err
    assert stderr_lines(err) == [stderr_lines(err)[-1]] and "interrupted by SIGINT" in err
    assert_nothing_left(dqn.marker)
    # the interrupted write left no temp file, and last.pt is still the complete step-100 checkpoint
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["counters"]["env_steps"] == 100


def test_stop_request_handler_in_process():
    from dqn_cli.run.signals import Abort, StopRequest, StopRequested

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop
        with pytest.raises(StopRequested):
            with stop.abandoning():  # e.g. an evaluation: dropped at the first signal
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
        assert stop and stop.signal == signal.SIGTERM
        with pytest.raises(Abort) as second:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert second.value.signum == signal.SIGINT
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers restored


# ------------------------------------------------------------------ faults
def test_an_env_worker_that_dies_is_named_not_a_hang(tmp_path):
    """With its restarts spent (env.worker_restarts=0: none), a dead worker ends the run."""
    run = tmp_path / "run"
    dqn = Dqn("train", *LONG, "eval.every=0", "env.worker_restarts=0", f"hydra.run.dir={run}")
    dqn.wait_for(run / "train.log", FIRST_CHECKPOINT)
    workers = dqn.workers()
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    code, out, err, took = dqn.finish(timeout=20)
    assert code == 1 and took < 10, err[-3000:]
    lines = stderr_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"env worker 1 of 2 (CartPole-v1, pid {workers[1]}) was killed by SIGKILL" in lines[0]
    assert f"resume={run}" in lines[0]
    assert_nothing_left(dqn.marker)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["counters"]["env_steps"] >= 200


def test_env_workers_that_die_are_restarted_in_fresh_episodes_then_the_run_stops(tmp_path):
    """kill -9 of an async env worker: the workers restart (new processes, fresh episodes), the run
    goes on, the restart is logged and counted; one death more than env.worker_restarts ends it."""
    run = tmp_path / "run"
    dqn = Dqn("train", *LONG, "eval.every=0", "env.worker_restarts=2", f"hydra.run.dir={run}")
    dqn.wait_for(run / "train.log", FIRST_CHECKPOINT)
    for restart in (1, 2):
        workers = dqn.workers()
        assert len(workers) == 2
        os.kill(workers[restart - 1], signal.SIGKILL)
        text = dqn.wait_for(run / "train.log", f"restart {restart} of at most 2")
        assert f"env worker {restart - 1} of 2 (CartPole-v1, pid {workers[restart - 1]}) was killed by SIGKILL" in text
        deadline = time.monotonic() + 20
        while (len(new := dqn.workers()) != 2 or set(new) & set(workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(new) == 2 and not set(new) & set(workers), (workers, new)
        step = logged_steps(text)[-1]
        dqn.wait_for(run / "train.log", f"step {step + 200}/")  # ...and it trains on
    os.kill(dqn.workers()[0], signal.SIGKILL)  # the third death: restarts spent
    code, out, err, took = dqn.finish(timeout=20)
    assert code == 1, err[-3000:]
    lines = stderr_lines(err)
    assert len(lines) == 1 and "was killed by SIGKILL" in lines[0] and f"resume={run}" in lines[0], err
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["counters"]["env_restarts"] == 2
    assert_nothing_left(dqn.marker)


def test_a_killed_resource_tracker_is_one_warning_and_the_run_finishes(tmp_path):
    """kill -9 of multiprocessing's resource tracker (it ignores SIGTERM): the run goes on and
    ends 0; its log holds one warning line, and stderr not the relaunched tracker's KeyError tracebacks for
    the semaphores the dead one knew; the new tracker knows them, so they are still cleaned."""
    run = tmp_path / "run"
    args = [a for a in LONG if not a.startswith("total_steps=")]
    dqn = Dqn("train", *args, "total_steps=2000", "eval.every=0", f"hydra.run.dir={run}")
    dqn.wait_for(run / "train.log", FIRST_CHECKPOINT)

    def trackers():
        return [p for p in dqn.children() if b"resource_tracker" in _cmdline(p)]

    (tracker,) = trackers()
    os.kill(tracker, signal.SIGKILL)
    code, out, err, took = dqn.finish(timeout=120)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err and "KeyError" not in err, err
    warned = [ln for ln in (run / "train.log").read_text().splitlines() if "resource tracker" in ln]
    assert len(warned) == 1 and f"pid {tracker}" in warned[0], err
    assert_nothing_left(dqn.marker)


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    # lr=1e30: the first Adam step throws the weights to ~1e30 and the loss overflows
    proc = run_dqn(
        "train",
        *without(TINY, "checkpoint.every"),
        "torch_threads=1",
        "checkpoint.every=100",
        "optimizer.lr=1e30",
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 1
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "became" in lines[0] and "last good checkpoint is kept" in lines[0] and "optimizer.lr" in lines[0]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["counters"]["env_steps"] == 100  # before the first update, never a diverged one
    assert all(torch.isfinite(v).all() for v in last["agent"]["q_network"].values())
    assert [p.name for p in (run / "checkpoints").glob("step_*.pt")] == ["step_000000100.pt"]
    assert not (run / "summary.json").exists()


DISK_FULL_ON_SECOND_SAVE = """
import errno
import dqn_cli.run.checkpoint as _checkpoint
_real, _calls = _checkpoint.atomic_write, [0]
def _atomic_write(path, write):
    if path.name.startswith("step_") or path.name == "last.pt":
        _calls[0] += 1
        if _calls[0] >= 3:  # the second checkpoint's first file: a few bytes, then the disk is full
            def write(f):
                f.write(b"partial")
                raise OSError(errno.ENOSPC, "No space left on device")
    return _real(path, write)
_checkpoint.atomic_write = _atomic_write
"""


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    dqn = Dqn(
        "train",
        *without(TINY, "checkpoint.every"),
        "torch_threads=1",
        "checkpoint.every=100",
        f"hydra.run.dir={run}",
        prelude=DISK_FULL_ON_SECOND_SAVE,
    )
    code, out, err, took = dqn.finish(timeout=120)
    assert code == 1, err[-3000:]
    lines = stderr_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "No space left on device" in lines[0] and "ENOSPC" in lines[0]
    assert "previous checkpoint" in lines[0] and f"resume={run}" in lines[0]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["counters"]["env_steps"] == 100
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert_nothing_left(dqn.marker)


# ------------------------------------------------------------------ bad input
def one_line_refusal(proc: subprocess.CompletedProcess, needle: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    return run


@pytest.mark.parametrize(
    "args,needle",
    [
        (["env.id=Acrobot-v1"], "env.id was 'CartPole-v1'"),
        (["network.hidden_sizes=[8]"], "network.hidden_sizes was [16]"),
        (["env=classic", "env.id=Acrobot-v1"], "resume: env"),
        (["seed=7"], "seed was 1"),
        (["env.num_envs=2"], "env.num_envs was 4"),
        (["total_steps=1000", "--multirun"], "cannot be combined with --multirun"),
        (["total_steps=100"], "total_steps=100"),
    ],
)
def test_resume_with_conflicting_overrides_is_refused_and_the_run_untouched(run_copy, args, needle):
    before = snapshot(run_copy)
    marker = uuid.uuid4().hex
    start = time.monotonic()
    proc = run_dqn("train", f"resume={run_copy}", *args, env={"DQN_TEST_MARKER": marker})
    one_line_refusal(proc, needle)
    assert time.monotonic() - start < 30
    assert snapshot(run_copy) == before  # .hydra/config.yaml, checkpoints, tb: all as they were
    assert_nothing_left(marker)


@pytest.fixture
def read_only_run(run_copy, tmp_path):
    """run_copy on a read-only bind mount (needs root and a kernel that allows it; skipped otherwise)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    shutil.move(run_copy, mount / "run")
    ok = subprocess.run(["mount", "--bind", str(mount), str(mount)], capture_output=True).returncode == 0
    ok = ok and subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], capture_output=True).returncode == 0
    if not ok:
        subprocess.run(["umount", str(mount)], capture_output=True)
        pytest.skip("cannot make a read-only bind mount here (needs root)")
    try:
        yield mount / "run"
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_resume_of_a_run_on_a_read_only_mount_is_refused_and_eval_still_reads_it(read_only_run, tmp_path):
    before = snapshot(read_only_run)
    one_line_refusal(run_dqn("train", f"resume={read_only_run}", "total_steps=800"), "is not writable")
    proc = run_dqn("eval", f"checkpoint={read_only_run}", "episodes=1", f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr
    assert snapshot(read_only_run) == before


def test_resume_of_what_is_not_a_run_is_refused(tmp_path, run_copy):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a run\n")
    cases = [
        (tmp_path / "missing", "no such directory"),
        (plain, "is not a dqn run"),
    ]
    no_ckpt = tmp_path / "no_ckpt"
    shutil.copytree(run_copy, no_ckpt)
    shutil.rmtree(no_ckpt / "checkpoints")
    cases.append((no_ckpt, "has no checkpoints/last.pt"))
    for path, needle in cases:
        before = snapshot(path) if path.exists() else None
        one_line_refusal(run_dqn("train", f"resume={path}", "total_steps=800"), needle)
        assert (snapshot(path) if path.exists() else None) == before


@pytest.mark.parametrize("damage", ["truncated", "foreign", "other_network"])
def test_resume_from_a_bad_checkpoint_is_refused(run_copy, damage):
    last = run_copy / "checkpoints" / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
        needle = "truncated or corrupt"
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, last)
        needle = "is not a dqn checkpoint"
    else:
        state = torch.load(last, weights_only=True)
        state["config"]["network"]["hidden_sizes"] = [32]
        torch.save(state, last)
        needle = "network.hidden_sizes=[32]"
    before = snapshot(run_copy)
    one_line_refusal(run_dqn("train", f"resume={run_copy}", "total_steps=800"), needle)
    assert snapshot(run_copy) == before


def test_a_replay_that_cannot_fit_in_memory_is_refused_up_front(tmp_path):
    pytest.importorskip("ale_py")
    # the peak memory of the dqn process, measured by a parent that only waits for it
    measure = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-m', 'dqn_cli', *sys.argv[1:]], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "raise SystemExit(p.returncode)\n"
    )
    run = tmp_path / "run"
    start = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            measure,
            "train",
            "env=breakout",
            "replay.capacity=100000000",
            "env.vectorization=async",
            f"hydra.run.dir={run}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - start
    # ale-py's C++ logger prints a banner on loading a ROM (atari.py can silence it with
    # ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)); it is not dqn's output
    banner = ("A.L.E: Arcade Learning Environment", "[Powered by Stella]")
    proc.stderr = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith(banner))
    line = one_line_refusal(proc, "replay.capacity=100,000,000 needs about")
    assert "GiB" in line and "use replay.capacity <=" in line
    assert took < 30
    peak_mib = int(proc.stdout.split()[-1]) / 1024
    assert peak_mib < 1024, f"peak memory {peak_mib:.0f} MiB: something was allocated"
    assert not (run / "checkpoints").exists() and not (run / "tb").exists()


def test_debug_shows_the_traceback_the_normal_path_hides(tmp_path):
    normal = run_dqn("train", "optimizer.lr=-1", f"hydra.run.dir={tmp_path}/a")
    one_line_refusal(normal, "optimizer.lr must be > 0")
    debug = run_dqn("--debug", "train", "optimizer.lr=-1", f"hydra.run.dir={tmp_path}/b")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr and "optimizer.lr must be > 0" in debug.stderr


def test_bad_input_with_async_envs_starts_no_process(tmp_path):
    marker = uuid.uuid4().hex
    for i, override in enumerate(("optimizer.lr=-1", "env.id=Pendulum-v1", "replay.n_step=0")):
        proc = run_dqn(
            "train",
            "env.vectorization=async",
            "env.num_envs=2",
            override,
            f"hydra.run.dir={tmp_path}/{i}",
            env={"DQN_TEST_MARKER": marker},
        )
        assert proc.returncode == 2 and len(stderr_lines(proc.stderr)) == 1, proc.stderr
        assert_nothing_left(marker)
