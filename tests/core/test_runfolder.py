"""mxplain.runfolder: the run folder's lock, its stage state for --resume, the record of what
mxplain wrote there, and --overwrite deleting only that."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mxplain import runfolder
from mxplain.errors import UserError
from mxplain.runfolder import LOCK, STATE, RunFolder


def _write(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _state(path):
    return json.loads((path / STATE).read_text())


def test_a_new_run_records_what_it_wrote_and_its_stages(tmp_path):
    out = tmp_path / "run"
    rf = RunFolder(out, resume=False, overwrite=False, config_hash="h1")
    assert (out / LOCK).read_text() == str(os.getpid())
    assert _state(out) == {"mxplain_run": 1, "config_hash": "h1", "done": [], "foreign": [],
                           "written": [], "stores": []}
    _write(out / "figures" / "a.png")
    _write(out / "metrics.json", "{}")
    _write(out / "figures" / "b.png.tmp")  # an unfinished atomic write is not a file of the run
    _write(out / "notes.txt")  # outside what a run writes
    rf.claim("tiles.zarr")
    rf.claim("tiles.zarr")
    rf.mark("data")
    state = _state(out)
    assert state["written"] == ["figures/a.png", "metrics.json"]
    assert state["done"] == ["data"] and state["stores"] == ["tiles.zarr"]
    assert rf.state() == state and not rf.is_done("data")  # only a resumed run skips stages
    rf.release()
    assert not (out / LOCK).exists()


def test_resume_needs_the_same_config_and_skips_the_stages_done(tmp_path):
    out = tmp_path / "run"
    first = RunFolder(out, False, False, "h1")
    first.mark("data")
    first.release()
    with pytest.raises(UserError, match="already holds a run; use --resume"):
        RunFolder(out, False, False, "h1")
    with pytest.raises(UserError, match="run of another config"):
        RunFolder(out, True, False, "h2")
    again = RunFolder(out, True, False, "h1")
    assert again.is_done("data") and not again.is_done("train")
    again.release()


def test_overwrite_deletes_only_what_the_run_wrote(tmp_path):
    out = tmp_path / "run"
    rf = RunFolder(out, False, False, "h1")
    _write(out / "figures" / "forward" / "a.png")
    _write(out / "metrics.json")
    rf.mark("report")
    rf.release()
    _write(out / "figures" / "mine.png", "user")
    _write(out / "notes.txt", "user")
    rf = RunFolder(out, False, True, "h2")
    assert not (out / "metrics.json").exists() and not (out / "figures" / "forward").exists()
    assert (out / "figures" / "mine.png").read_text() == "user" == (out / "notes.txt").read_text()
    state = _state(out)
    assert state["foreign"] == ["figures/mine.png", "notes.txt"] and state["written"] == []
    rf.record()  # a foreign file below figures/ never becomes mxplain's
    assert _state(out)["written"] == []
    rf.release()


def test_folders_that_are_not_runs_are_refused_before_anything_is_written(tmp_path):
    (tmp_path / "user").mkdir()
    _write(tmp_path / "user" / "x.txt")
    with pytest.raises(UserError, match=r"not an mxplain run folder \(it holds 'x.txt'\)"):
        RunFolder(tmp_path / "user", False, True, "h")
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == ["x.txt"]
    _write(tmp_path / "bad" / STATE, "[1, 2]")
    with pytest.raises(UserError, match="is not an mxplain run state"):
        runfolder.read_state(tmp_path / "bad")
    _write(tmp_path / "file")
    with pytest.raises(UserError, match="exists and is not a folder"):
        RunFolder(tmp_path / "file", False, False, "h")
    with pytest.raises(UserError, match="--out is empty"):
        RunFolder("", False, False, "h")
    assert runfolder.read_state(tmp_path / "nothing") is None


def test_the_lock_of_a_live_process_is_refused_and_a_dead_ones_taken_over(tmp_path):
    (tmp_path / LOCK).write_text(str(os.getppid()))
    with pytest.raises(UserError, match=f"in use by another mxplain run \\(pid {os.getppid()}\\)"):
        runfolder.take_lock(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(str(dead.pid))
    runfolder.take_lock(tmp_path)
    assert (tmp_path / LOCK).read_text() == str(os.getpid())
    runfolder.take_lock(tmp_path)  # this process's own lock


def test_later_commands_write_only_new_files_or_the_runs_own(tmp_path):
    out = tmp_path / "run"
    rf = RunFolder(out, False, False, "h1")
    _write(out / "metrics.json")
    rf.mark("report")
    rf.release()
    _write(out / "review" / "mine.json", "user")
    assert runfolder.may_write(out, "metrics.json") and runfolder.may_write(out, "review/new.html")
    assert not runfolder.may_write(out, "review/mine.json")
    runfolder.record_written(out, ["review/new.html", "metrics.json"])
    assert runfolder.written(out) == {"metrics.json", "review/new.html"}
    with pytest.raises(UserError, match="not an mxplain run folder"):
        runfolder.record_written(tmp_path, ["a"])


def test_write_atomic_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    runfolder.write_atomic(target, "old")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["state.json"]

    def fail(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        runfolder.write_atomic(target, "new")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["state.json"]
