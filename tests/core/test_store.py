import numpy as np
import pytest
import torch

from mxplain.errors import UserError
from mxplain.store import LotTable, TileStore, to_tensor, to_uint8


def test_round_trip_and_ragged_lots(small_store):
    s = small_store
    assert s.lot_ids == ["a", "b", "c"]
    assert s.attributes == ("size", "porosity")
    assert list(s.counts) == [4, 3, 5] and s.n_tiles == 12 and s.max_tiles == 5
    assert s.tiles("b").shape == (3, 16, 16) and s.tiles("b").dtype == np.uint8
    lot = s.lot(2)
    assert lot.tiles.shape == (5, 1, 16, 16) and lot.tiles.dtype == torch.float32
    assert 0 <= lot.tiles.min() and lot.tiles.max() <= 1
    tiles, idx = s.all_tiles()
    assert tiles.shape == (12, 16, 16) and list(np.bincount(idx)) == [4, 3, 5]
    np.testing.assert_allclose(s.properties, [1000, 1100, 1200])


def test_tensor_conversion_round_trip():
    t = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    assert np.array_equal(to_uint8(to_tensor(t)), t)


def test_incomplete_store_refused(tmp_path):
    table = LotTable(["a", "b"], ("size",), np.array([[0.1], [0.2]]), np.array([1.0, 2.0]))
    TileStore.create(tmp_path / "s.zarr", table, [2, 2], 16)
    TileStore.write_lot(tmp_path / "s.zarr", 0, np.zeros((2, 16, 16), np.uint8), 2)
    assert list(TileStore.lots_written(tmp_path / "s.zarr")) == [True, False]
    with pytest.raises(UserError, match="incomplete"):
        TileStore.open(tmp_path / "s.zarr")


def test_foreign_zarr_refused(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["tool"] = "x"
    with pytest.raises(UserError, match="not an mxplain tile store"):
        TileStore.open(tmp_path / "other.zarr")
    with pytest.raises(UserError, match="does not exist"):
        TileStore.open(tmp_path / "missing.zarr")


@pytest.mark.parametrize("ids,values,prop,match", [
    (["a", "a"], [[0.1], [0.2]], [1.0, 2.0], "duplicate lot id 'a'"),
    (["a", "b"], [[0.1], [1.5]], [1.0, 2.0], "lot 'b' attribute 'size' = 1.5 is outside"),
    (["a", "b"], [[0.1], [np.nan]], [1.0, 2.0], "lot 'b' has no valid value for 'size'"),
    (["a", "b"], [[0.1], [0.3]], [1.0, np.nan], "lot 'b' has no valid"),
    ([], np.zeros((0, 1)), [], "no lots"),
])
def test_lot_table_validation(ids, values, prop, match):
    table = LotTable(ids, ("size",), np.array(values, float), np.array(prop, float))
    with pytest.raises(UserError, match=match):
        table.validate("labels")
