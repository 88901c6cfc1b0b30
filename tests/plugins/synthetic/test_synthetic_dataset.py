"""The synthetic dataset plugin: law, tile store, resume, parameters."""

import numpy as np
import pytest
import torch

import mxplain_synthetic.lots as lots_mod  # the lots are rendered there
from mxplain import plugins
from mxplain.errors import UserError
from mxplain.interfaces import RunContext
from mxplain.store import TileStore
from mxplain_synthetic.dataset import DEFAULT_LAW, SyntheticLots

CTX = RunContext(progress=False)
SMALL = dict(n_lots=4, tiles_per_lot=3, tile_size=32, seed=3)


def test_registered():
    assert plugins.get("dataset", "synthetic") is SyntheticLots
    assert SyntheticLots.param_defaults()["n_lots"] == 16


def test_law_and_true_sensitivity():
    ds = SyntheticLots(n_lots=12, lot_noise=0.0)
    assert ds.true_sensitivity() == {"size": -300.0, "porosity": 75.0, "polydispersity": 150.0,
                                     "facetness": 225.0}
    a = ds.lot_attributes()
    assert a.shape == (12, 4) and a.min() >= 0.05 and a.max() <= 0.95
    # Latin hypercube: one lot per twelfth of [0.05, 0.95] in every attribute
    for j in range(4):
        assert sorted(((a[:, j] - 0.05) / 0.9 * 12).astype(int)) == list(range(12))
    expected = 2150 + 150 * sum(DEFAULT_LAW[k] * (a[:, j] - 0.5)
                                for j, k in enumerate(("size", "porosity", "polydispersity",
                                                       "facetness")))
    np.testing.assert_allclose(ds.lot_properties(), expected)
    flipped = SyntheticLots(n_lots=12, lot_noise=0.0,
                            law={k: -v for k, v in DEFAULT_LAW.items()})
    p, q = ds.lot_properties(), flipped.lot_properties()
    np.testing.assert_allclose(p - 2150, -(q - 2150))
    np.testing.assert_array_equal(np.argsort(p), np.argsort(q)[::-1])
    # a partial law: attributes left out have no effect
    only = SyntheticLots(n_lots=12, lot_noise=0.0, law={"size": 1.0})
    np.testing.assert_allclose(only.lot_properties(), 2150 + 150 * (a[:, 0] - 0.5))


def test_lot_noise_scale():
    a = SyntheticLots(n_lots=200, lot_noise=0.0, attribute_sampling="uniform").lot_properties()
    b = SyntheticLots(n_lots=200, lot_noise=0.1, attribute_sampling="uniform").lot_properties()
    assert 10 < np.std(b - a) < 20  # 0.1 * 150 psi


def test_build_round_trip(tmp_path):
    ds = SyntheticLots(**SMALL)
    store = ds.build(tmp_path / "tiles.zarr", CTX)
    assert store.n_lots == 4 and store.tile_size == 32 and store.attributes == ds.attributes
    assert store.property_name == "peak_stress" and store.property_units == "psi"
    np.testing.assert_allclose(store.lot_attributes, ds.lot_attributes(), atol=1e-6)
    np.testing.assert_allclose(store.properties, ds.lot_properties())
    assert store.true_sensitivity() == pytest.approx(ds.true_sensitivity())
    assert store.attrs["source"]["params"]["law"] == DEFAULT_LAW
    for i in range(4):  # every lot regenerates alone to the stored tiles
        np.testing.assert_array_equal(store.tiles(i), ds.lot_tiles(i))
    lot = store.lot(1)
    assert lot.tiles.shape == (3, 1, 32, 32) and lot.tiles.dtype == torch.float32


def test_resume_after_interruption(tmp_path, monkeypatch):
    ds = SyntheticLots(**SMALL)
    ref = ds.build(tmp_path / "ref.zarr", CTX)
    real, calls = lots_mod.generate_tiles, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    path = tmp_path / "tiles.zarr"
    monkeypatch.setattr(lots_mod, "generate_tiles", failing)
    with pytest.raises(KeyboardInterrupt):
        ds.build(path, CTX)
    with pytest.raises(UserError, match="incomplete"):
        TileStore.open(path)
    assert TileStore.lots_written(path).tolist() == [True, True, False, False]
    calls.clear()

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(lots_mod, "generate_tiles", counting)
    store = ds.build(path, CTX, resume=True)
    assert len(calls) == 2  # only the two missing lots were generated
    for i in range(4):
        np.testing.assert_array_equal(store.tiles(i), ref.tiles(i))
    # resuming a complete store generates nothing
    calls.clear()
    ds.build(path, CTX, resume=True)
    assert calls == []


def test_resume_with_other_params_and_overwrite(tmp_path):
    path = tmp_path / "tiles.zarr"
    SyntheticLots(**SMALL).build(path, CTX)
    with pytest.raises(UserError, match="seed"):
        SyntheticLots(**{**SMALL, "seed": 4}).build(path, CTX, resume=True)
    with pytest.raises(UserError, match="law"):
        SyntheticLots(**SMALL, law={"size": 1.0}).build(path, CTX, resume=True)
    # workers does not change the tiles: resuming with another value is fine
    SyntheticLots(**SMALL, workers=2).build(path, CTX, resume=True)
    # without resume an existing store is replaced
    store = SyntheticLots(**{**SMALL, "n_lots": 2}).build(path, CTX)
    assert store.n_lots == 2


@pytest.mark.parametrize("params,key", [
    ({"n_lots": 1}, "n_lots"),
    ({"n_lots": 2.5}, "n_lots"),
    ({"tile_size": 16}, "tile_size"),
    ({"tiles_per_lot": 0}, "tiles_per_lot"),
    ({"seed": -1}, "seed"),
    ({"workers": 0}, "workers"),
    ({"property_std": 0.0}, "property_std"),
    ({"lot_noise": -0.1}, "lot_noise"),
    ({"property_mean": "high"}, "property_mean"),
    ({"attribute_sampling": "sobol"}, "attribute_sampling"),
    ({"law": {"sizes": 1.0}}, "sizes"),
    ({"law": {"size": "big"}}, "size"),
    ({"law": [1, 2]}, "law"),
])
def test_bad_params(params, key):
    with pytest.raises(UserError, match=key):
        SyntheticLots(**params)


def test_uniform_sampling_and_measure_via_dataset():
    ds = SyntheticLots(n_lots=5, attribute_sampling="uniform", tile_size=32, tiles_per_lot=2)
    a = ds.lot_attributes()
    assert a.shape == (5, 4) and not np.allclose(a, SyntheticLots(n_lots=5).lot_attributes())
    tiles = ds.lot_tiles(0)
    m8 = ds.measure(tiles)
    mt = ds.measure(torch.from_numpy(tiles.astype(np.float32) / 255.0)[:, None])
    np.testing.assert_allclose(m8, mt, equal_nan=True)
    one = ds.segment(tiles[0])
    assert set(one) == set(SyntheticLots.structures) == {"crystals", "boundaries", "holes"}
    both = ds.segment(tiles[:2])  # batched, as ExplainContext.segment is called
    for name, mask in both.items():
        assert mask.shape == (2, 32, 32) and mask.dtype == bool
        np.testing.assert_array_equal(mask[0], one[name])
    assert both["holes"].any() or both["boundaries"].any()
    assert SyntheticLots.provides() == {"measure", "segment", "edit_fidelity_ceiling"}
    assert SyntheticLots.structures["holes"] == "porosity"
    assert SyntheticLots.structures["boundaries"] == "size"


def test_resume_over_a_folder_that_is_not_a_store_is_refused_and_kept(tmp_path):
    path = tmp_path / "tiles.zarr"
    path.mkdir()
    (path / "junk").write_text("not zarr")
    with pytest.raises(UserError, match="not an mxplain store"):
        SyntheticLots(**SMALL).build(path, CTX, resume=True)
    assert (path / "junk").read_text() == "not zarr"


def test_a_killed_creation_leaves_no_store_and_is_cleared(tmp_path):
    from mxplain.outputs import CREATING, creating_path

    path = tmp_path / "tiles.zarr"
    left = creating_path(path)  # what a kill during the template's creation leaves
    (left / "store").mkdir(parents=True)
    (left / CREATING).write_bytes(b"")
    (left / "store" / "zarr.json").write_text("{")
    store = SyntheticLots(**SMALL).build(path, CTX, resume=True)
    assert store.n_lots == 4 and TileStore.lots_written(path).all() and not left.exists()
