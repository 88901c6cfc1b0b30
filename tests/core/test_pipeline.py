"""mxplain.pipeline. The single-process explain stage: reads and writes overlapped with compute
(same cube as the sequential loop, errors of the I/O threads raised in the main thread),
``[run] batch_size = "auto"`` and ``[run] compile``."""

import json
import threading

import numpy as np
import pytest
import torch
import xarray as xr
from tiny_run import DATA, MODELS

from mxplain import config as config_mod
from mxplain import device as device_mod
from mxplain import pipeline, zarrio
from mxplain.cube import CubeWriter, open_results
from mxplain.store import TileStore

EXPLAIN = """
[explain.forward]
steps = 3
batch_size = "auto"
[explain.backward]
max_iter = 3
"""


def _run_toml(**run):
    lines = ["[run]", "explain_tiles = 3", "report = false", "editor_eval_tiles = 2"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in run.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained run; the other runs load its models (checkpoint =) and train nothing."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = tmp / "c.toml"
    cfg.write_text(DATA + MODELS + EXPLAIN + _run_toml())
    return pipeline.run(cfg, out=tmp / "run", device="cpu", progress=False)


def _config(tmp_path, trained, **run):
    models = trained / "models"
    cfg = tmp_path / f"c{len(list(tmp_path.glob('c*.toml')))}.toml"
    cfg.write_text(DATA + f'[predictor]\nname = "wideresnet"\ncheckpoint = "{models / "predictor.pt"}"\n'
                   f'[editor]\nname = "attgan"\ncheckpoint = "{models / "editor.pt"}"\n'
                   + EXPLAIN + _run_toml(**run))
    return cfg


def _sequential(todo, store, ctx, explainers, variables, n_tiles, per_explainer, writer, bar=None):
    """The explain loop before the overlap: read, explain, write, one lot after the other."""
    for i in todo:
        values = pipeline.explain_lot_values(i, store, ctx, explainers, variables, n_tiles,
                                             per_explainer)
        writer.write_lot(i, values)


def test_overlapped_loop_writes_the_sequential_cube(tmp_path, trained, monkeypatch):
    threads = []
    lot = TileStore.lot

    def recording_lot(self, i):
        threads.append(threading.current_thread().name)
        return lot(self, i)

    monkeypatch.setattr(TileStore, "lot", recording_lot)
    cfg = _config(tmp_path, trained)
    overlapped = pipeline.run(cfg, out=tmp_path / "overlapped", device="cpu", progress=False)
    # the explain stage read its lots in the prefetch thread
    assert sum(name.startswith("mxplain-read") for name in threads) == 4
    with monkeypatch.context() as m:
        m.setattr(pipeline, "explain_overlapped", _sequential)
        sequential = pipeline.run(cfg, out=tmp_path / "sequential", device="cpu", progress=False)
    a, b = open_results(overlapped).load(), open_results(sequential).load()
    xr.testing.assert_identical(a, b)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert bool(a.lot_done.all())
    # and the cube of the run that trained the models (another config: attributes differ)
    xr.testing.assert_identical(a.drop_attrs(), open_results(trained).load().drop_attrs())
    ma = json.loads((overlapped / "metrics.json").read_text())
    mb = json.loads((sequential / "metrics.json").read_text())
    assert ma["explain"] == mb["explain"]
    assert ma["provenance"]["batch_size"] == 256 and "compiled" not in ma["provenance"]


def test_a_failed_write_is_raised_in_the_main_thread(tmp_path, trained, monkeypatch):
    write = CubeWriter.write_lot
    where = []

    def failing(self, index, values):
        where.append(threading.current_thread().name)
        if index == 2:
            raise OSError("disk full (test)")
        write(self, index, values)

    monkeypatch.setattr(CubeWriter, "write_lot", failing)
    out = tmp_path / "run"
    with pytest.raises(OSError, match="disk full"):
        pipeline.run(_config(tmp_path, trained), out=out, device="cpu", progress=False)
    assert all(name.startswith("mxplain-write") for name in where) and len(where) == 3
    # as in the sequential loop: the lots before the failed one are written and flagged
    assert zarrio.lots_done(out / "results.zarr", "lot_done").tolist() == [True, True, False, False]
    assert not (out / "metrics.json").exists()


def test_an_explain_error_waits_for_the_write_in_flight(tmp_path, trained, monkeypatch):
    explain = pipeline.explain_lot_values

    def failing(i, *args, **kw):
        if i == 2:
            raise RuntimeError("explainer broke (test)")
        return explain(i, *args, **kw)

    monkeypatch.setattr(pipeline, "explain_lot_values", failing)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="explainer broke"):
        pipeline.run(_config(tmp_path, trained), out=out, device="cpu", progress=False)
    assert zarrio.lots_done(out / "results.zarr", "lot_done").tolist() == [True, True, False, False]
    # the resumed run completes the cube: the same as an uninterrupted run's
    monkeypatch.setattr(pipeline, "explain_lot_values", explain)
    pipeline.run(_config(tmp_path, trained), out=out, device="cpu", progress=False, resume=True)
    ref = pipeline.run(_config(tmp_path, trained), out=tmp_path / "ref", device="cpu",
                       progress=False)
    xr.testing.assert_identical(open_results(out).load(), open_results(ref).load())


def test_auto_batch_size_on_cpu_is_the_fixed_value_and_recorded(tmp_path, trained):
    out = pipeline.run(_config(tmp_path, trained, batch_size="auto"), out=tmp_path / "run",
                       device="cpu", progress=False)
    prov = json.loads((out / "metrics.json").read_text())["provenance"]
    assert prov["batch_size"] == config_mod.CPU_AUTO_BATCH == 64
    assert prov["batch_size_auto"]["method"] == "cpu fixed value"
    assert device_mod.auto_batch_size(None, None, 32, 4, torch.device("cpu"))[0] == 64


def test_compile_reaches_the_models_and_a_failure_is_a_warning(tmp_path, trained, monkeypatch):
    import torch._dynamo

    monkeypatch.setattr(torch._dynamo.config, "suppress_errors", False)  # restored after the test
    wrapped = []

    def recorder(fn, *args, **kw):  # compiling for real on the CPU is slow: record, run eagerly
        wrapped.append(getattr(fn, "__qualname__", repr(fn)))
        return fn

    monkeypatch.setattr(torch, "compile", recorder)
    out = pipeline.run(_config(tmp_path, trained, compile=True), out=tmp_path / "run",
                       device="cpu", progress=False)
    prov = json.loads((out / "metrics.json").read_text())["provenance"]
    assert prov["compiled"] == ["wideresnet.forward", "attgan.generator.decode"]
    assert wrapped == ["WideResNet.forward", "Generator.decode"]
    # compile is not part of the config hash: a run may be resumed with it switched
    assert pipeline.config_hash(config_mod.load(_config(tmp_path, trained, compile=True))) == \
        pipeline.config_hash(config_mod.load(_config(tmp_path, trained)))

    def broken(fn, *args, **kw):
        raise RuntimeError("no C compiler (test)")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match="runs eagerly") as caught:
        out = pipeline.run(_config(tmp_path, trained, compile=True), out=tmp_path / "run2",
                           device="cpu", progress=False)
    eager = sorted(str(w.message).split(" runs")[0] for w in caught if "eagerly" in str(w.message))
    assert eager == ["[run] compile: the editor 'attgan'", "[run] compile: the predictor 'wideresnet'"]
    prov = json.loads((out / "metrics.json").read_text())["provenance"]
    assert prov["compiled"] == []
    xr.testing.assert_identical(open_results(out).load().drop_attrs(),
                                open_results(trained).load().drop_attrs())


@pytest.mark.parametrize("line,match", [
    ("batch_size = 0", "batch_size = 0; needs an integer >= 1 or \"auto\""),
    ("batch_size = -4", "batch_size = -4"),
    ('batch_size = "big"', "batch_size = 'big'"),
    ("batch_size = 2.5", "batch_size = 2.5"),
    ("batch_size = true", "batch_size = True"),
    ('compile = "yes"', "compile = 'yes'; needs true or false"),
])
def test_bad_run_values_are_one_error_line(tmp_path, capsys, line, match):
    from mxplain.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + f"[run]\n{line}\n")
    code = main(["run", str(cfg), "--out", str(tmp_path / "r")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert match in err[0], err
    assert not (tmp_path / "r").exists()


def test_good_run_values_resolve(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + '[run]\nbatch_size = "auto"\ncompile = true\n')
    run = config_mod.load(cfg)["run"]
    assert run["batch_size"] == "auto" and run["compile"] is True
    assert config_mod.fixed_batch_size(run) == 64
    assert config_mod.load(None)["run"]["compile"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_probe_picks_a_power_of_two_that_fits():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    from _bench import components

    dev = torch.device("cuda")
    editor, predictor = components(64, dev, layers=3, dim=16, depth=10)
    bs, info = device_mod.auto_batch_size(predictor, editor, 64, 4, dev, gpu_max=4096)
    assert bs & (bs - 1) == 0 and 16 <= bs <= 4096
    assert info["bytes_per_tile"] > 0 and str(bs) in info["tiles_per_s"]


def test_reconstruction_shift_over_the_real_tiles_only():
    cube = xr.Dataset({"prediction": (("lot", "tile"), np.array([[100.0, 200.0, 7.0]])),
                       "reconstruction_prediction": (("lot", "tile"),
                                                     np.array([[110.0, 180.0, 9e9]])),
                       "tile_mask": (("lot", "tile"), np.array([[True, True, False]]))})
    assert pipeline.reconstruction_shift(cube) == {"mean": -5.0, "mean_abs": 15.0,
                                                   "mean_abs_percent": pytest.approx(10.0)}
