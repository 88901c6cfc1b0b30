"""Generator and measurement module of the synthetic dataset."""

import numpy as np
import pytest

from mxplain_synthetic.generate import ATTRIBUTES, generate_tiles
from mxplain_synthetic.measure import lot_measurement, measure_tiles, segment

MID = {a: 0.5 for a in ATTRIBUTES}


def _tiles(attrs, n=4, size=64, seed=0, workers=1):
    return generate_tiles(attrs, n, size, np.random.default_rng(seed), workers=workers)


@pytest.mark.parametrize("size", [32, 64])
def test_dtype_shape(size):
    t = _tiles(MID, n=3, size=size)
    assert t.dtype == np.uint8 and t.shape == (3, size, size)
    # dark background and bright crystals: a real spread of grey levels
    assert t.min() < 60 and t.max() > 150


def test_deterministic_and_seed_dependent():
    a, b = _tiles(MID, seed=5), _tiles(MID, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _tiles(MID, seed=6))
    # tiles are independent of one another: the first tile of a bigger draw is unchanged
    np.testing.assert_array_equal(_tiles(MID, n=1, seed=5)[0], a[0])


def test_workers_give_identical_tiles():
    np.testing.assert_array_equal(_tiles(MID, n=4, size=32, workers=2),
                                  _tiles(MID, n=4, size=32, workers=1))


def test_bad_attributes():
    with pytest.raises(ValueError, match="size"):
        _tiles({**MID, "size": 1.5})
    with pytest.raises(ValueError, match="lack"):
        _tiles({"size": 0.5})


@pytest.mark.parametrize("j,attr", list(enumerate(ATTRIBUTES)))
def test_measurement_follows_its_attribute(j, attr):
    """Each attribute moves its own measurement monotonically (others fixed at 0.5)."""
    vals = []
    for v in (0.1, 0.5, 0.9):
        vals.append(lot_measurement(_tiles({**MID, attr: v}, n=8, seed=11))[j])
    assert vals[0] < vals[1] < vals[2], (attr, vals)


def test_measurement_units_and_range():
    small = lot_measurement(_tiles({**MID, "size": 0.0}, n=8))
    big = lot_measurement(_tiles({**MID, "size": 1.0}, n=8))
    # mean equivalent diameter in px: nominal 6 px and 26 px (border cuts shrink the large ones)
    assert 4.5 < small[0] < 9 and 13 < big[0] < 30
    smooth = lot_measurement(_tiles({**MID, "facetness": 0.0, "porosity": 0.0}, n=8))
    sharp = lot_measurement(_tiles({**MID, "facetness": 1.0, "porosity": 1.0}, n=8))
    assert smooth[3] < -0.2 and sharp[3] > smooth[3] + 0.3  # correlation-based facet score
    assert smooth[1] < 0.003 and sharp[1] > 0.006  # holes per px^2 of crystal


def test_segment_masks():
    t = _tiles({**MID, "porosity": 0.9}, n=1)[0]
    seg = segment(t)
    for k in ("crystals", "boundaries", "holes"):
        assert seg[k].dtype == bool and seg[k].shape == t.shape
    assert seg["holes"].any() and not (seg["holes"] & ~seg["crystals"]).any()
    assert (seg["boundaries"] & ~seg["crystals"]).sum() == 0
    # crystals are brighter than the background, holes darker than crystal surface
    assert t[seg["crystals"]].mean() > t[~seg["crystals"]].mean() + 40
    assert t[seg["holes"]].mean() < t[seg["crystals"] & ~seg["holes"]].mean()
    few = segment(_tiles({**MID, "porosity": 0.0}, n=1)[0])["holes"].sum()
    assert few < seg["holes"].sum() / 3


def test_measure_tiles_shape_and_empty_tile():
    m = measure_tiles(np.zeros((2, 32, 32), np.uint8))
    assert m.shape == (2, 4) and np.isnan(m).all(axis=0)[[0, 2, 3]].all()


def test_calibrate_smoke():
    from mxplain_synthetic.calibrate import calibrate, format_table

    res = calibrate(n_lots=4, tiles_per_lot=2, tile_size=48, seed=1)
    assert res["nominal"].shape == res["measured"].shape == (4, 4)
    assert set(res["r"]) == set(ATTRIBUTES)
    assert res["r"]["size"] > 0.8  # size alone is clear even with 2 tiles per lot
    assert "| 48 | 2 |" in format_table([res])


def test_render_helpers_match_numpy_and_ndimage_bit_for_bit():
    """The crystal's gradient and Laplacian are hand-written for speed: the same floats as
    ``np.gradient`` and ``ndimage.laplace`` (mode reflect), on the patch sizes crystals use."""
    from scipy import ndimage as ndi

    from mxplain_synthetic.generate import _gradient, _laplace

    rng = np.random.default_rng(0)
    for shape in ((5, 5), (7, 9), (41, 41), (2, 3)):
        h = rng.normal(0, 3, shape) ** 3
        for mine, ref in zip(_gradient(h), np.gradient(h)):
            assert np.array_equal(mine, ref)
        assert np.array_equal(_laplace(h), ndi.laplace(h))


def test_rendered_tiles_are_pinned():
    """Tiles are the data every shipped model was trained on (the quickstart's AttGAN records the
    store's content hash): a change of the renderer that changes one grey level fails here. The
    digest is of the renderer before its speed-up (same tiles, 2026-12-02)."""
    import hashlib

    from mxplain_synthetic.generate import render_tile

    h = hashlib.sha256()
    for i, a in enumerate([(0, 0, 0, 0), (1, 1, 1, 1), (0.2, 0.9, 0.5, 0.3), (0.7, 0.1, 0.8, 0.6)]):
        for size, seed in ((32, 7 + i), (64, 1000 + i)):
            h.update(render_tile(dict(zip(ATTRIBUTES, a)), size, seed).tobytes())
    assert h.hexdigest() == "9192cf9fe86d278ff082a6561c7f38847a1139a1375bdcf0ab0638bb1b94c7d8"
