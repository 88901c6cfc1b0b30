"""mxplain.outputs: mxplain never deletes or overwrites a file it did not write (issue 16, items
1-6 and 10): every case of the fault battery, and a property test over random trees of user files
around ``--out``."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxplain import outputs
from mxplain.cli import main
from mxplain.errors import UserError

DATA = """
[data]
name = "synthetic"
n_lots = 2
tiles_per_lot = 2
tile_size = 32
seed = 1
"""
RUN = DATA + "[run]\nreport = false\n"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file below ``root`` with its content."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def user_tree(root: Path, files: dict[str, str]) -> dict[str, bytes]:
    """Write the user's files; a path mxplain already wrote is left alone (putting a file in
    place of one of mxplain's is not adding a file of one's own)."""
    placed = {}
    for rel, text in files.items():
        p = root / rel
        if p.exists() or any(q.is_file() for q in p.parents):
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        placed[rel] = text.encode()
    return placed


def unchanged(root: Path, before: dict[str, bytes]) -> list[str]:
    return [rel for rel, data in before.items()
            if not (root / rel).is_file() or (root / rel).read_bytes() != data]


def cli(capsys, *args) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return code, err


def refused(code, err, *words):
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for w in words:
        assert w in err[0], err
    assert "resumable" not in err[0]


@pytest.fixture
def labels(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for lot in ("a", "b"):
        (tmp_path / "tiles" / lot).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(
                tmp_path / "tiles" / lot / f"t{k}.png")
    csv = tmp_path / "lots.csv"
    csv.write_text("lot,size,property\na,0.2,1.0\nb,0.8,2.0\n")
    return csv


# ---- 1-3: data synth and data ingest ------------------------------------------------------------
def test_synth_out_dot_and_empty_keep_the_current_folder(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA)
    before = user_tree(tmp_path, {"thesis/ch1.tex": "\\chapter{1}", "notes.txt": "n"})
    monkeypatch.chdir(tmp_path)
    refused(*cli(capsys, "data", "synth", cfg, "--out", "."), "'.'", "not an mxplain store",
            "notes.txt")
    refused(*cli(capsys, "data", "synth", cfg, "--out", ""), "--out is empty")
    assert not unchanged(tmp_path, before)


@pytest.mark.parametrize("command", ["synth", "ingest"])
def test_store_out_on_a_user_folder_is_refused(tmp_path, capsys, labels, command):
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA)
    out = tmp_path / "mine"
    before = user_tree(out, {"keep.txt": "k", "sub/data.csv": "1,2"})
    args = (["data", "synth", cfg] if command == "synth" else
            ["data", "ingest", tmp_path / "tiles", "--labels", labels])
    refused(*cli(capsys, *args, "--out", out), str(out), "keep.txt")
    assert not unchanged(out, before)


def test_ingest_output_equal_to_or_inside_its_input_is_refused(tmp_path, capsys, labels):
    tiles = tmp_path / "tiles"
    before = snapshot(tiles)
    refused(*cli(capsys, "data", "ingest", tiles, "--labels", labels, "--out", tiles),
            "is the input tile folder")
    refused(*cli(capsys, "data", "ingest", tiles, "--labels", labels, "--out", tiles / "s.zarr"),
            "lies inside the input tile folder")
    assert snapshot(tiles) == before


def test_a_store_is_replaced_only_when_it_is_mxplains_alone(tmp_path, capsys, labels):
    out = tmp_path / "s.zarr"
    assert cli(capsys, "data", "ingest", tmp_path / "tiles", "--labels", labels, "--out", out)[0] == 0
    assert cli(capsys, "data", "ingest", tmp_path / "tiles", "--labels", labels, "--out", out)[0] == 0
    (out / "my-notes.txt").write_text("mine")
    refused(*cli(capsys, "data", "ingest", tmp_path / "tiles", "--labels", labels, "--out", out),
            "my-notes.txt")
    assert (out / "my-notes.txt").read_text() == "mine" and (out / "zarr.json").is_file()


# ---- 4-6: run ------------------------------------------------------------------------------------
def test_overwrite_of_a_folder_that_is_not_a_run_deletes_nothing(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(RUN)
    out = tmp_path / "out"
    before = user_tree(out, {"figures/keep.txt": "f", "models/keep.txt": "m",
                             "report/keep.txt": "r", "config.toml": "# mine\n",
                             "metrics.json": "{}"})
    refused(*cli(capsys, "run", cfg, "--out", out, "--overwrite"), "not an mxplain run folder")
    refused(*cli(capsys, "run", cfg, "--out", out, "--resume"), "not an mxplain run folder")
    assert not unchanged(out, before)


def test_the_input_config_is_never_overwritten(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text("# my hand-written, commented config\n" + RUN)
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    refused(*cli(capsys, "run", "config.toml", "--out", ".", "--overwrite"))
    assert snapshot(tmp_path) == before


def test_resume_into_a_user_zarr_group_deletes_nothing(tmp_path, capsys):
    import zarr

    cfg = tmp_path / "c.toml"
    cfg.write_text(RUN)
    out = tmp_path / "out"
    g = zarr.open_group(str(out / "tiles.zarr"), mode="w")
    g.create_array("measurements", shape=(3,), dtype="f8")[:] = [1.0, 2.0, 3.0]
    before = snapshot(out)
    refused(*cli(capsys, "run", cfg, "--out", out, "--resume"), "not an mxplain run folder")
    assert snapshot(out) == before


def test_overwrite_with_a_bad_config_fails_before_deleting(tmp_path, capsys):
    cfg, bad = tmp_path / "c.toml", tmp_path / "bad.toml"
    cfg.write_text(RUN)
    bad.write_text(RUN.replace("seed = 1", 'seed = "many"'))
    out = tmp_path / "run"
    assert cli(capsys, "run", cfg, "--out", out, "--quiet")[0] == 0
    before = snapshot(out)
    refused(*cli(capsys, "run", bad, "--out", out, "--overwrite"), "seed")
    assert snapshot(out) == before


def test_overwrite_deletes_only_what_the_run_wrote(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(RUN)
    out = tmp_path / "run"
    assert cli(capsys, "run", cfg, "--out", out, "--quiet")[0] == 0
    state = json.loads((out / "state.json").read_text())
    assert state["mxplain_run"] == 1 and "config.toml" in state["written"]
    assert state["stores"] == ["tiles.zarr"]
    mine = user_tree(out, {"notes.txt": "n", "figures/keep.txt": "f", "analysis/plot.py": "p",
                           "tiles.zarr.bak": "b"})
    assert cli(capsys, "run", cfg, "--out", out, "--overwrite", "--quiet")[0] == 0
    assert not unchanged(out, mine)
    assert (out / "tiles.zarr" / "zarr.json").is_file() and (out / "config.toml").is_file()
    (out / "tiles.zarr" / "keep.txt").write_text("inside a store")
    refused(*cli(capsys, "run", cfg, "--out", out, "--overwrite"), "keep.txt")
    assert (out / "config.toml").is_file()  # refused before anything was deleted


def test_run_output_inside_an_input_store_is_refused(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA)
    assert cli(capsys, "data", "synth", cfg, "--out", store, "--quiet")[0] == 0
    run_cfg = tmp_path / "r.toml"
    run_cfg.write_text(f'[data]\nname = "store"\npath = "{store}"\n[run]\nreport = false\n')
    before = snapshot(store)
    refused(*cli(capsys, "run", run_cfg, "--out", store / "run"), "lies inside the input")
    assert snapshot(store) == before


# ---- 10: a full disk while a checkpoint is saved -----------------------------------------------------
def test_a_failed_checkpoint_write_names_the_path_and_leaves_no_tmp(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    import torch

    from mxplain import checkpoint

    def full(*_a, **_k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                           "failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: namedtuple("U", "total used free")(1, 1, 0))
    target = tmp_path / "m.pt"
    target.write_bytes(b"old")
    with pytest.raises(OSError) as info:
        checkpoint.save_atomic({"a": 1}, target)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == b"old" and not list(tmp_path.glob("*.tmp"))


# ---- property: random trees of user files at and around every output path --------------------------
NAMES = st.sampled_from(["notes.txt", "keep.txt", "config.toml", "metrics.json", "state.json",
                         "zarr.json", "a.png", ".hidden"])
FOLDERS = st.sampled_from(["", "figures", "models", "report", "tiles.zarr", "results.zarr", "sub",
                           "tiles.zarr/tiles", ".."])
TREES = st.dictionaries(st.tuples(FOLDERS, NAMES), st.text(max_size=8), max_size=5)
ACTIONS = st.sampled_from(["run", "run --overwrite", "run --resume", "synth", "synth --resume"])


# deterministic by default; MXPLAIN_PROPERTY_EXAMPLES=N draws N fresh random examples
@settings(max_examples=int(os.environ.get("MXPLAIN_PROPERTY_EXAMPLES", 25)), deadline=None,
          derandomize=not os.environ.get("MXPLAIN_PROPERTY_EXAMPLES"),
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=TREES, action=ACTIONS, finished_first=st.booleans())
def test_no_user_file_ever_changes(tmp_path_factory, tree, action, finished_first):
    base = tmp_path_factory.mktemp("prop")
    cfg = base / "c.toml"
    cfg.write_text(RUN)
    out = base / "work" / "out"
    out.parent.mkdir()
    (out.parent / "sibling.txt").write_text("s")
    kind, *flags = action.split()
    if finished_first:  # a finished run (or store) of mxplain's is there before the user's files
        first = ["run", cfg, "--out", out, "--quiet"] if kind == "run" else \
            ["data", "synth", cfg, "--out", out, "--quiet"]
        assert main([str(a) for a in first]) == 0
    files = {f"{folder}/{name}" if folder else name: text for (folder, name), text in tree.items()}
    before = user_tree(out, files)
    around = snapshot(out.parent)
    around = {k: v for k, v in around.items() if not k.startswith("out/")}
    args = (["run", cfg] if kind == "run" else ["data", "synth", cfg]) + ["--out", out, "--quiet"]
    code = main([str(a) for a in args + flags])
    assert code in (0, 2)
    assert not unchanged(out, before), (action, files, code)
    assert not unchanged(out.parent, around)


# ---- the functions of mxplain.outputs, called directly ------------------------------------------
def test_store_files_tells_zarrs_files_from_a_users(small_store):
    root = small_store.path
    ours, foreign = outputs.store_files(root)
    assert foreign == [] and root / "zarr.json" in ours
    assert all(p.name == "zarr.json" or "/c/" in p.as_posix() for p in ours), ours
    (root / "tiles" / "notes.txt").write_text("mine")
    (root / "c").mkdir()
    (root / "c" / "0").write_text("not a chunk of a listed array")
    ours_after, foreign = outputs.store_files(root)
    assert sorted(p.relative_to(root).as_posix() for p in foreign) == ["c/0", "tiles/notes.txt"]
    assert ours_after == ours
    assert outputs.store_marker(root)["mxplain_tile_store"] is not None
    assert outputs.store_marker(root / "tiles") is None  # an array, not a group


def test_remove_store_deletes_a_clean_store_and_refuses_a_touched_one(small_store, tmp_path):
    root = small_store.path
    (root / "tiles" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds files mxplain did not write \('tiles/notes.txt'\)"):
        outputs.remove_store(root, "tile store")
    assert (root / "zarr.json").is_file() and len(outputs.store_files(root)[0]) > 3
    (root / "tiles" / "notes.txt").unlink()
    outputs.remove_store(root, "tile store")
    assert not root.exists() and tmp_path.is_dir()
    outputs.remove_store(root, "tile store")  # already gone: nothing to do
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a folder mxplain wrote"):
        outputs.remove_store(tmp_path / "file", "cube")


def test_prepare_store_resumes_replaces_or_refuses(small_store, tmp_path):
    root = small_store.path
    assert outputs.prepare_store(root, "mxplain_tile_store", "tile store", resume=True) is True
    assert outputs.prepare_store(root, "mxplain_tile_store", "tile store", resume=False,
                                 delete=False) is False and root.is_dir()
    with pytest.raises(UserError, match="not an mxplain store"):
        outputs.prepare_store(root, "mxplain_results_cube", "cube", resume=False)
    assert root.is_dir()
    assert outputs.prepare_store(root, "mxplain_tile_store", "tile store", resume=False) is False
    assert not root.exists()
    leftover = outputs.creating_path(tmp_path / "new.zarr")
    assert leftover == tmp_path / ".new.zarr.creating"
    leftover.mkdir()
    (leftover / outputs.CREATING).write_text("")
    assert outputs.prepare_store(tmp_path / "new.zarr", "m", "store", resume=False) is False
    assert not leftover.exists()
    leftover.mkdir()
    (leftover / "a.txt").write_text("mine")
    with pytest.raises(UserError, match="in the way.*holds 'a.txt'"):
        outputs.prepare_store(tmp_path / "new.zarr", "m", "store", resume=False)
    with pytest.raises(UserError, match="store is empty"):
        outputs.prepare_store(" ", "m", "store", resume=False)


def test_describe_within_and_output_in_input(tmp_path):
    for name in ("b.txt", "a.txt", "e", "d", "c"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    assert outputs.describe(tmp_path, limit=2) == "'a.txt', 'b.txt' and 4 more"
    assert outputs.describe(tmp_path / "sub") == "nothing"
    assert outputs.is_within(tmp_path / "sub" / ".." / "sub", tmp_path)
    assert outputs.is_within(tmp_path, tmp_path) and not outputs.is_within(tmp_path, tmp_path / "sub")
    with pytest.raises(UserError, match="lies inside the input data"):
        outputs.refuse_output_in_input(tmp_path / "sub" / "out", {"data": tmp_path}, "--out")
    with pytest.raises(UserError, match="'.*sub' is the input"):
        outputs.refuse_output_in_input(tmp_path / "sub", {"x": None, "data": tmp_path / "sub"}, "--out")
    outputs.refuse_output_in_input(tmp_path / "elsewhere", {"data": tmp_path / "sub"}, "--out")
    outputs.remove_empty_dirs(tmp_path)  # keeps every folder that holds a file
    assert (tmp_path / "a.txt").is_file() and not (tmp_path / "sub").exists()
