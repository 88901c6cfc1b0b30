"""The finite-volume transport solver of mxplain.simulate against exact and analytic cases.

Tolerances (stated in docs/synthetic.md, "The simulated property"):

* layered media / straight channels: arithmetic mean along the layers, harmonic mean across them,
  relative error < 1e-9 (exact up to the direct solver's rounding);
* grid convergence: a centred square inclusion (side 1/4) refined 4x/8x/16x/32x (32..256 cells):
  successive differences shrink with an observed order in [1.2, 1.5] (the corner singularity's
  4/3), and the finest grid is within 0.05 % of the Richardson extrapolation;
* Maxwell-Garnett (2-D, ``k = k_m (1 + f c) / (1 - f c)``, ``c = (k_i - k_m) / (k_i + k_m)``, ``f``
  the rasterised area fraction): a periodic square array of disks (one cell of 128 px, whose
  faces are symmetry planes) within 1 % at f = 0.05 and 0.1, insulating (1e-3) and conducting
  (1e3 contrast) disks; random non-overlapping disks (radius 10 px, 256 px, f = 0.1) within 2.5 %.
"""

import time

import numpy as np
import pytest

from mxplain.simulate import PhaseConductivity, effective_conductivity, two_phase_conductivity


def maxwell_garnett(f, k_i, k_m):
    c = (k_i - k_m) / (k_i + k_m)
    return k_m * (1 + f * c) / (1 - f * c)


def test_layers_give_arithmetic_mean_along_and_harmonic_across():
    rng = np.random.default_rng(0)
    layers = rng.uniform(1e-3, 2.0, 24)
    k = np.repeat(layers[:, None], 20, axis=1)  # rows of constant conductivity: layers along x
    assert effective_conductivity(k, "x") == pytest.approx(layers.mean(), rel=1e-9)
    assert effective_conductivity(k, "y") == pytest.approx(1 / np.mean(1 / layers), rel=1e-9)
    assert effective_conductivity(k.T, "y") == pytest.approx(layers.mean(), rel=1e-9)


def test_straight_channel():
    phase = np.zeros((32, 40), bool)
    phase[10:16] = True  # a conducting channel of 6 rows along x
    k = two_phase_conductivity(phase, 1.0, 1e-3)
    along = (6 * 1.0 + 26 * 1e-3) / 32
    assert effective_conductivity(k, "x") == pytest.approx(along, rel=1e-9)
    across = 1 / np.mean(1 / k[:, 0])  # in series across the channel
    assert effective_conductivity(k, "y") == pytest.approx(across, rel=1e-9)
    assert effective_conductivity(k, "both") == pytest.approx((along + across) / 2, rel=1e-9)


@pytest.mark.parametrize("k_inclusion", [1e-3, 1e3])
def test_grid_convergence_square_inclusion(k_inclusion):
    coarse = np.zeros((8, 8))
    coarse[3:5, 3:5] = 1.0  # a centred square of side 1/4
    vals = []
    for r in (4, 8, 16, 32):
        k = np.where(np.kron(coarse, np.ones((r, r))) > 0, k_inclusion, 1.0)
        vals.append(effective_conductivity(k, "x"))
    d = np.abs(np.diff(vals))
    orders = np.log2(d[:-1] / d[1:])
    assert np.all((orders > 1.2) & (orders < 1.5)), orders
    p = orders[-1]
    extrapolated = vals[-1] + (vals[-1] - vals[-2]) / (2**p - 1)
    assert abs(vals[-1] / extrapolated - 1) < 5e-4


def _lattice_cell(n, f):
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) / n - 0.5
    return np.hypot(yy, xx) < np.sqrt(f / np.pi)


@pytest.mark.parametrize("f", [0.05, 0.1])
@pytest.mark.parametrize("k_i,k_m", [(1e-3, 1.0), (1.0, 1e-3)])
def test_maxwell_garnett_square_array(f, k_i, k_m):
    disk = _lattice_cell(128, f)
    k = np.where(disk, k_i, k_m)
    mg = maxwell_garnett(disk.mean(), k_i, k_m)
    assert effective_conductivity(k, "x") == pytest.approx(mg, rel=0.01)


def test_maxwell_garnett_random_dilute_disks():
    rng = np.random.default_rng(0)
    n, rad, centres = 256, 10.0, []
    while len(centres) < round(0.1 * n * n / (np.pi * rad * rad)):
        p = rng.uniform(rad + 2, n - rad - 2, 2)
        if all(np.hypot(*(p - q)) > 2 * rad + 4 for q in centres):
            centres.append(p)
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    disks = np.zeros((n, n), bool)
    for cy, cx in centres:
        disks |= np.hypot(yy - cy, xx - cx) < rad
    f = disks.mean()
    assert 0.09 < f < 0.11
    for k_i, k_m in ((1e-3, 1.0), (1.0, 1e-3)):
        got = effective_conductivity(np.where(disks, k_i, k_m), "both")
        assert got == pytest.approx(maxwell_garnett(f, k_i, k_m), rel=0.025)


def test_simulator_batched_deterministic_and_fast():
    rng = np.random.default_rng(1)
    tiles = (rng.random((6, 64, 64)) * 255).astype(np.uint8)
    sim = PhaseConductivity()  # conducting phase: grey level < 0.5
    t0 = time.perf_counter()
    batch = sim.simulate(tiles)
    per_tile = (time.perf_counter() - t0) / len(tiles)
    assert batch.shape == (6,) and batch.dtype == np.float64
    assert np.array_equal(batch, sim.simulate(tiles))  # bit for bit
    one = np.array([sim.simulate(t[None])[0] for t in tiles])
    assert np.array_equal(batch, one)
    as_float = sim.simulate(tiles[:, None].astype(np.float32) / 255.0)  # (N, 1, H, W) floats
    np.testing.assert_array_equal(batch, as_float)
    assert np.all((batch > 1e-3) & (batch < 1.0))
    assert per_tile < 0.5  # about 10-20 ms for 64 x 64, both directions; loose for a loaded CI


def test_refuses_bad_maps():
    with pytest.raises(ValueError, match="> 0"):
        effective_conductivity(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="direction"):
        effective_conductivity(np.ones((4, 4)), "z")
    with pytest.raises(ValueError, match="2-D"):
        effective_conductivity(np.ones(4))
