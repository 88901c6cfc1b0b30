"""The synthetic generator as an editor (oracle.py): fit, save/load, the edit-fidelity ceiling,
and the explainers run with it."""

import numpy as np
import pytest
import torch

from mxplain.errors import UserError
from mxplain.interfaces import RunContext
from mxplain.store import to_tensor
from mxplain_synthetic.dataset import SyntheticLots
from mxplain_synthetic.generate import render_tile
from mxplain_synthetic.oracle import SyntheticOracleEditor

CTX = RunContext(progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    ds = SyntheticLots(n_lots=6, tiles_per_lot=4, tile_size=64, seed=5)
    store = ds.build(tmp_path_factory.mktemp("oracle") / "tiles.zarr", CTX)
    return ds, store


def test_tile_seeds_give_the_stored_tiles_back(built):
    ds, store = built
    seeds = ds.tile_seeds(2)
    attrs = dict(zip(store.attributes, map(float, store.lot_attributes[2])))
    for j in (0, 3):
        np.testing.assert_array_equal(render_tile(attrs, 64, int(seeds[j])), store.tiles(2)[j])


def test_oracle_reconstructs_exactly_and_edits_the_attribute(built):
    ds, store = built
    ed = SyntheticOracleEditor()
    assert ed.fit(store, CTX) == {"tiles_indexed": 24}
    tiles = to_tensor(store.tiles(1))
    a = torch.from_numpy(np.repeat(store.lot_attributes[1:2], 4, 0).astype(np.float32))
    z = ed.encode(tiles)
    assert z.dtype == torch.int64 and z.tolist() == ds.tile_seeds(1).tolist()
    assert torch.equal(ed.decode(z, a), tiles)  # the lot's own attributes: the tile itself
    big = a.clone()
    big[:, 0] = 1.0
    small = a.clone()
    small[:, 0] = 0.0
    m_big = ds.measure(ed.decode(z, big))[:, 0]
    m_small = ds.measure(ed.decode(z, small))[:, 0]
    assert (m_big > m_small).all()  # measured crystal size follows the requested size


def test_oracle_refuses_foreign_tiles(built):
    ds, store = built
    with pytest.raises(UserError, match="own synthetic lots"):
        SyntheticOracleEditor.for_dataset(ds, store).encode(torch.rand(1, 1, 64, 64))


def test_fit_needs_a_synthetic_store(tmp_path):
    class Foreign:
        attrs = {"source": {"dataset": "folder"}}
        path = tmp_path / "x.zarr"

    with pytest.raises(UserError, match="built by the synthetic dataset"):
        SyntheticOracleEditor().fit(Foreign(), CTX)


def test_save_and_load_render_the_same_edits(built, tmp_path):
    ds, store = built
    ed = SyntheticOracleEditor()
    ed.fit(store, CTX)
    ed.save(tmp_path / "oracle.pt")
    back = SyntheticOracleEditor.load(tmp_path / "oracle.pt")  # no store: lots rendered again
    x = to_tensor(store.tiles(3)[:2])
    a = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.1, 0.9, 0.2, 0.8]])
    assert torch.equal(back.edit(x, a), ed.edit(x, a))


def test_edit_fidelity_ceiling(built):
    ds, store = built
    r = ds.edit_fidelity_ceiling(store, n_tiles_per_lot=4, ctx=CTX, seed=0, n_steps=3)
    assert r["n_tiles"] == 24
    shares = {a: v["direction_share"] for a, v in r["attributes"].items()}
    assert set(shares) == {"size", "porosity", "polydispersity", "facetness"}
    # the generator itself moves size and facetness the requested way nearly always
    assert shares["size"] >= 0.8 and shares["facetness"] >= 0.7
    assert all(0.5 < s <= 1.0 for s in shares.values())
    again = ds.edit_fidelity_ceiling(store, n_tiles_per_lot=4, ctx=CTX, seed=0, n_steps=3)
    assert again["attributes"] == r["attributes"]  # deterministic
