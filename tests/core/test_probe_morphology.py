"""mxplain.probe_morphology: the morphology descriptors of the attribute probe on hand-drawn tiles
give the values known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from mxplain.probe_morphology import (
    MORPHOLOGY_NAMES,
    autocorrelation,
    chords,
    coherence,
    granulometry,
    morphology_features,
    otsu,
    sobel,
    split_particles,
)

N = 64


def disks(radii, low=0.1, high=0.8, spacing=16):
    """A 4 x 4 grid of disks (centres 8, 24, 40, 56 px), radii cycling through ``radii``."""
    yy, xx = np.mgrid[:N, :N]
    mask = np.zeros((N, N), bool)
    centres = [(y, x) for y in range(8, N, spacing) for x in range(8, N, spacing)]
    for i, (cy, cx) in enumerate(centres):
        mask |= np.hypot(yy - cy, xx - cx) <= radii[i % len(radii)]
    return np.where(mask, high, low), mask


def feature(tile, name):
    return float(morphology_features(tile[None])[0, MORPHOLOGY_NAMES.index(name)])


def test_area_fraction_and_particles_of_drawn_disks():
    bands = np.where((np.arange(N) // 16) % 2 == 0, 0.8, 0.1)[:, None] * np.ones((1, N))
    assert feature(bands, "bright_fraction") == 0.5  # straight phase boundaries: exact
    assert feature(bands, "chord_bright_mean") == pytest.approx((2 * 16 * N + N * 2 * 16)
                                                                / (2 * 16 + N * 2))
    tile, mask = disks([6])  # the 1 px blur before the threshold shrinks convex particles
    assert feature(tile, "bright_fraction") == pytest.approx(mask.mean(), abs=0.02)
    assert feature(tile, "particles_per_kpx") == pytest.approx(1000 * 16 / N ** 2)
    diameter = 2 * np.sqrt(mask.sum() / 16 / np.pi)
    assert feature(tile, "particle_diameter") == pytest.approx(diameter, rel=0.05)
    assert feature(tile, "particle_cv") < 0.02 and feature(tile, "inscribed_cv") < 0.05
    mixed, drawn = disks([3, 7])  # radii alternate 3, 7 px
    lab, n = ndi.label(drawn)
    eq = 2 * np.sqrt(np.bincount(lab.ravel())[1:] / np.pi)
    assert n == 16 and eq.std(ddof=1) / eq.mean() == pytest.approx(0.40, abs=0.01)
    assert feature(mixed, "particle_cv") == pytest.approx(0.40, abs=0.1)  # blur shrinks r = 3
    assert feature(mixed, "inscribed_cv") > 0.3
    assert feature(mixed, "particles_per_kpx") == pytest.approx(1000 * 16 / N ** 2)


def test_touching_particles_are_split():
    yy, xx = np.mgrid[:N, :N]
    pair = (np.hypot(yy - 32, xx - 24) <= 8) | (np.hypot(yy - 32, xx - 39) <= 8)  # overlap 1 px
    tile = np.where(pair, 0.8, 0.1)
    assert ndi.label(pair)[1] == 1
    assert feature(tile, "particles_per_kpx") == pytest.approx(1000 * 2 / N ** 2)


def test_chords_of_stripes():
    mask = np.zeros((8, 8), bool)
    mask[::2] = True  # four full rows
    c = chords(mask)
    np.testing.assert_array_equal(np.sort(c), [1.0] * 32 + [8.0] * 4)  # 8 columns x 4 runs
    assert chords(np.zeros((4, 4), bool)).size == 0 and list(chords(np.ones((2, 3), bool))) == \
        [3, 3, 2, 2, 2]


def test_otsu_splits_two_levels():
    v = np.r_[np.full(100, 0.2), np.full(50, 0.7)]
    assert 0.2 <= otsu(v) < 0.7 and otsu(np.full(5, 0.3)) == 0.3


def test_two_point_correlation_length():
    rng = np.random.default_rng(1)
    white = rng.normal(size=(4, N, N))
    smooth = ndi.gaussian_filter(white, (0, 3, 3))
    aw, asm = autocorrelation(white), autocorrelation(smooth)
    assert np.abs(aw[:, 0]).max() < 0.05 and (aw[:, -1] == 1).all()  # white: length 1 px
    assert (asm[:, 0] > 0.9).all() and (asm[:, -1] >= 5).all()  # r(1 px) of sigma 3 blur ~0.97


def test_orientation_coherence():
    y = np.arange(N, dtype=float)[:, None] * np.ones((1, N))
    stripes = (np.sin(2 * np.pi * y / 8) > 0).astype(float)
    noise = np.random.default_rng(2).random((N, N))
    s = ndi.gaussian_filter(np.stack([stripes, noise]), (0, 1, 1))
    c = coherence(sobel(s, 1), sobel(s, 2))
    assert (c[0] > 0.99).all(), c  # straight edges: one orientation, locally and overall
    assert c[1, 0] < 0.6 and c[1, 1] < 0.1, c  # isotropic texture
    alone = coherence(sobel(s[1:], 1), sobel(s[1:], 2))
    np.testing.assert_allclose(alone[0], c[1])  # a tile's value does not depend on its batch


def test_dark_spots_count_pores():
    rng = np.random.default_rng(3)
    tile = np.full((N, N), 0.7)
    tile[:, :16] = 0.1  # dark phase on the left
    yy, xx = np.mgrid[:N, :N]
    pits = [(12 + 10 * i, 24 + 12 * j) for i in range(5) for j in range(3)]
    for cy, cx in pits:
        tile -= 0.4 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.7 ** 2))
    tile += rng.normal(0, 0.01, tile.shape)
    area = 48 * N  # the bright phase
    for d in ("spots_0.04", "spots_0.08", "spots_0.12"):
        assert feature(tile, d) == pytest.approx(1000 * len(pits) / area, rel=0.05), d
    clean = np.where(xx < 16, 0.1, 0.7) + rng.normal(0, 0.01, tile.shape)
    assert feature(clean, "spots_0.08") == 0.0  # the phase boundary is no pore


def test_granulometry_sees_particle_size():
    small, _ = disks([2])
    big, _ = disks([6])
    assert feature(big, "open_mean_size") > feature(small, "open_mean_size") + 1.0


def test_phase_granulometry_spread_follows_the_size_distribution():
    equal, _ = disks([5])
    mixed, _ = disks([2, 8])
    big, _ = disks([7])
    spread = {k: feature(t, "phase_size_log_spread") for k, t in
              (("equal", equal), ("mixed", mixed), ("big", big))}
    assert spread["mixed"] > max(spread["equal"], spread["big"]) + 0.1, spread
    assert feature(big, "phase_size_log_mean") > feature(equal, "phase_size_log_mean")


def test_split_particles_labels_every_bright_pixel_once():
    yy, xx = np.mgrid[:N, :N]
    pair = (np.hypot(yy - 32, xx - 24) <= 8) | (np.hypot(yy - 32, xx - 39) <= 8)
    lab, edt, n = split_particles(pair)
    assert n == 2 and set(np.unique(lab[pair])) == {1, 2} and (lab[~pair] == 0).all()
    assert edt.max() == pytest.approx(8.0, abs=0.5) and abs((lab == 1).sum() - (lab == 2).sum()) < 20
    assert split_particles(np.zeros((8, 8), bool))[2] == 0


def test_granulometry_of_a_flat_tile_removes_nothing_and_of_a_dot_at_size_one():
    flat = np.full((1, 16, 16), 0.5)
    assert granulometry(flat, closing=False)[0, :5].tolist() == [0.0] * 5
    dot = np.zeros((1, 16, 16))
    dot[0, 8, 8] = 1.0  # a one-pixel feature: removed by the smallest opening, all of it
    spec = granulometry(dot, closing=False)[0]
    assert spec[0] == pytest.approx(1.0, abs=1e-6) and spec[1:5].sum() == pytest.approx(0.0)
    assert spec[5] == pytest.approx(1.0) and spec[6] == pytest.approx(0.0)  # mean size 1, no spread
