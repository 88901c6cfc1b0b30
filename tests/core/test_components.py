"""mxplain.components, the one place the run's components are built: declared reads between
explainers (Explainer.reads / reads_optional): producers run first, a read without a producer is
refused when the config is resolved, the reader gets the lot's earlier values through
ExplainContext.lot_results, and a resumed run and a Dask run write the same cube as an
uninterrupted one (moved from test_explain_reads.py); what the dataset knows reaches the context,
the config hash and the stage seeds."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from tiny_run import DATA

from mxplain import hookimpl, plugins
from mxplain.builtins import StoreDataset
from mxplain.components import (
    build_components,
    build_explainers,
    check_reads,
    config_hash,
    dataset_knowledge,
    explain_lot_values,
    stage_seed,
)
from mxplain.errors import UserError
from mxplain.interfaces import ExplainContext, Explainer, Lot, Variable

HERE = Path(__file__).resolve().parent


class Doubler(Explainer):
    """Each tile's prediction times ``scale`` (the producer)."""

    name = "reads_doubler"

    def __init__(self, scale: float = 2.0):
        self.scale = scale

    def variables(self, ctx: ExplainContext) -> dict[str, Variable]:
        return {"doubled": Variable(("lot", "tile"))}

    def explain_lot(self, lot: Lot, ctx: ExplainContext) -> dict[str, np.ndarray]:
        pred = ctx.predictor.predict(lot.tiles, batch_size=ctx.batch_size)
        return {"doubled": (self.scale * pred).astype(np.float32)}


class Reader(Explainer):
    """``doubled`` minus the pipeline's ``prediction``, per lot; what it was given is recorded
    in the cube (``reader_saw``: how many of its declared reads it got)."""

    name = "reads_reader"
    reads = ("doubled", "prediction")
    reads_optional = ("not_written_by_anyone",)

    def __init__(self, offset: float = 0.0):
        self.offset = offset

    def variables(self, ctx: ExplainContext) -> dict[str, Variable]:
        return {"reader_difference": Variable(("lot",)), "reader_saw": Variable(("lot",))}

    def explain_lot(self, lot: Lot, ctx: ExplainContext) -> dict[str, np.ndarray]:
        got = ctx.lot_results
        diff = float(np.mean(got["doubled"] - got["prediction"])) + self.offset
        return {"reader_difference": np.float32(diff), "reader_saw": np.float32(len(got))}


class Greedy(Explainer):
    """Reads a variable nobody writes."""

    name = "reads_greedy"
    reads = ("nowhere",)

    def variables(self, ctx):
        return {"greedy": Variable(("lot",))}

    def explain_lot(self, lot, ctx):
        return {"greedy": np.float32(0)}


class CycleA(Explainer):
    name = "reads_cycle_a"
    reads = ("cycle_b",)

    def variables(self, ctx):
        return {"cycle_a": Variable(("lot",))}

    def explain_lot(self, lot, ctx):
        return {"cycle_a": np.float32(0)}


class CycleB(CycleA):
    name = "reads_cycle_b"
    reads = ("cycle_a",)

    def variables(self, ctx):
        return {"cycle_b": Variable(("lot",))}


@hookimpl
def mxplain_explainers():
    return [Doubler, Reader, Greedy, CycleA, CycleB]


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """This module registered as the entry point of a distribution on PYTHONPATH (what the Dask
    workers and the CLI subprocesses find)."""
    info = tmp_path / "site" / "mxplain_reads-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mxplain-reads\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mxplain]\nreads = {Path(__file__).stem}\n")
    path = [str(tmp_path / "site"), str(HERE)]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path + [p for p in [os.environ.get(
        "PYTHONPATH")] if p]))
    for p in reversed(path):
        monkeypatch.syspath_prepend(p)
    plugins.reset()
    yield
    plugins.reset()


def test_producers_run_first_and_the_config_order_is_kept_otherwise(installed):
    tables = {"reads_reader": {}, "gradcam": {}, "reads_doubler": {}}
    assert list(build_explainers(tables)) == ["gradcam", "reads_doubler", "reads_reader"]
    assert list(build_explainers({"reads_doubler": {}, "reads_reader": {}, "gradcam": {}})) == \
        ["reads_doubler", "reads_reader", "gradcam"]
    # nothing declares a read: the config's order as it is
    assert list(build_explainers({"gradcam": {}, "forward": {}})) == ["gradcam", "forward"]


def test_a_read_without_a_producer_is_refused_when_the_config_is_resolved(installed):
    with pytest.raises(UserError, match=r"\[explain.reads_reader\] reads the cube variable "
                                        r"'doubled', which no explainer of the run writes"):
        build_explainers({"reads_reader": {}, "gradcam": {}})
    with pytest.raises(UserError, match="'nowhere'"):
        build_explainers({"reads_greedy": {}})
    with pytest.raises(UserError, match="cycle"):
        build_explainers({"reads_cycle_a": {}, "reads_cycle_b": {}})
    # a skipped producer is not in the run: its reader is refused too
    with pytest.raises(UserError, match="'doubled'"):
        build_explainers({"reads_doubler": {}, "reads_reader": {}}, skip=("reads_doubler",))


def test_the_cli_refuses_before_writing_anything(installed, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + PREDICTOR + "[explain.reads_reader]\n[run]\nreport = false\n")
    res = subprocess.run([sys.executable, "-m", "mxplain", "run", str(cfg), "--out",
                          str(tmp_path / "out"), "--device", "cpu"], capture_output=True,
                         text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(
        "error: [explain.reads_reader] reads the cube variable 'doubled'")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="'doubled'"):
        build_components({"explain": {"reads_reader": {}}})


class _Predictor:
    """Predicts each tile's mean grey level (all ``_base_values`` asks of a predictor)."""

    def predict(self, tiles, batch_size=64):
        return tiles.float().mean(dim=(1, 2, 3)).numpy()


def test_the_reader_gets_only_its_declared_reads_and_who_wrote_them(installed):
    explainers = build_explainers({"reads_reader": {"offset": 0.5}, "reads_doubler":
                                   {"scale": 3.0}})
    seen = {}
    reader = explainers["reads_reader"]
    orig = reader.explain_lot

    def spy(lot, ctx):
        seen["results"], seen["producers"] = dict(ctx.lot_results), dict(ctx.lot_producers)
        seen["seconds"] = dict(ctx.lot_seconds)
        return orig(lot, ctx)

    reader.explain_lot = spy
    tiles = torch.linspace(0, 1, 3 * 16).reshape(3, 1, 4, 4)
    lot = Lot(index=0, lot_id="L0", tiles=tiles, attributes=np.zeros(0, np.float32),
              property=1.0)
    ctx = ExplainContext(predictor=_Predictor(), progress=False)
    variables = {"tile_mask": 0, "prediction": 0, "example_tile": 0, "doubled": 0,
                 "reader_difference": 0, "reader_saw": 0}
    per = dict.fromkeys(explainers, 0.0)
    values = explain_lot_values(0, None, ctx, explainers, variables, 3, per, lot=lot)
    pred = tiles.mean(dim=(1, 2, 3)).numpy()
    assert set(seen["results"]) == {"doubled", "prediction"}  # nothing undeclared, no phantom
    np.testing.assert_allclose(seen["results"]["doubled"], 3.0 * pred, rtol=1e-6)
    assert seen["producers"] == {"doubled": ("reads_doubler", {"scale": 3.0}),
                                 "prediction": ("pipeline", {})}
    assert values["reader_difference"] == pytest.approx(2.0 * pred.mean() + 0.5, rel=1e-5)
    assert values["reader_saw"] == 2
    assert set(seen["seconds"]) == {"reads_doubler"} and seen["seconds"]["reads_doubler"] >= 0
    assert ctx.lot_results == {}  # the run's context is left alone


PREDICTOR = """
[predictor]
name = "wideresnet"
depth = 10
widen = 1
epochs = 1
batch_size = 8
"""
# the reader first in the config: the run puts its producer before it
RUN = DATA + PREDICTOR + """
[explain.reads_reader]
offset = 0.25
[explain.reads_doubler]
scale = 3.0
[explain.gradcam]
ig_steps = 2
[run]
explain_tiles = 3
report = false
"""
ENV_KILL = "MXPLAIN_KILL_AT"


def _cli(args, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mxplain", *args], env=env,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_resumed_and_dask_runs_write_the_uninterrupted_cube(installed, tmp_path):
    from mxplain.cube import open_results

    cfg = tmp_path / "c.toml"
    cfg.write_text(RUN)
    full = tmp_path / "full"
    assert _cli(["run", str(cfg), "--out", str(full), "--device", "cpu", "--quiet"]).returncode \
        == 0
    part = tmp_path / "part"
    killed = _cli(["run", str(cfg), "--out", str(part), "--device", "cpu", "--quiet"],
                  {ENV_KILL: "explain:lot@3"})
    assert killed.returncode != 0  # killed after its third lot was explained
    resumed = _cli(["run", str(cfg), "--out", str(part), "--device", "cpu", "--quiet",
                    "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    dask = _cli(["run", str(cfg), "--out", str(tmp_path / "dask"), "--device", "cpu", "--quiet",
                 "--workers", "2"])
    assert dask.returncode == 0, dask.stderr
    a = open_results(full).load()
    pred = a["prediction"].where(a["tile_mask"]).mean("tile").values
    np.testing.assert_allclose(a["reader_difference"].values, 2.0 * pred + 0.25, rtol=1e-5)
    np.testing.assert_array_equal(a["reader_saw"].values, 2)
    for other in (part, tmp_path / "dask"):
        b = open_results(other).load()
        xr.testing.assert_identical(a, b)  # every variable, coordinate and attribute


def test_build_components_constructs_each_table_and_leaves_checkpoints_to_load(tmp_path):
    ckpt = tmp_path / "predictor.pt"
    ckpt.write_bytes(b"")
    built = build_components({"data": {"name": "store", "path": "s.zarr"},
                              "predictor": {"name": "wideresnet", "checkpoint": str(ckpt)},
                              "explain": {"gradcam": {"ig_steps": 3}}})
    assert isinstance(built["dataset"], StoreDataset) and built["dataset"].path == "s.zarr"
    assert built["predictor"] is None and "editor" not in built
    assert list(built["explain"]) == ["gradcam"] and built["explain"]["gradcam"].ig_steps == 3
    with pytest.raises(UserError, match=r"\[predictor\] checkpoint '.*missing.pt' does not exist"):
        build_components({"predictor": {"name": "wideresnet",
                                        "checkpoint": str(tmp_path / "missing.pt")}})
    assert build_components({}, skip=("gradcam",)) == {"explain": {}}


def test_check_reads_refuses_a_read_the_runs_cube_lacks(installed):
    explainers = build_explainers({"reads_doubler": {}, "reads_reader": {}})
    check_reads(explainers, {"doubled": 0, "prediction": 0})
    with pytest.raises(UserError, match=r"^\[explain.reads_reader\] reads the cube variable "
                                        r"'prediction', which no explainer of this run writes$"):
        check_reads(explainers, {"doubled": 0})


def test_dataset_knowledge_fills_the_context_from_the_store(small_store):
    ctx = ExplainContext()
    dataset_knowledge(ctx, StoreDataset(path=str(small_store.path)), small_store)
    assert ctx.attributes == ("size", "porosity") and ctx.property_name == small_store.property_name
    assert ctx.measure is None and ctx.segment is None and ctx.structures == {}
    assert ctx.simulator is None and ctx.true_sensitivity == small_store.true_sensitivity()


def test_the_config_hash_ignores_where_and_how_a_run_runs():
    cfg = {"data": {"name": "synthetic", "n_lots": 4}, "trust": {"x": 1},
           "run": {"seed": 0, "device": "cpu", "workers": None, "report": True}}
    same = {**cfg, "trust": {"x": 2},
            "run": {"seed": 0, "device": "cuda", "workers": 2, "report": False}}
    assert config_hash(cfg) == config_hash(same) and len(config_hash(cfg)) == 16
    assert config_hash(cfg) != config_hash({**cfg, "run": {**cfg["run"], "seed": 1}})
    assert config_hash(cfg) != config_hash({**cfg, "data": {"name": "synthetic", "n_lots": 5}})


def test_stage_seeds_are_fixed_and_differ_by_stage():
    assert stage_seed(0, "predictor") == stage_seed(0, "predictor") == 3106054589
    seeds = {stage_seed(s, st) for s in (0, 1) for st in ("predictor", "editor", "lot:0", 0)}
    assert len(seeds) == 8 and all(0 <= x < 2 ** 32 for x in seeds)
    assert stage_seed(7, 3) == stage_seed(7, "3")
