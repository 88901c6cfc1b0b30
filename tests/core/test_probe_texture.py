"""mxplain.probe_texture: the grey-level and texture statistics of the attribute probe, on tiles
whose values are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from mxplain.probe_texture import TEXTURE_NAMES, texture_features


def _named(tiles):
    f = texture_features(tiles)
    assert f.shape == (len(tiles), len(TEXTURE_NAMES))
    return [dict(zip(TEXTURE_NAMES, row)) for row in f]


def test_a_checkerboard_has_its_known_statistics():
    y, x = np.mgrid[:32, :32]
    (f,) = _named((((x + y) % 2) * 255).astype(np.uint8)[None])
    assert f["mean"] == 0.5 and f["std"] == pytest.approx(0.5 + 1e-6)  # std + 1e-6 (no division by 0)
    assert f["hist_0"] == f["hist_15"] == 0.5 and sum(f[f"hist_{i}"] for i in range(16)) == 1.0
    assert (f["q5"], f["q50"], f["q95"]) == (0.0, 0.5, 1.0)
    assert f["kurtosis"] == pytest.approx(1.0, abs=1e-4) and f["skew"] == pytest.approx(0.0)
    assert f["lag1_x"] == f["lag1_y"] == pytest.approx(2.0, abs=1e-4)  # |diff| 1 over std 0.5
    assert f["lag2_x"] == f["lag8_y"] == 0.0
    assert f["pool2_std"] == pytest.approx(0.0)  # every 2x2 box averages to 0.5
    assert f["ring_7"] == pytest.approx(1.0)  # all the power at the Nyquist corner
    assert f["dark_1sd"] == 0.0 and f["bright_1sd"] == 0.0  # every pixel exactly 1 sd away


def test_smooth_ramps_and_noise_are_told_apart():
    x = np.linspace(0, 255, 32)
    ramp = np.broadcast_to(x, (32, 32)).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    r, n = _named(np.stack([ramp, noise]))
    assert r["lag1_y"] == 0.0 and r["lag1_x"] < 0.3 < 1.0 < n["lag1_x"]  # circular: the ramp wraps once
    assert r["pool8_std"] > 0.9 > 0.3 > n["pool8_std"]  # a ramp survives box averaging, noise does not
    assert r["ring_0"] > n["ring_0"] and r["laplacian"] < n["laplacian"]
    assert n["hist_3"] == pytest.approx(1 / 16, abs=0.02) and abs(n["skew"]) < 0.1


def test_layout_batches_and_empty_input():
    t = np.random.default_rng(1).integers(0, 256, (5, 16, 16), dtype=np.uint8)
    f = texture_features(t)
    np.testing.assert_array_equal(f, texture_features(t[:, None]))
    np.testing.assert_allclose(f, texture_features(t, batch=2))
    np.testing.assert_allclose(f[3], texture_features(t[3:4])[0])
    assert texture_features(t[:0]).shape == (0, len(TEXTURE_NAMES)) and np.isfinite(f).all()
    assert len(set(TEXTURE_NAMES)) == len(TEXTURE_NAMES) == 16 + 4 + 5 + 4 + 9 + 8 + 3 + 2
