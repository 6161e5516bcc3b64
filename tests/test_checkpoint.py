"""Checkpoints: atomic writes, keep-last-N, and loading that never runs code."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import run_dqn

from dqn_cli.run import checkpoint as ckpt


def state(step):
    return {"counters": {"env_steps": step}, "weights": torch.full((3,), float(step))}


def test_keep_last_n_and_last_pt_is_newest(tmp_path):
    for step in (100, 200, 300, 400):
        ckpt.save_checkpoint(tmp_path, step, state(step), keep=2)
    assert [s for s, _ in ckpt.step_checkpoints(tmp_path)] == [300, 400]
    last = ckpt.load_checkpoint(tmp_path / "last.pt")
    assert last["counters"]["env_steps"] == 400
    assert not list(tmp_path.glob(".*.tmp"))  # no temp files left behind


def test_a_kill_between_write_and_replace_leaves_last_pt_loadable(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, 100, state(100), keep=3)

    def killed(src, dst):  # the process dies after writing the temp file, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 200, state(200), keep=3)
    monkeypatch.undo()
    assert ckpt.load_checkpoint(tmp_path / "last.pt")["counters"]["env_steps"] == 100
    assert not (tmp_path / "step_000000200.pt").exists()


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, 100, state(100), keep=3)
    real_save = torch.save

    def disk_full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, 200, state(200), keep=3)
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.load_checkpoint(tmp_path / "last.pt")["counters"]["env_steps"] == 100
    assert not list(tmp_path.glob(".*.tmp"))


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/dqn_pwned_marker")


def test_a_checkpoint_that_runs_code_on_unpickling_is_refused(tmp_path):
    MARKER.unlink(missing_ok=True)
    evil = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "payload": Exploit()}, evil)
    with pytest.raises(ckpt.CheckpointError, match="refused"):
        ckpt.load_checkpoint(evil)
    assert not MARKER.exists()
    # the same through the CLI: one line, non-zero, nothing executed
    proc = run_dqn("eval", f"checkpoint={evil}", f"hydra.run.dir={tmp_path}/e")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "refused" in proc.stderr and not MARKER.exists()


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "garbage", "foreign", "directory"])
def test_bad_checkpoints_are_named_in_one_line(tmp_path, kind):
    good = tmp_path / "good.pt"
    ckpt.save_checkpoint(tmp_path, 1, state(1), keep=1)
    good = tmp_path / "last.pt"
    path = tmp_path / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "garbage":
        path.write_bytes(os.urandom(4096))
    elif kind == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    proc = run_dqn("eval", f"checkpoint={path}", f"hydra.run.dir={tmp_path}/e")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_checkpoint_for_a_different_network_is_named(trained_run, tmp_path):
    state = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    state["config"]["network"]["hidden_sizes"] = [32, 32]  # config no longer matches the weights
    bad = tmp_path / "mismatch.pt"
    torch.save(state, bad)
    proc = run_dqn("eval", f"checkpoint={bad}", f"hydra.run.dir={tmp_path}/e")
    assert proc.returncode == 2
    assert "do not match the mlp network" in proc.stderr and "Traceback" not in proc.stderr


def flip_bytes(path, start, count=2000):
    """Invert ``count`` bytes of ``path`` from ``start``: damage a disk or a copy could do."""
    data = bytearray(path.read_bytes())
    data[start : start + count] = bytes(b ^ 0xFF for b in data[start : start + count])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["weights", "pickle"])
def test_a_checkpoint_with_flipped_bytes_is_named_corrupt(tmp_path, where):
    # torch.load does not check the zip CRCs: damaged weights used to load silently
    big = {"counters": {"env_steps": 1}, "weights": torch.randn(20_000)}  # ~80 KB, mostly tensor data
    path = ckpt.save_checkpoint(tmp_path, 1, big, keep=1)
    if where == "weights":
        flip_bytes(path, path.stat().st_size // 2 - 1000)
    else:  # inside data.pkl: used to be taken for a code-carrying pickle ("refused")
        with zipfile.ZipFile(path) as zf:
            pickled = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
        flip_bytes(path, path.read_bytes().index(pickled) + 2, count=8)
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    assert "corrupt" in msg and "CRC" in msg and "checkpoints/" in msg and "refused" not in msg, msg


def test_random_bytes_are_named_not_a_checkpoint_not_a_refused_pickle(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(os.urandom(20_000))
    with pytest.raises(ckpt.CheckpointError) as err:
        ckpt.load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    assert "corrupt" in msg and "not a torch checkpoint" in msg and "refused" not in msg, msg


def test_a_truncated_checkpoint_is_named_truncated(tmp_path):
    good = ckpt.save_checkpoint(tmp_path, 1, state(1), keep=1)
    path = tmp_path / "cut.pt"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt") as err:
        ckpt.load_checkpoint(path)
    assert "refused" not in str(err.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, 4])
def test_a_code_running_pickle_in_torch_legacy_format_is_still_refused(tmp_path, protocol):
    # torch's pre-1.6 format is a bare pickle stream, not a zip: still refused, never run
    MARKER.unlink(missing_ok=True)
    evil = tmp_path / "evil_legacy.pt"
    with evil.open("wb") as f:
        torch.save(
            {"format": ckpt.FORMAT, "payload": Exploit()},
            f,
            _use_new_zipfile_serialization=False,
            pickle_protocol=protocol,
        )
    with pytest.raises(ckpt.CheckpointError, match="refused"):
        ckpt.load_checkpoint(evil)
    assert not MARKER.exists()
