"""mxplain.interface_types: the plain data the interfaces pass: a data shape (equal whatever its
attribute names), footprints, the run's and the explainers' contexts (fresh containers for each
context, the run's folders), a lot and a cube variable's declaration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mxplain import interfaces
from mxplain.interface_types import (
    DataShape,
    ExplainContext,
    Footprint,
    Lot,
    RunContext,
    Variable,
)


def test_a_data_shape_is_frozen_and_its_attributes_do_not_count_in_equality():
    a = DataShape(4, 24, 6, 32, attributes=("size", "porosity"))
    assert a == DataShape(4, 24, 6, 32) and a != DataShape(4, 24, 6, 64)
    assert a.attributes == ("size", "porosity") and DataShape(1, 1, 1, 8).attributes is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.n_lots = 5


def test_a_footprint_defaults_to_nothing_held_on_the_host():
    f = Footprint("the tile store", ("n_lots", "tile_size"))
    assert (f.memory, f.disk, f.on_device) == (0, 0, False)


def test_the_run_context_knows_its_folders():
    ctx = RunContext()
    assert ctx.device == torch.device("cpu") and ctx.seed == 0 and ctx.batch_size == 256
    assert ctx.figures_dir is None and ctx.models_dir is None and ctx.training_state_path is None
    ctx = RunContext(out_dir=Path("run"))
    assert ctx.figures_dir == Path("run/figures") and ctx.models_dir == Path("run/models")


def test_each_explain_context_has_its_own_containers():
    a, b = ExplainContext(), ExplainContext()
    a.lot_results["prediction"] = np.zeros(3)
    a.structures["pores"] = None
    a.cube_coords["lot"] = np.arange(2)
    assert b.lot_results == {} and b.structures == {} and b.cube_coords == {}
    assert isinstance(a, RunContext) and a.figures_dir is None
    assert (a.predictor, a.editor, a.measure, a.segment, a.simulator) == (None,) * 5
    assert a.attributes == () and a.property_name == "property" and a.property_units == ""


def test_a_lot_and_a_variable():
    lot = Lot(2, "L2", torch.zeros(3, 1, 8, 8), np.array([0.2, 0.4]), 1100.0)
    assert (lot.index, lot.lot_id, lot.property) == (2, "L2", 1100.0)
    v = Variable(("lot", "attribute"))
    assert (v.dtype, v.units, v.description) == ("float32", "", "") and np.isnan(v.fill)
    assert Variable(("lot",), "int16", -1, "1") == Variable(("lot",), "int16", -1, "1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.dtype = "float64"


def test_the_interfaces_re_export_every_type():
    for cls in (DataShape, ExplainContext, Footprint, Lot, RunContext, Variable):
        assert getattr(interfaces, cls.__name__) is cls
