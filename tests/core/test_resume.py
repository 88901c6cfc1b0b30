"""Kill -9 midway, resume, and get exactly what an uninterrupted run gives (tile store and cube)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import xarray as xr

from mxplain import zarrio
from mxplain.cube import open_results
from mxplain.store import TileStore

CLI = [sys.executable, "-m", "mxplain"]


def _partial(path, flag):
    try:
        done = zarrio.lots_done(path, flag)
    except Exception:
        return False
    return done.any() and not done.all()


def kill_when_partial(args, path, flag, cwd, timeout=240):
    proc = subprocess.Popen(CLI + args, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
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
    subprocess.run(CLI + ["data", "synth", str(cfg), "--out", str(full), "--quiet"], check=True)
    killed = kill_when_partial(["data", "synth", str(cfg), "--out", str(part), "--quiet"], part,
                               "lot_written", tmp_path)
    assert killed, "the writer finished before it could be killed"
    assert not zarrio.read_attrs(part).get("complete")
    subprocess.run(CLI + ["data", "synth", str(cfg), "--out", str(part), "--resume", "--quiet"],
                   check=True)
    a, b = TileStore.open(full), TileStore.open(part)
    assert a.lot_ids == b.lot_ids
    for i in range(a.n_lots):
        assert np.array_equal(a.tiles(i), b.tiles(i))
    np.testing.assert_array_equal(a.properties, b.properties)
    np.testing.assert_array_equal(a.lot_attributes, b.lot_attributes)


RUN = DATA + """
[predictor]
name = "wideresnet"
depth = 10
widen = 1
epochs = 1
[editor]
name = "attgan"
enc_dim = 8
dec_dim = 8
dis_dim = 8
dis_fc_dim = 16
n_layers = 3
epochs = 1
[explain.forward]
steps = 5
[run]
explain_tiles = 6
report = false
editor_eval_tiles = 2
"""


def test_kill_cube_write_and_resume(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(RUN)
    subprocess.run(CLI + ["run", str(cfg), "--out", str(tmp_path / "full"), "--quiet"],
                   check=True)
    out = tmp_path / "part"
    killed = kill_when_partial(["run", str(cfg), "--out", str(out), "--quiet"],
                               out / "results.zarr", "lot_done", tmp_path)
    assert killed, "the run finished before it could be killed"
    assert not (out / "metrics.json").exists()
    subprocess.run(CLI + ["run", str(cfg), "--out", str(out), "--resume", "--quiet"], check=True)
    a = open_results(tmp_path / "full").load()
    b = open_results(out).load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
