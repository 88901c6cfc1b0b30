"""mxplain.zarrio: a store written lot by lot (template, region writes, done flags), digests that
find damaged lots, and the small helpers around it."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from mxplain import outputs, zarrio
from mxplain.errors import UserError

FLAG = "lot_done"


def _store(tmp_path):
    path = tmp_path / "s.zarr"
    zarrio.create_template(path, {"x": (("lot", "k"), "float32"), "n": (("lot",), "int64")},
                           {"lot": 3, "k": 2}, {"lot": np.arange(3)},
                           {"mine": np.int64(7), "v": 1}, FLAG)
    return path


def _values(i):
    return {"x": (("k",), np.array([i, i + 0.5])), "n": ((), np.array(10 * i))}


def test_template_then_lots_written_one_at_a_time(tmp_path):
    path = _store(tmp_path)
    assert not outputs.creating_path(path).exists()
    assert zarrio.lots_done(path, FLAG).tolist() == [False] * 3
    zarrio.write_lot(path, 2, _values(2), FLAG)
    zarrio.write_lot(path, 0, _values(0), FLAG)
    assert zarrio.lots_done(path, FLAG).tolist() == [True, False, True]
    ds = zarrio.open_dataset(path)
    np.testing.assert_array_equal(ds["x"].values, [[0, 0.5], [np.nan, np.nan], [2, 2.5]])
    assert ds["x"].dtype == np.float32 and ds["n"].values.tolist() == [0, 0, 20]
    assert ds[zarrio.DIGEST_DIM].values.tolist() == ["n", "x"]
    assert int(ds[zarrio.DIGEST].values[2, 1]) == zarrio.lot_digest(np.float32([2, 2.5]))
    assert zarrio.read_attrs(path) == {"mine": 7, "v": 1}
    with pytest.raises(RuntimeError, match=r"lot 1: no values for \['n'\]"):
        zarrio.write_lot(path, 1, {"x": _values(1)["x"]}, FLAG)


def test_digest_is_of_the_stored_values_dtype_and_shape():
    a = np.arange(4, dtype=np.float32)
    assert zarrio.lot_digest(a) == zarrio.lot_digest(a.copy()) == zarrio.lot_digest(a[::1])
    assert zarrio.lot_digest(a) != zarrio.lot_digest(a.astype(np.float64))
    assert zarrio.lot_digest(a) != zarrio.lot_digest(a.reshape(2, 2))
    b = a.copy()
    b[3] = np.nextafter(b[3], 10)
    assert zarrio.lot_digest(a) != zarrio.lot_digest(b)
    assert np.isnan(zarrio.fill_for("float32"))
    assert (zarrio.fill_for(bool), zarrio.fill_for("uint8")) == (False, 0)


def test_a_damaged_lot_is_refused_or_unflagged_to_be_written_again(tmp_path):
    path = _store(tmp_path)
    for i in range(3):
        zarrio.write_lot(path, i, _values(i), FLAG)
    assert zarrio.damaged_lots(path, FLAG) == []
    assert zarrio.verify_or_unflag(path, FLAG, "cube", repair=False) == []
    chunk = path / "x" / "c" / "1" / "0"
    assert chunk.is_file()
    chunk.unlink()  # reads back as NaN
    (path / "n" / "c" / "2").write_bytes(b"garbage")
    damaged = zarrio.damaged_lots(path, FLAG)
    assert damaged[0] == (1, "x", "values differ from those written")
    assert damaged[1][:2] == (2, "n") and damaged[1][2].startswith("unreadable")
    with pytest.raises(UserError, match=r"damaged: 'x' of lot 1 is values differ .* \(and 1 more"):
        zarrio.verify_or_unflag(path, FLAG, "cube", repair=False)
    with pytest.warns(UserWarning, match="2 damaged lot"):
        found = zarrio.verify_or_unflag(path, FLAG, "cube", repair=True)
    assert found == ["x[lot 1]: values differ from those written", found[1]]
    assert zarrio.lots_done(path, FLAG).tolist() == [True, False, False]
    zarrio.write_lot(path, 1, _values(1), FLAG)
    assert zarrio.damaged_lots(path, FLAG) == []


def test_attributes_and_small_variables_added_to_a_finished_store(tmp_path):
    path = _store(tmp_path)
    zarrio.update_attrs(path, {"extra": np.float64(0.25)})
    zarrio.write_small(path, "verdict", xr.DataArray(np.array(["yes", "no"], "<U8"), dims=("attr",)))
    assert zarrio.read_attrs(path) == {"mine": 7, "v": 1, "extra": 0.25}
    assert zarrio.open_dataset(path)["verdict"].values.tolist() == ["yes", "no"]
    # replaced with values of the same dtype (trust.mark_cube writes fixed-width <U12)
    zarrio.write_small(path, "verdict", xr.DataArray(np.array(["no", "no"], "<U8"), dims=("attr",)))
    assert zarrio.open_dataset(path)["verdict"].values.tolist() == ["no", "no"]
    assert zarrio.read_marked(path, "cube", "v", 1)["extra"] == 0.25


def test_read_marked_names_what_the_path_should_be(tmp_path):
    path = _store(tmp_path)
    with pytest.raises(UserError, match="is a zarr store but not an mxplain tile store .*'other'"):
        zarrio.read_marked(path, "tile store", "other", 1)
    with pytest.raises(UserError, match="not an mxplain tile store"):
        zarrio.read_marked(path, "tile store", "v", 2)
    with pytest.raises(UserError, match="tile store '.*nope' does not exist"):
        zarrio.read_marked(tmp_path / "nope", "tile store", "v", 1)
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="is not a zarr store"):
        zarrio.read_marked(tmp_path / "plain", "tile store", "v", 1)


def test_create_template_refuses_a_leftover_that_is_not_mxplains(tmp_path):
    leftover = outputs.creating_path(tmp_path / "s.zarr")
    leftover.mkdir()
    (leftover / "keep.txt").write_text("user")
    with pytest.raises(UserError, match="in the way"):
        _store(tmp_path)
    assert (leftover / "keep.txt").read_text() == "user" and not (tmp_path / "s.zarr").exists()
