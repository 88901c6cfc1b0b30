import numpy as np
import pytest
import xarray as xr

from mxplain.cube import CubeWriter, open_results
from mxplain.errors import UserError
from mxplain.interfaces import Variable


def _writer(path, resume=False, attrs=None):
    variables = {"prediction": Variable(("lot", "tile")),
                 "sensitivity": Variable(("lot", "attribute")),
                 "tile_mask": Variable(("lot", "tile"), "bool")}
    sizes = {"lot": 3, "tile": 4, "attribute": 2}
    coords = {"lot": np.array(["a", "b", "c"]), "attribute": np.array(["size", "porosity"])}
    tables = {"measured_property": xr.DataArray(np.array([1.0, 2.0, 3.0]), dims=("lot",))}
    return CubeWriter(path, variables, sizes, coords, tables,
                      attrs or {"mxplain_config_hash": "h1"}, resume=resume)


def _values(i, n):
    return {"prediction": np.full(n, float(i)), "sensitivity": np.array([i, -i], float),
            "tile_mask": np.ones(n, bool)}


def test_lot_by_lot_writes_pad_ragged_tiles(tmp_path):
    w = _writer(tmp_path / "r.zarr")
    for i, n in enumerate([4, 2, 3]):
        w.write_lot(i, _values(i, n))
    w.finish()
    cube = open_results(tmp_path / "r.zarr")
    assert cube.prediction.sel(lot="b").values[:2].tolist() == [1.0, 1.0]
    assert np.isnan(cube.prediction.sel(lot="b").values[2:]).all()
    assert cube.tile_mask.sum("tile").values.tolist() == [4, 2, 3]
    per_lot = cube.prediction.where(cube.tile_mask).mean("tile")
    assert per_lot.values.tolist() == [0.0, 1.0, 2.0]
    assert cube.measured_property.values.tolist() == [1.0, 2.0, 3.0]
    assert cube.attrs["complete"] is True


def test_resume_skips_written_lots_and_gives_identical_cube(tmp_path):
    full = _writer(tmp_path / "full.zarr")
    for i in range(3):
        full.write_lot(i, _values(i, 4))
    part = _writer(tmp_path / "part.zarr")
    part.write_lot(0, _values(0, 4))
    resumed = _writer(tmp_path / "part.zarr", resume=True)
    done = resumed.done()
    assert done.tolist() == [True, False, False]
    for i in np.flatnonzero(~done):
        resumed.write_lot(int(i), _values(int(i), 4))
    a = open_results(tmp_path / "full.zarr").load()
    b = open_results(tmp_path / "part.zarr").load()
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())


def test_resume_with_other_config_refused(tmp_path):
    _writer(tmp_path / "r.zarr")
    with pytest.raises(UserError, match="another config"):
        _writer(tmp_path / "r.zarr", resume=True, attrs={"mxplain_config_hash": "other"})


def test_missing_variable_is_an_error(tmp_path):
    w = _writer(tmp_path / "r.zarr")
    with pytest.raises(RuntimeError, match="no values"):
        w.write_lot(0, {"prediction": np.zeros(4)})
    assert not w.done().any()


def test_open_results_refuses_other_stores(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "x.zarr"), mode="w")
    with pytest.raises(UserError, match="not an mxplain results cube"):
        open_results(tmp_path / "x.zarr")


def test_a_full_disk_while_the_cube_is_created_leaves_a_resumable_folder(tmp_path, monkeypatch):
    import errno

    real = xr.Dataset.to_zarr

    def full_disk(self, store, *a, **k):
        if str(store).endswith("store"):  # the template inside the .creating folder
            real(self, store, *a, **k)
            raise OSError(errno.ENOSPC, "No space left on device", str(store))
        return real(self, store, *a, **k)

    monkeypatch.setattr(xr.Dataset, "to_zarr", full_disk)
    with pytest.raises(OSError):
        _writer(tmp_path / "r.zarr")
    assert not (tmp_path / "r.zarr").exists() and (tmp_path / ".r.zarr.creating").is_dir()
    monkeypatch.setattr(xr.Dataset, "to_zarr", real)
    w = _writer(tmp_path / "r.zarr", resume=True)
    for i in range(3):
        w.write_lot(i, _values(i, 4))
    w.finish()
    cube = open_results(tmp_path / "r.zarr")
    assert set(cube.data_vars) >= {"prediction", "sensitivity", "measured_property"}
    assert "attribute" in cube.coords and not (tmp_path / ".r.zarr.creating").exists()


def test_damage_is_refused_on_load_and_recomputed_on_resume(tmp_path):
    w = _writer(tmp_path / "r.zarr")
    for i in range(3):
        w.write_lot(i, _values(i, 4))
    chunk = next((tmp_path / "r.zarr" / "sensitivity" / "c" / "1").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.unlink()
    with pytest.raises(UserError, match="'sensitivity' of lot 1"):
        open_results(tmp_path / "r.zarr")
    with pytest.warns(UserWarning, match="damaged"):
        resumed = _writer(tmp_path / "r.zarr", resume=True)
    assert resumed.done().tolist() == [True, False, True]
    resumed.write_lot(1, _values(1, 4))
    assert open_results(tmp_path / "r.zarr").sensitivity.values[1].tolist() == [1.0, -1.0]


def test_variables_carry_units_and_descriptions(tmp_path):
    """Issue 19 item 3: units as attributes on cube variables (the explainer's declaration, the
    pipeline's own variables from the property's units), kept through lot writes."""
    variables = {"prediction": Variable(("lot", "tile")),
                 "sensitivity": Variable(("lot", "attribute"), units="psi per unit attribute",
                                         description="slope"),
                 "tile_mask": Variable(("lot", "tile"), "bool")}
    sizes = {"lot": 3, "tile": 4, "attribute": 2}
    coords = {"lot": np.array(["a", "b", "c"]), "attribute": np.array(["size", "porosity"])}
    tables = {"measured_property": xr.DataArray(np.array([1.0, 2.0, 3.0]), dims=("lot",)),
              "lot_attributes": xr.DataArray(np.full((3, 2), 0.5), dims=("lot", "attribute"))}
    w = CubeWriter(tmp_path / "r.zarr", variables, sizes, coords, tables,
                   {"mxplain_config_hash": "h", "property_units": "psi"}, resume=False)
    for i in range(3):
        w.write_lot(i, _values(i, 4))
    w.finish()
    cube = open_results(tmp_path / "r.zarr")
    assert cube.sensitivity.attrs["units"] == "psi per unit attribute"
    assert cube.sensitivity.attrs["description"] == "slope"
    assert cube.prediction.attrs["units"] == "psi"
    assert cube.measured_property.attrs["units"] == "psi"
    assert cube.lot_attributes.attrs["units"] == "1"
    assert "units" not in cube.tile_mask.attrs


def test_builtin_explainers_declare_units():
    from mxplain.interfaces import ExplainContext
    from mxplain.plugins import get

    ctx = ExplainContext(attributes=("size",), property_units="HV")
    fwd = get("explainer", "forward")(n_boot=10).variables(ctx)
    assert fwd["sensitivity"].units == "HV per unit attribute"
    assert fwd["sensitivity_ci"].units == "HV per unit attribute"
    assert fwd["forward_prediction"].units == "HV"
    assert fwd["sensitivity_sign_stability"].units == "1"
    bwd = get("explainer", "backward")(n_boot=10).variables(ctx)
    assert bwd["backward_prediction"].units == "HV" and bwd["backward_attributes"].units == "1"
    assert bwd["backward_mean_change"].units == "1"
    assert bwd["backward_reached_share"].units == "1"
