"""mxplain.studies.generators: the augmentation study's thresholded Gaussian random field and the
latent-neighbourhood samples of an editor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mxplain import plugins
from mxplain.errors import UserError
from mxplain.simulate import PhaseConductivity, Simulator
from mxplain.studies.generators import (
    GENERATORS,
    ThresholdedGRF,
    grf_maps,
    latent_samples,
    pore_maps,
    two_point,
)


@pytest.fixture(scope="module")
def simulator():
    return plugins.create("dataset", "synthetic").simulator()


def test_two_point_of_a_checkerboard_and_of_stripes():
    y, x = np.mgrid[:16, :16]
    checker = ((x + y) % 2 == 0)[None]
    np.testing.assert_allclose(two_point(checker, 4), [-1.0, 1.0, -1.0, 1.0])
    stripes = (x % 2 == 0)[None]  # anticorrelated along x at odd lags, constant along y
    np.testing.assert_allclose(two_point(stripes, 4), [0.0, 1.0, 0.0, 1.0])
    assert two_point(np.ones((2, 8, 8), bool), 3).tolist() == [0.0] * 3


def test_grf_maps_have_the_exact_fraction_and_grow_with_the_correlation_length():
    rng = np.random.default_rng(0)
    short, long_ = (grf_maps(16, 32, c, 0.3, np.random.default_rng(4)) for c in (0.5, 4.0))
    assert short.shape == (16, 32, 32) and short.dtype == bool
    np.testing.assert_array_equal(short.reshape(16, -1).sum(1), round(0.3 * 1024))
    np.testing.assert_array_equal(long_.reshape(16, -1).sum(1), round(0.3 * 1024))
    lag1 = [two_point(grf_maps(16, 32, c, 0.3, np.random.default_rng(4)))[0] for c in (0.5, 1, 2, 4)]
    assert np.all(np.diff(lag1) > 0.09) and lag1[0] < 0.25 and lag1[-1] > 0.8
    np.testing.assert_array_equal(grf_maps(3, 16, 2.0, 0.5, np.random.default_rng(1)),
                                  grf_maps(3, 16, 2.0, 0.5, np.random.default_rng(1)))
    assert not np.array_equal(grf_maps(3, 16, 2.0, 0.5, rng), grf_maps(3, 16, 2.0, 0.5, rng))


def test_pore_maps_need_a_two_phase_simulator():
    tiles = np.array([[[0, 200], [100, 255]]], np.uint8)
    np.testing.assert_array_equal(pore_maps(PhaseConductivity(), tiles), [[[True, False],
                                                                          [True, False]]])

    class Other(Simulator):
        def simulate(self, tiles):
            return np.zeros(len(tiles))

    with pytest.raises(UserError, match="two-phase simulator.*not yet supported"):
        pore_maps(Other(), tiles)


def test_grf_render_uses_the_fitted_grey_levels_and_describe_is_plain_data():
    tiles = np.full((2, 16, 16), 200, np.uint8)
    tiles[:, :, :8] = 50  # left half pore (below 0.5), right half solid
    grf = ThresholdedGRF(correlation=1.5).fit(tiles, PhaseConductivity())
    assert (grf.fraction_, grf.correlation_, grf.size_) == (0.5, 1.5, 16)
    assert grf.pore_grey_ == pytest.approx(50 / 255) and grf.solid_grey_ == pytest.approx(200 / 255)
    out = grf.sample(3, np.random.default_rng(0))
    assert out.dtype == np.uint8 and sorted(np.unique(out)) == [50, 200]
    assert np.all((out == 50).reshape(3, -1).sum(1) == 128)
    d = grf.describe()
    assert d["pore_fraction"] == 0.5 and d["correlation_px"] == 1.5 and len(d["target_two_point"]) == 8
    with pytest.raises(UserError, match="not in"):
        ThresholdedGRF(fraction=1.0).fit(tiles, PhaseConductivity())
    assert GENERATORS == ("texturevae", "grf")


def test_grf_hits_its_volume_fraction(simulator):
    rng = np.random.default_rng(0)
    grf = ThresholdedGRF(fraction=0.4, correlation=2.0)
    authentic = plugins.create("dataset", "synthetic", n_lots=2, tiles_per_lot=4, tile_size=32,
                               seed=5).lot_tiles(0)
    grf.fit(authentic, simulator)
    maps = grf.sample_maps(12, rng)
    assert maps.shape == (12, 32, 32)
    np.testing.assert_array_equal(maps.reshape(12, -1).sum(1), round(0.4 * 1024))
    tiles = grf.render(maps)
    # the simulator's own phase map of the rendered tiles is the GRF's pore space
    seen = simulator.phases(tiles)
    assert np.mean(seen == maps) > 0.97
    assert abs(seen.mean() - 0.4) < 0.02
    # fitted without a fraction: the authentic tiles' mean pore fraction, for every tile
    free = ThresholdedGRF().fit(authentic, simulator)
    assert free.fraction_ == pytest.approx(simulator.phases(authentic).mean())
    k = round(free.fraction_ * 1024)
    np.testing.assert_array_equal(free.sample_maps(5, rng).reshape(5, -1).sum(1), k)


def test_grf_fit_recovers_a_known_correlation_length(simulator):
    truth = ThresholdedGRF(fraction=0.5, correlation=3.0)
    truth.size_, truth.fraction_, truth.correlation_ = 32, 0.5, 3.0
    truth.pore_grey_, truth.solid_grey_ = 0.1, 0.6
    tiles = truth.sample(32, np.random.default_rng(1))
    fitted = ThresholdedGRF(seed=2).fit(tiles, simulator)
    assert abs(fitted.correlation_ - 3.0) <= 0.5
    assert fitted.fraction_ == pytest.approx(0.5, abs=0.02)
    assert two_point(np.zeros((2, 8, 8), bool)).tolist() == [0.0] * 8


class _LineEditor:
    """Latent = a tile's mean grey level; decode paints that level (and records the labels)."""

    def encode(self, x):
        return torch.stack([x.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)) * 0], 1)

    def decode(self, z, a):
        self.labels = a
        return z[:, :1, None, None].clamp(0, 1).expand(len(z), 1, 4, 4)


def test_latent_samples_lie_between_two_encodings_and_interpolate_the_labels():
    tiles = np.stack([np.full((4, 4), v, np.uint8) for v in (0, 100, 255)])
    attrs = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    editor = _LineEditor()
    out, draw = latent_samples(editor, tiles, attrs, 7, np.random.default_rng(2), noise=0.0,
                               batch_size=4)
    assert out.shape == (7, 4, 4) and out.dtype == np.uint8 and draw["noise"] == 0.0
    pairs, t = np.array(draw["pairs"]), np.array(draw["weights"])
    grey = tiles[:, 0, 0] / 255.0
    expected = (1 - t) * grey[pairs[:, 0]] + t * grey[pairs[:, 1]]
    np.testing.assert_array_equal(out[:, 0, 0], np.rint(expected * 255).astype(np.uint8))
    np.testing.assert_allclose(editor.labels.numpy(),  # the last batch: draws 4..6
                               ((1 - t)[:, None] * attrs[pairs[:, 0]]
                                + t[:, None] * attrs[pairs[:, 1]])[4:], atol=1e-6)
    assert draw["latent_spread_mean"] == pytest.approx(np.std(grey) / 2)
    again, _ = latent_samples(editor, tiles, attrs, 7, np.random.default_rng(2), noise=0.0)
    np.testing.assert_array_equal(out, again)
