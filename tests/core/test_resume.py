"""Kill -9 midway, resume, and get exactly what an uninterrupted run gives (tile store and cube)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
from tiny_run import MODELS

from mxplain import zarrio
from mxplain.checkpoint import state_differences
from mxplain.cube import open_results
from mxplain.store import TileStore

CLI = [sys.executable, "-m", "mxplain"]
# one thread: tiny models gain nothing from more, and on a busy CPU more threads crawl
ENV = {**{k: v for k, v in os.environ.items() if k != "MXPLAIN_KILL_AT"}, "OMP_NUM_THREADS": "1"}


def _partial(path, flag):
    try:
        done = zarrio.lots_done(path, flag)
    except Exception:
        return False
    return done.any() and not done.all()


def kill_when_partial(args, path, flag, cwd, timeout=240):
    proc = subprocess.Popen(CLI + args, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    t0 = time.time()
    try:
        while time.time() - t0 < timeout and proc.poll() is None:
            if _partial(path, flag):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return False


DATA = """
[data]
name = "synthetic"
n_lots = 6
tiles_per_lot = 24
tile_size = 64
seed = 5
"""


def test_kill_data_synth_and_resume(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA)
    full, part = tmp_path / "full.zarr", tmp_path / "part.zarr"
    subprocess.run(CLI + ["data", "synth", str(cfg), "--out", str(full), "--quiet"], check=True,
                   env=ENV)
    killed = kill_when_partial(["data", "synth", str(cfg), "--out", str(part), "--quiet"], part,
                               "lot_written", tmp_path)
    assert killed, "the writer finished before it could be killed"
    assert not zarrio.read_attrs(part).get("complete")
    subprocess.run(CLI + ["data", "synth", str(cfg), "--out", str(part), "--resume", "--quiet"],
                   check=True, env=ENV)
    a, b = TileStore.open(full), TileStore.open(part)
    assert a.lot_ids == b.lot_ids
    for i in range(a.n_lots):
        assert np.array_equal(a.tiles(i), b.tiles(i))
    np.testing.assert_array_equal(a.properties, b.properties)
    np.testing.assert_array_equal(a.lot_attributes, b.lot_attributes)


RUN = DATA + MODELS + """
[explain.forward]
steps = 5
[explain.backward]
max_iter = 5
restarts = 0
[run]
explain_tiles = 6
report = false
editor_eval_tiles = 2
"""


def test_kill_cube_write_and_resume(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(RUN)
    subprocess.run(CLI + ["run", str(cfg), "--out", str(tmp_path / "full"), "--quiet"],
                   check=True, env=ENV)
    out = tmp_path / "part"
    killed = kill_when_partial(["run", str(cfg), "--out", str(out), "--quiet"],
                               out / "results.zarr", "lot_done", tmp_path)
    assert killed, "the run finished before it could be killed"
    assert not (out / "metrics.json").exists()
    subprocess.run(CLI + ["run", str(cfg), "--out", str(out), "--resume", "--quiet"], check=True,
                   env=ENV)
    a = open_results(tmp_path / "full").load()
    b = open_results(out).load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    # the figures read the cube only (example tiles and their edits included): the lots explained
    # before the kill draw as in the uninterrupted run, byte for byte
    full = _figures(tmp_path / "full")
    assert set(full) == {"forward_fig4a_tile_curve.png", "forward_fig4b_lot_boxplot.png",
                         "forward_fig5_attribute_panel.png", "backward_fig6_tile_counterfactual.png",
                         "backward_fig7_lot_mean_change.png"}
    assert _figures(out) == full
    import matplotlib.image as mpimg

    assert mpimg.imread(out / "figures" / "forward_fig4a_tile_curve.png").shape[0] > 600  # images
    # ... and `mxplain report` draws them again from the run folder alone
    for name in full:
        (out / "figures" / name).unlink()
    subprocess.run(CLI + ["report", str(out)], check=True, env=ENV, cwd=tmp_path)
    assert _figures(out) == full
    assert (out / "report" / "index.html").is_file()


def _figures(run):
    return {p.name: p.read_bytes() for p in sorted((run / "figures").glob("*.png"))
            if p.name.startswith(("forward_", "backward_"))}


# ---- the whole pipeline, SIGKILLed at every kind of point and resumed each time ---------------------
# A tiny run of every trainable stage (wideresnet predictor, texturevae editor, per-epoch training
# checkpoints) and two explainers. ``MXPLAIN_KILL_AT`` (mxplain.failpoints) makes the process SIGKILL
# itself at an exact point, so every point below is hit on every machine, however fast.
PIPELINE = """
[data]
name = "synthetic"
n_lots = 4
tiles_per_lot = 8
tile_size = 32
seed = 5
[predictor]
name = "wideresnet"
depth = 10
widen = 1
epochs = 2
batch_size = 8
dropout = 0.1
[editor]
name = "texturevae"
latent_dim = 8
dec_dim = 4
epochs = 2
batch_size = 8
max_tiles_per_lot = 4
figures = false
[explain.forward]
steps = 3
[explain.gradcam]
[run]
explain_tiles = 4
report = false
editor_eval_tiles = 2
"""

# (failpoint, what the run folder must show right after the kill)
KILLS = [
    ("create:tiles.zarr", "data: the store's template written, not renamed into place"),
    ("write:tiles.zarr@2", "data: lot 2's tiles written, not flagged"),
    ("epoch:predictor.training.pt@1", "predictor: epoch 1 of 2 checkpointed"),
    ("epoch:editor.training.pt@1", "editor: epoch 1 of 2 checkpointed"),
    ("create:results.zarr", "cube creation: the template written, not renamed into place"),
    ("created:results.zarr", "cube creation: the template in place, no lot written"),
    ("explain:lot@2", "forward sweep: lot 1 explained, not written"),
    ("write:results.zarr@2", "cube write: lot 2's values written, not flagged"),
]


def _models_equal(a, b):
    import torch

    sa, sb = (torch.load(p, weights_only=True)["state"] for p in (a, b))
    assert not state_differences(sa, sb)


@pytest.mark.slow
def test_pipeline_killed_at_every_stage_resumes_to_the_same_cube(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(PIPELINE)
    env = ENV
    full, out = tmp_path / "full", tmp_path / "part"
    subprocess.run(CLI + ["run", str(cfg), "--out", str(full), "--quiet"], check=True, env=env,
                   cwd=tmp_path, stderr=subprocess.DEVNULL)
    for i, (point, what) in enumerate(KILLS):
        args = ["run", str(cfg), "--out", str(out), "--quiet"] + (["--resume"] if i else [])
        proc = subprocess.run(CLI + args, env={**env, "MXPLAIN_KILL_AT": point}, cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True)
        assert proc.returncode == -signal.SIGKILL, (point, proc.stderr[-2000:])
        assert not (out / "metrics.json").exists(), what
        models = out / "models"
        if point.startswith("create:"):
            store = point.split(":")[1]
            assert not (out / store).exists() and (out / f".{store}.creating").is_dir(), what
        elif point.startswith("created:"):
            assert not zarrio.lots_done(out / "results.zarr", "lot_done").any(), what
        elif point.startswith("write:tiles"):
            assert not zarrio.read_attrs(out / "tiles.zarr").get("complete")
            assert _partial(out / "tiles.zarr", "lot_written"), what
        elif point.startswith("epoch:predictor"):
            assert (models / "predictor.training.pt").exists() and not (models / "predictor.pt").exists()
        elif point.startswith("epoch:editor"):
            assert (models / "editor.training.pt").exists() and not (models / "editor.pt").exists()
            assert (models / "predictor.pt").exists()
            assert not (models / "predictor.training.pt").exists()  # removed once the model is saved
        else:
            assert _partial(out / "results.zarr", "lot_done"), what
    subprocess.run(CLI + ["run", str(cfg), "--out", str(out), "--resume", "--quiet"], check=True,
                   env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    assert (out / "metrics.json").exists()
    assert not list((out / "models").glob("*.training*"))
    assert not list(out.glob(".*.creating"))
    for kind in ("predictor", "editor"):  # resumed trainings are bit-identical
        _models_equal(full / "models" / f"{kind}.pt", out / "models" / f"{kind}.pt")
    a = open_results(full).load()
    b = open_results(out).load()
    xr.testing.assert_identical(a, b)
    assert bool(b.lot_done.all())


# ---- damage: a finished run's stores altered on disk, then --resume --------------------------------
def _chunk(store, var, lot):
    return sorted((store / var / "c" / str(lot)).rglob("*"), key=lambda p: -len(p.parts))[0]


def _damage_cases(out):
    cube, tiles = out / "results.zarr", out / "tiles.zarr"
    return {
        "a deleted prediction chunk": lambda: _chunk(cube, "prediction", 1).unlink(),
        "a truncated forward_prediction chunk": lambda: _chunk(cube, "forward_prediction", 2)
        .write_bytes(_chunk(cube, "forward_prediction", 2).read_bytes()[:7]),
        "a truncated zarr.json": lambda: (cube / "zarr.json").write_text(
            (cube / "zarr.json").read_text()[:100]),
        "a deleted tile chunk": lambda: _chunk(tiles, "tiles", 3).unlink(),
    }


@pytest.mark.slow
def test_damaged_stores_are_detected_and_recomputed_on_resume(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(PIPELINE)
    full, out = tmp_path / "full", tmp_path / "part"
    for d in (full, out):
        subprocess.run(CLI + ["run", str(cfg), "--out", str(d), "--quiet"], check=True, env=ENV,
                       cwd=tmp_path, stderr=subprocess.DEVNULL)
    a = open_results(full).load()
    for what, damage in _damage_cases(out).items():
        damage()
        if what != "a deleted tile chunk":  # reading the damaged cube is one error line
            rep = subprocess.run(CLI + ["report", str(out)], env=ENV, cwd=tmp_path,
                                 capture_output=True, text=True)
            lines = [ln for ln in rep.stderr.splitlines() if ln.strip()]
            assert rep.returncode == 2 and len(lines) == 1 and "damaged" in lines[0], (what, lines)
        subprocess.run(CLI + ["run", str(cfg), "--out", str(out), "--resume", "--quiet"],
                       check=True, env=ENV, cwd=tmp_path, stderr=subprocess.DEVNULL)
        xr.testing.assert_identical(a, open_results(out).load())
        assert not TileStore.open(out / "tiles.zarr").verify(), what
