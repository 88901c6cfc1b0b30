"""Grey-level and texture statistics of tiles for the attribute probe (:mod:`mxplain.probe`).

A fixed vector per tile computed in numpy (no pretrained weights): a 16-bin grey histogram, mean /
std / skewness / kurtosis and five quantiles, the share of dark and bright pixels (beyond 1 and 2
standard deviations), a radial power spectrum (8 log-spaced rings, relative power, and the log
total), the mean absolute difference at lags 1, 2, 4 and 8 (horizontal and vertical, over the
std), the std of the tile box-averaged over 2, 4 and 8 px (over the std), and the mean gradient
magnitude and Laplacian energy.
"""

from __future__ import annotations

import numpy as np

TEXTURE_NAMES: tuple[str, ...] = (
    tuple(f"hist_{i}" for i in range(16)) + ("mean", "std", "skew", "kurtosis")
    + tuple(f"q{q}" for q in (5, 25, 50, 75, 95))
    + ("dark_1sd", "dark_2sd", "bright_1sd", "bright_2sd")
    + tuple(f"ring_{i}" for i in range(8)) + ("log_power",)
    + tuple(f"lag{d}_{ax}" for d in (1, 2, 4, 8) for ax in ("x", "y"))
    + tuple(f"pool{p}_std" for p in (2, 4, 8)) + ("gradient", "laplacian"))


def _ring_power(t: np.ndarray, n_rings: int = 8) -> np.ndarray:
    """(N, H, W) -> (N, n_rings + 1): relative power in log-spaced radial rings of the
    mean-subtracted tile's spectrum, and the log total power."""
    n, h, w = t.shape
    p = np.abs(np.fft.rfft2(t - t.mean(axis=(1, 2), keepdims=True))) ** 2
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    r = np.sqrt(fy ** 2 + fx ** 2)
    edges = np.geomspace(1.0 / max(h, w), 0.5 * np.sqrt(2) + 1e-9, n_rings + 1)
    ring = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, n_rings - 1)
    ring = np.where(r > 0, ring, -1).ravel()
    flat = p.reshape(n, -1)
    total = flat.sum(axis=1) + 1e-12
    rings = np.stack([flat[:, ring == k].sum(axis=1) for k in range(n_rings)], 1)
    return np.concatenate([rings / total[:, None], np.log(total)[:, None]], 1)


def _pooled_std(t: np.ndarray, p: int) -> np.ndarray:
    n, h, w = t.shape
    hh, ww = h // p * p, w // p * p
    if hh == 0 or ww == 0:
        return np.zeros(n)
    return t[:, :hh, :ww].reshape(n, hh // p, p, ww // p, p).mean(axis=(2, 4)).std(axis=(1, 2))


def texture_features(tiles_u8: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 tiles (N, H, W) -> float64 features (N, len(:data:`TEXTURE_NAMES`))."""
    tiles_u8 = np.asarray(tiles_u8)
    if tiles_u8.ndim == 4:  # (N, 1, H, W)
        tiles_u8 = tiles_u8[:, 0]
    out = [_features(tiles_u8[i:i + batch].astype(np.float64) / 255.0)
           for i in range(0, len(tiles_u8), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(TEXTURE_NAMES)))


def _features(t: np.ndarray) -> np.ndarray:
    n = len(t)
    flat = t.reshape(n, -1)
    mean = flat.mean(axis=1)
    std = flat.std(axis=1) + 1e-6
    z = (flat - mean[:, None]) / std[:, None]
    hist = np.stack([np.bincount(np.minimum((row * 16).astype(int), 15), minlength=16)
                     for row in flat]) / flat.shape[1]
    quant = np.quantile(flat, [0.05, 0.25, 0.5, 0.75, 0.95], axis=1).T
    tails = np.stack([(z < -1).mean(1), (z < -2).mean(1), (z > 1).mean(1), (z > 2).mean(1)], 1)
    lags = [np.abs(np.roll(t, -d, axis=ax) - t).mean(axis=(1, 2)) / std
            for d in (1, 2, 4, 8) for ax in (2, 1)]
    pools = [_pooled_std(t, p) / std for p in (2, 4, 8)]
    gy, gx = np.gradient(t, axis=(1, 2))
    lap = (np.roll(t, 1, 1) + np.roll(t, -1, 1) + np.roll(t, 1, 2) + np.roll(t, -1, 2) - 4 * t)
    cols = [hist, mean[:, None], std[:, None], (z ** 3).mean(1)[:, None],
            (z ** 4).mean(1)[:, None], quant, tails, _ring_power(t), np.stack(lags, 1),
            np.stack(pools, 1), np.hypot(gx, gy).mean(axis=(1, 2))[:, None],
            (lap ** 2).mean(axis=(1, 2))[:, None]]
    return np.concatenate(cols, axis=1)
