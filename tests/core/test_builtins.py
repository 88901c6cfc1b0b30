"""mxplain.builtins: the core's own ``store`` dataset, registered through the entry point group like
any plugin, that uses an existing tile store."""

from __future__ import annotations

import pytest

from mxplain import plugins
from mxplain.builtins import StoreDataset, mxplain_datasets
from mxplain.errors import UserError
from mxplain.interfaces import RunContext


def test_store_is_registered_by_the_core_distribution():
    assert mxplain_datasets() == [StoreDataset]
    assert plugins.get("dataset", "store") is StoreDataset
    row = next(r for r in plugins.list_components() if (r["name"], r["kind"]) ==
               ("store", "dataset"))
    assert row["distribution"] == "mxplain"


def test_data_shape_is_read_from_the_store(small_store):
    shape = StoreDataset.data_shape({"path": str(small_store.path)})
    assert (shape.n_lots, shape.n_tiles, shape.max_tiles_per_lot, shape.tile_size) == (3, 12, 5, 16)
    assert shape.attributes == ("size", "porosity")


def test_build_opens_the_store_without_changing_it(small_store, tmp_path):
    before = small_store.tiles("b").copy()
    store = StoreDataset(path=str(small_store.path)).build(tmp_path / "run", RunContext())
    assert store.lot_ids == ["a", "b", "c"] and store.counts.tolist() == [4, 3, 5]
    assert (store.tiles("b") == before).all() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("params,needle", [
    ({}, 'needs path = "<tile store>"'),
    ({"path": ""}, 'needs path = "<tile store>"'),
    ({"path": "x.zarr", "attribute_descriptions": {"size": 3}}, "size"),
])
def test_check_params_refuses_a_missing_path_and_bad_descriptions(params, needle):
    with pytest.raises(UserError) as info:
        StoreDataset.check_params(params)
    assert needle in str(info.value)


def test_a_path_that_is_not_a_store_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        StoreDataset.data_shape({"path": str(tmp_path / "missing.zarr")})
    with pytest.raises(UserError, match="needs path"):
        StoreDataset().build(tmp_path, RunContext())
