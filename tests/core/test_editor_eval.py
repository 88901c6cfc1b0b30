"""mxplain.editor_eval on editors whose behaviour is known exactly, and on a tiny AttGAN."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "plugins" / "attgan"))  # attgan_data.py
from attgan_data import ATTRS, make_store, one_thread, stand_in_measure  # noqa: E402, F401

from mxplain import editor_eval as ee
from mxplain.interfaces import Editor, NoLearnedState, RunContext
from mxplain_attgan.editor import AttGANEditor


class OracleEditor(NoLearnedState, Editor):
    """Renders the stand-in tiles' law exactly: grey level from attribute 0, stripes from 1."""

    name = "oracle"

    def __init__(self, offset: float = 0.0):
        self.offset = offset
        self.attributes = ATTRS

    def encode(self, tiles):
        return tiles

    def decode(self, latent, attributes):
        h = latent.shape[-1]
        y = torch.arange(h, dtype=torch.float32)[:, None]
        stripes = torch.sin(2 * np.pi * y / 8.0).expand(h, h)
        a = attributes[:, :, None, None]
        return (0.2 + 0.6 * a[:, 0:1] + 0.15 * a[:, 1:2] * stripes + self.offset).clamp(0, 1)


class IdentityEditor(OracleEditor):
    name = "identity"

    def decode(self, latent, attributes):
        return latent + 0.0 * attributes.sum()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("ee") / "tiles.zarr", n_lots=5, per_lot=6)


def test_oracle_editor_is_faithful_and_disentangled(store):
    r = ee.edit_fidelity(OracleEditor(), store, stand_in_measure, n_tiles_per_lot=4,
                         ctx=RunContext(progress=False))
    assert r["n_tiles"] == 20
    grey, stripes = r["attributes"]["size"], r["attributes"]["porosity"]
    assert grey["spearman"] > 0.95 and grey["spearman_per_tile"] == pytest.approx(1.0)
    assert grey["direction_share"] == 1.0 and stripes["direction_share"] == 1.0
    # a lot at a = 1 - 0.5/5 = 0.9 loses no edit to clipping (both directions change by >= 0.1)
    assert grey["n_edits"] == 40
    assert grey["effect"] > 0 and stripes["effect"] > 0
    # changing the grey level leaves the stripe amplitude alone (no clipping at these levels)
    assert grey["entanglement"] < 0.15 * abs(grey["effect"]) * 0.35 + 0.05
    # attributes 2 and 3 do nothing in the oracle: nothing moves
    assert r["attributes"]["polydispersity"]["direction_share"] == 0.0
    assert np.isnan(r["attributes"]["facetness"]["spearman"])
    assert grey["label_spearman"] > 0.9


def test_identity_editor_moves_nothing(store):
    r = ee.edit_fidelity(IdentityEditor(), store, stand_in_measure, n_tiles_per_lot=2,
                         n_steps=3, ctx=RunContext(progress=False))
    for d in r["attributes"].values():
        assert d["direction_share"] == 0.0 and d["entanglement"] == 0.0
        assert abs(d["spearman"]) < 0.05  # requested value vs tile-to-tile variation only
        assert np.isnan(d["spearman_per_tile"])  # each tile's measurement is constant
    assert r["mean_direction_share"] == 0.0


class EntangledEditor(OracleEditor):
    """Attribute 0 (grey level) also raises the stripe amplitude; attribute 1 only the stripes."""

    name = "entangled"

    def decode(self, latent, attributes):
        a = attributes.clone()
        a[:, 1] = a[:, 1] + attributes[:, 0]
        return super().decode(latent, a * torch.tensor([1.0, 0.5, 1.0, 1.0]))


def test_response_matrix_says_which_attribute_an_edit_also_moves(store):
    kw = dict(n_tiles_per_lot=4, n_steps=2, ctx=RunContext(progress=False))
    clean = ee.edit_fidelity(OracleEditor(), store, stand_in_measure, **kw)["attributes"]
    mixed = ee.edit_fidelity(EntangledEditor(), store, stand_in_measure, **kw)["attributes"]
    for r in (clean, mixed):
        for name, d in r.items():
            assert set(d["response"]) == set(ATTRS)
            assert d["response"][name] == pytest.approx(d["effect"], nan_ok=True)
    # the oracle's grey-level edits leave the stripes alone; the entangled editor's raise them,
    # by as much as a stripe edit of the same request does
    assert abs(clean["size"]["response"]["porosity"]) < 0.1 * clean["porosity"]["effect"]
    assert mixed["size"]["response"]["porosity"] > 0.5 * mixed["porosity"]["effect"] > 0
    assert mixed["size"]["entanglement"] > clean["size"]["entanglement"]
    # the stripe edits move the grey level of neither
    assert abs(mixed["porosity"]["response"]["size"]) < 0.1 * mixed["size"]["effect"]


def test_fidelity_figure_draws_the_response_matrix(store, tmp_path):
    import matplotlib.image as mpimg

    kw = dict(n_tiles_per_lot=2, n_steps=2, ctx=RunContext(progress=False))
    fid = ee.edit_fidelity(EntangledEditor(), store, stand_in_measure, **kw)
    ceiling = ee.edit_fidelity(OracleEditor(), store, stand_in_measure, **kw)
    bare = {**fid, "attributes": {a: {k: v for k, v in d.items() if k != "response"}
                                  for a, d in fid["attributes"].items()}}
    wide = mpimg.imread(ee.fidelity_figure(fid, tmp_path / "r.png", ceiling=ceiling))
    narrow = mpimg.imread(ee.fidelity_figure(bare, tmp_path / "b.png", ceiling=ceiling))
    assert wide.shape[1] > narrow.shape[1] + 300  # a panel of 4.4 in at 110 dpi more


def test_measure_columns_are_matched_by_name(store):
    # a measure that only knows "porosity" (the stripes) in its first column
    r = ee.edit_fidelity(OracleEditor(), store, lambda t: stand_in_measure(t)[:, 1:2],
                         n_tiles_per_lot=2, measure_attributes=("porosity",),
                         ctx=RunContext(progress=False))
    assert list(r["attributes"]) == ["porosity"]
    assert r["attributes"]["porosity"]["direction_share"] == 1.0
    with pytest.raises(ValueError, match="measured"):
        ee.edit_fidelity(OracleEditor(), store, stand_in_measure, measure_attributes=("x",))


def test_reconstruction_error(store):
    r = ee.reconstruction_error(IdentityEditor(), store, n_tiles_per_lot=3)
    assert r["l1"] == 0.0 and r["n_tiles"] == 15
    r = ee.reconstruction_error(OracleEditor(offset=0.1), store, n_tiles_per_lot=3)
    r0 = ee.reconstruction_error(OracleEditor(), store, n_tiles_per_lot=3)
    assert r0["l1"] < 0.05  # the oracle renders the lot's tiles up to their noise
    assert r["l1"] > r0["l1"] + 0.05 and r["psnr"] < r0["psnr"]


def test_edit_grid_figure(store, tmp_path):
    import matplotlib.image as mpimg

    p = ee.edit_grid_figure(OracleEditor(), store, tmp_path / "f" / "grid.png", n_tiles=2)
    img = mpimg.imread(p)
    assert img.shape[0] > 300 and img.shape[1] > 400  # 4 rows x 6 columns of panels


def test_on_a_tiny_attgan(store, tmp_path):
    ed = AttGANEditor(enc_dim=4, dec_dim=4, dis_dim=4, dis_fc_dim=8, n_layers=3, epochs=1,
                      batch_size=10)
    ed.fit(store, RunContext(progress=False))
    r = ee.edit_fidelity(ed, store, stand_in_measure, n_tiles_per_lot=2, n_steps=3,
                         ctx=RunContext(progress=False))
    assert set(r["attributes"]) == set(ATTRS)
    for d in r["attributes"].values():
        assert 0.0 <= d["direction_share"] <= 1.0 and d["entanglement"] >= 0
        assert d["n_edits"] + round(d["unmeasured_share"] * d["n_edits"]) <= 20
    rec = ee.reconstruction_error(ed, store, n_tiles_per_lot=2)
    assert 0 < rec["l1"] < 1
    assert ee.edit_grid_figure(ed, store, tmp_path / "g.png").exists()
