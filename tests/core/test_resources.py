"""mxplain.resources: checkpoints named as package resources, and the refusal of a checkpoint
trained on another tile store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mxplain
from mxplain import resources
from mxplain.checkpoint import FORMAT, save_atomic
from mxplain.errors import UserError
from mxplain.store import LotTable, TileStore


def test_package_references_resolve_inside_the_installed_package():
    assert resources.is_package_ref("package:mxplain/errors.py")
    assert not resources.is_package_ref(Path("package:mxplain/errors.py"))
    assert resources.resolve_checkpoint("models/p.pt") == Path("models/p.pt")
    path = resources.resolve_checkpoint("package:mxplain/errors.py")
    assert path == Path(mxplain.__file__).parent / "errors.py" and path.is_file()


@pytest.mark.parametrize("ref, words", [
    ("package:mxplain", "expected 'package:<package>/<path inside it>'"),
    ("package:mxplain/../x.pt", "expected"),
    ("package:no_such_pkg_h3/a.pt", "no installed package 'no_such_pkg_h3'"),
    ("package:mxplain/no/such.pt", "package 'mxplain' ships no file 'no/such.pt'"),
])
def test_bad_package_references_are_one_sentence(ref, words):
    with pytest.raises(UserError) as info:
        resources.resolve_checkpoint(ref)
    assert words in str(info.value) and "\n" not in str(info.value)


def _store(path, tiles_of_lot0):
    table = LotTable(["a", "b"], ("size",), np.array([[0.1], [0.9]]), np.array([1.0, 2.0]))
    TileStore.create(path, table, [2, 2], 8)
    TileStore.write_lot(path, 0, tiles_of_lot0, 2)
    TileStore.write_lot(path, 1, np.full((2, 8, 8), 9, np.uint8), 2)
    TileStore.mark_complete(path)
    return TileStore.open(path)


def _checkpoint(path, **provenance):
    payload = {"format": FORMAT, "kind": "editor", "name": "x", "params": {}, "state": {}}
    if provenance:
        payload["provenance"] = provenance
    save_atomic(payload, path)
    return path


def test_a_checkpoint_trained_on_another_store_is_refused(tmp_path):
    store = _store(tmp_path / "a.zarr", np.zeros((2, 8, 8), np.uint8))
    other = _store(tmp_path / "b.zarr", np.ones((2, 8, 8), np.uint8))
    mine = _checkpoint(tmp_path / "mine.pt", tile_store_content_hash=store.content_hash(),
                       command="mxplain run c.toml")
    assert resources.check_trained_on(mine, store, "editor")["command"] == "mxplain run c.toml"
    with pytest.raises(UserError, match=r"editor checkpoint .* another tile store .*retrain it "
                                        r"with `mxplain run c.toml`"):
        resources.check_trained_on(mine, other, "editor")
    unrecorded = _checkpoint(tmp_path / "plain.pt")
    assert resources.check_trained_on(unrecorded, other, "editor") == {}
    assert resources.checkpoint_provenance(unrecorded) == {}


def test_an_editors_hash_without_the_property_serves_another_property_law(tmp_path):
    store = _store(tmp_path / "a.zarr", np.zeros((2, 8, 8), np.uint8))
    table = LotTable(["a", "b"], ("size",), np.array([[0.1], [0.9]]), np.array([5.0, 7.0]))
    TileStore.create(tmp_path / "c.zarr", table, [2, 2], 8)
    for i, v in enumerate((0, 9)):
        TileStore.write_lot(tmp_path / "c.zarr", i, np.full((2, 8, 8), v, np.uint8), 2)
    TileStore.mark_complete(tmp_path / "c.zarr")
    relabelled = TileStore.open(tmp_path / "c.zarr")
    assert relabelled.content_hash() != store.content_hash()
    editor = _checkpoint(tmp_path / "e.pt", tile_store_hash_parts=["lot ids", "attributes", "tiles"],
                         tile_store_content_hash=store.content_hash(include_property=False))
    assert resources.check_trained_on(editor, relabelled, "editor")["tile_store_content_hash"]
    predictor = _checkpoint(tmp_path / "p.pt", tile_store_content_hash=store.content_hash())
    with pytest.raises(UserError, match="another tile store"):
        resources.check_trained_on(predictor, relabelled, "predictor")
