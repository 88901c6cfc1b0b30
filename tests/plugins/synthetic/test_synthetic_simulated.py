"""``[data] property = "simulated"``: every tile labelled by its own simulated pore diffusivity."""

import numpy as np
import pytest

from mxplain.errors import UserError
from mxplain.interfaces import Dataset, RunContext
from mxplain.simulate import Simulator
from mxplain_synthetic.dataset import SyntheticLots
from mxplain_synthetic.physics import pore_phase


def _build(tmp_path, name, **kw):
    ds = SyntheticLots(n_lots=2, tiles_per_lot=3, tile_size=32, seed=4, **kw)
    return ds, ds.build(tmp_path / name, RunContext(progress=False))


def test_simulated_store_has_per_tile_truth(tmp_path):
    ds, store = _build(tmp_path, "sim.zarr", property="simulated")
    assert store.property_name == "pore_diffusivity"
    assert store.property_units == "D_eff / D_pore"
    assert ds.true_sensitivity() is None and store.true_sensitivity() is None
    assert store.tile_properties.shape == (2, 3)
    for i in range(2):
        np.testing.assert_array_equal(store.tile_properties[i],
                                      ds.simulator().simulate(store.tiles(i)))
    np.testing.assert_allclose(store.properties, store.tile_properties.mean(1), rtol=1e-12)
    np.testing.assert_allclose(store.tile_properties.ravel(),
                               [0.15906, 0.24192, 0.14821, 0.07225, 0.15120, 0.58609], atol=5e-5)
    assert store.attrs["simulator"]["property_name"] == "pore_diffusivity"


def test_law_store_unchanged_and_hash_shared_with_simulated(tmp_path):
    _, law = _build(tmp_path, "law.zarr")
    _, sim = _build(tmp_path, "sim.zarr", property="simulated")
    assert law.tile_properties is None
    assert "property" not in law.attrs["source"]["params"]  # sources of older stores still resume
    assert law.content_hash(include_property=False) == sim.content_hash(include_property=False)
    assert law.content_hash() != sim.content_hash()


def test_bad_property_key():
    with pytest.raises(UserError, match=r"\[data\] property"):
        SyntheticLots(property="measured")


def test_simulator_is_declared_on_the_interface():
    assert Dataset.simulator is not SyntheticLots.simulator
    assert isinstance(SyntheticLots().simulator(), Simulator)


def test_pore_phase_rule():
    tile = np.full((32, 32), 0.1)
    tile[8:24, 8:24] = 0.6  # one bright crystal on a dark background
    pores = pore_phase(tile)
    assert not pores[12:20, 12:20].any() and pores[:4].all()
    assert pore_phase(np.full((8, 8), 0.2)).all()  # a flat dark tile is all pore


def test_predictor_scored_against_each_tile():
    from mxplain.evaluate import tile_truth_metrics

    truth = np.array([[1.0, 2.0, np.nan], [3.0, 5.0, 4.0]])
    m = tile_truth_metrics([np.array([1.0, 2.0]), np.array([3.0, 5.0, 5.0])], truth)
    assert m["tiles"] == 5 and m["rmse"] == pytest.approx(np.sqrt(1 / 5))
    assert m["r2"] == pytest.approx(1 - 1 / np.sum((truth[np.isfinite(truth)] - 3) ** 2))
