"""The synthetic measurement and the oracle's renders remembered by content: the same numbers as
computing every time (the editor evaluation's fidelity and its ceiling pinned), fewer computed."""

import numpy as np
import pytest

from mxplain.editor_eval import edit_fidelity
from mxplain.interfaces import RunContext
from mxplain_synthetic import measure, oracle
from mxplain_synthetic.dataset import SyntheticLots
from mxplain_synthetic.generate import render_tile

CTX = RunContext(progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    ds = SyntheticLots(n_lots=4, tiles_per_lot=3, tile_size=32, seed=3)
    store = ds.build(tmp_path_factory.mktemp("remembered") / "tiles.zarr", CTX)
    return ds, store


@pytest.fixture
def counted(monkeypatch):
    counts = {"measure": 0, "render": 0}

    def m(tile):
        counts["measure"] += 1
        return measure_tile(tile)

    def r(*args):
        counts["render"] += 1
        return render_tile(*args)

    measure_tile = measure.measure_tile
    monkeypatch.setattr(measure, "measure_tile", m)
    monkeypatch.setattr(oracle, "render_tile", r)
    measure._cache.clear()
    oracle._renders.clear()
    yield counts
    measure._cache.clear()
    oracle._renders.clear()


def test_measure_tiles_remembers_by_content(built, counted):
    _, store = built
    tiles = store.tiles(0)
    first = measure.measure_tiles(np.concatenate([tiles, tiles[:1]]))
    assert counted["measure"] == 3  # the repeated tile is measured once
    np.testing.assert_array_equal(first[:3], np.stack([measure.measure_tile(t) for t in tiles]))
    np.testing.assert_array_equal(first[3], first[0])
    first[0, 0] = -1.0  # the caller's array is its own
    again = measure.measure_tiles(tiles)
    assert counted["measure"] == 3 + 3  # the three direct calls above, none from measure_tiles
    assert again[0, 0] != -1.0
    other = tiles[:1].copy()
    other[0, 0, 0] ^= 1
    measure.measure_tiles(other)
    assert counted["measure"] == 7  # one grey level differs: measured


def test_fidelity_and_ceiling_identical_with_and_without_remembering(built, counted, monkeypatch):
    ds, store = built
    kwargs = {"n_tiles_per_lot": 3, "ctx": CTX, "seed": 0, "n_steps": 3,
              "measure_attributes": store.attributes}
    ed = oracle.SyntheticOracleEditor.for_dataset(ds, store)
    monkeypatch.setattr(measure, "CACHE_TILES", 0)
    monkeypatch.setattr(oracle, "RENDER_CACHE_BYTES", 0)
    fresh = (edit_fidelity(ed, store, ds.measure, **kwargs),
             ds.edit_fidelity_ceiling(store, ds.measure, **kwargs))
    every = dict(counted)
    counted.update(measure=0, render=0)
    monkeypatch.setattr(measure, "CACHE_TILES", 65536)
    monkeypatch.setattr(oracle, "RENDER_CACHE_BYTES", 64 << 20)
    ed = oracle.SyntheticOracleEditor.for_dataset(ds, store)
    kept = (edit_fidelity(ed, store, ds.measure, **kwargs),
            ds.edit_fidelity_ceiling(store, ds.measure, **kwargs))
    n = 4 * 3
    per_call = n * (2 + 4 * (3 + 2))  # originals, reconstructions, 4 x (sweep + -/+ delta)
    assert every == {"measure": 2 * per_call, "render": 2 * (per_call - n)}
    assert counted["measure"] < every["measure"] / 2  # the second call is all remembered
    assert counted["render"] < every["render"] / 2
    np.testing.assert_equal(kept, fresh)  # NaN == NaN here


def test_workers_measure_and_render_as_the_serial_path(built, tmp_path):
    ds, store = built
    kwargs = {"n_tiles_per_lot": 3, "ctx": CTX, "seed": 0, "n_steps": 3,
              "measure_attributes": store.attributes}
    measure._cache.clear()
    oracle._renders.clear()
    serial = ds.edit_fidelity_ceiling(store, ds.measure, **kwargs)
    m_serial = ds.measure(store.tiles(1))
    measure._cache.clear()
    oracle._renders.clear()
    pooled = SyntheticLots(**{**ds.get_params(), "workers": 2})
    np.testing.assert_array_equal(pooled.measure(store.tiles(1)), m_serial)
    measure._cache.clear()
    np.testing.assert_equal(pooled.edit_fidelity_ceiling(store, pooled.measure, **kwargs), serial)
    assert np.isfinite(serial["mean_direction_share"])
    measure._cache.clear()
    oracle._renders.clear()
