"""The independent attribute probe: a model of the user's own tiles that needs no ground truth.

An editor's edits can be judged without a measurement of the attributes (which only synthetic lots
have): a *probe* learns to predict the lot labels from the real tiles, and then says whether an
edit moved each attribute the requested way. It shares nothing with the editor (no weights, no
plugin), so it is an independent witness.

Protocol (:func:`fit_probe`, deterministic, a few seconds on one CPU thread):

1. up to ``n_tiles_per_lot`` real tiles per lot (seeded) are described by :func:`texture_features`,
   a fixed vector of grey-level and texture statistics computed in numpy (no pretrained weights):
   a 16-bin grey histogram, mean / std / skewness / kurtosis and five quantiles, the share of dark
   and bright pixels (beyond 1 and 2 standard deviations), a radial power spectrum (8 log-spaced
   rings, relative power, and the log total), the mean absolute difference at lags 1, 2, 4 and 8
   (horizontal and vertical, over the std), the std of the tile box-averaged over 2, 4 and 8 px
   (over the std), and the mean gradient magnitude and Laplacian energy;
2. a ridge regression (standardised features, ``RidgeCV`` with one penalty per attribute chosen
   among 13 from 1e-3 to 1e3) predicts every attribute's lot label;
3. its skill is measured **leave-lots-out**: ``GroupKFold`` over the lots (up to 5 folds), each
   tile predicted by a probe that saw none of its lot's tiles; ``heldout_spearman`` per attribute is
   the Spearman rho of those predictions against the labels (tile level), ``heldout_lot_spearman``
   the same of the per-lot mean prediction (lot level);
4. the probe refitted on all the tiles is the *measure* (:meth:`Probe.measure`) handed to
   :func:`mxplain.editor_eval.edit_fidelity`: the editor's +/-``delta`` single-attribute edits of the
   editor-evaluation tiles, each judged against the reconstruction at the lot's attributes, as
   the synthetic measurement judges them. Only attributes the probe sees (held-out rho at least
   the trust threshold ``probe_min_spearman``) are judged (:mod:`mxplain.trust`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

FEATURE_NAMES: tuple[str, ...] = (
    tuple(f"hist_{i}" for i in range(16)) + ("mean", "std", "skew", "kurtosis")
    + tuple(f"q{q}" for q in (5, 25, 50, 75, 95))
    + ("dark_1sd", "dark_2sd", "bright_1sd", "bright_2sd")
    + tuple(f"ring_{i}" for i in range(8)) + ("log_power",)
    + tuple(f"lag{d}_{ax}" for d in (1, 2, 4, 8) for ax in ("x", "y"))
    + tuple(f"pool{p}_std" for p in (2, 4, 8)) + ("gradient", "laplacian"))
ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))


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
    """uint8 tiles (N, H, W) -> float64 features (N, len(:data:`FEATURE_NAMES`))."""
    tiles_u8 = np.asarray(tiles_u8)
    if tiles_u8.ndim == 4:  # (N, 1, H, W)
        tiles_u8 = tiles_u8[:, 0]
    out = [_features(tiles_u8[i:i + batch].astype(np.float64) / 255.0)
           for i in range(0, len(tiles_u8), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(FEATURE_NAMES)))


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


def _model():
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS, alpha_per_target=True))


@dataclass
class Probe:
    """A fitted probe: :meth:`measure` predicts every attribute of uint8 tiles."""

    model: object
    attributes: tuple[str, ...]

    def measure(self, tiles_u8: np.ndarray) -> np.ndarray:
        pred = self.model.predict(texture_features(tiles_u8))
        return np.asarray(pred, dtype=np.float64).reshape(len(tiles_u8), -1)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from mxplain.editor_eval import _spearman as rho

    return rho(np.asarray(x, np.float64), np.asarray(y, np.float64))


def fit_probe(store, n_tiles_per_lot: int = 24, seed: int = 0,
              attributes: tuple[str, ...] | None = None) -> tuple[Probe | None, dict]:
    """Fit the probe on real tiles of ``store`` (the module's protocol). Returns the probe refitted
    on all tiles and ``{"attributes": {name: {"heldout_spearman", "heldout_lot_spearman"}},
    "n_tiles", "n_lots", "folds", "features", "seconds"}``; ``(None, {"skipped": why})`` with
    fewer than 3 lots."""
    from sklearn.model_selection import GroupKFold

    t0 = time.perf_counter()
    attributes = tuple(attributes or store.attributes)
    tiles, lot_idx = store.all_tiles(max_per_lot=int(n_tiles_per_lot), seed=int(seed) + 17)
    lots = np.unique(lot_idx)
    if len(lots) < 3:
        return None, {"skipped": "the attribute probe needs at least 3 lots with tiles"}
    x = texture_features(tiles)
    y = np.asarray(store.lot_attributes[lot_idx], dtype=np.float64)
    folds = min(5, len(lots))
    oof = np.full_like(y, np.nan)
    for train, test in GroupKFold(n_splits=folds).split(x, y, groups=lot_idx):
        oof[test] = _model().fit(x[train], y[train]).predict(x[test])
    out: dict = {"attributes": {}}
    for j, name in enumerate(attributes):
        lot_mean = np.array([oof[lot_idx == i, j].mean() for i in lots])
        out["attributes"][name] = {
            "heldout_spearman": _spearman(oof[:, j], y[:, j]),
            "heldout_lot_spearman": _spearman(lot_mean, store.lot_attributes[lots, j])}
    probe = Probe(_model().fit(x, y), attributes)
    out.update({"n_tiles": int(len(x)), "n_lots": int(len(lots)), "folds": int(folds),
                "model": "standardised texture features, ridge (RidgeCV, a penalty per "
                         "attribute), GroupKFold over lots",
                "features": len(FEATURE_NAMES), "seconds": float(time.perf_counter() - t0)})
    return probe, out


def probe_edits(editor, store, probe: Probe, fit_info: dict, n_tiles_per_lot: int = 6,
                seed: int = 0, delta: float = 0.35, ctx=None) -> dict:
    """The probe as the measure of :func:`mxplain.editor_eval.edit_fidelity` (the same tiles,
    +/-``delta`` edits and direction rule as the synthetic measurement); returns ``fit_info``
    with each attribute's ``direction_share``, ``spearman`` (requested vs probed value over the
    sweep), ``effect`` and ``entanglement`` added, and ``seconds`` now covering both."""
    from mxplain.editor_eval import edit_fidelity

    t0 = time.perf_counter()
    names = tuple(editor.attributes or store.attributes)
    fid = edit_fidelity(editor, store, probe.measure, n_tiles_per_lot=n_tiles_per_lot,
                        delta=delta, ctx=ctx, measure_attributes=probe.attributes, seed=seed)
    out = {**fit_info, "attributes": {a: dict(v) for a, v in fit_info["attributes"].items()},
           "delta": float(delta), "n_edit_tiles": fid["n_tiles"]}
    for name in names:
        block = fid["attributes"].get(name, {})
        out["attributes"].setdefault(name, {}).update(
            {k: block.get(k, float("nan")) for k in
             ("direction_share", "spearman", "effect", "entanglement", "n_edits")})
    out["seconds"] = float(fit_info.get("seconds", 0.0) + time.perf_counter() - t0)
    return out
