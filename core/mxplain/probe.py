"""The independent attribute probe: a model of the user's own tiles that needs no ground truth.

An editor's edits can be judged without a measurement of the attributes (which only synthetic lots
have): a *probe* learns to predict the lot labels from the real tiles, and then says whether, and
how far, an edit moved each attribute the requested way. It shares nothing with the editor (no
weights, no plugin), so it is an independent witness.

Protocol (:func:`fit_probe`, deterministic, seconds on one CPU thread):

1. up to ``n_tiles_per_lot`` real tiles per lot (seeded) are described by :func:`tile_features`:
   the grey-level and texture statistics of :mod:`mxplain.probe_texture` and the morphology
   descriptors of :mod:`mxplain.probe_morphology` (phase fraction, chord lengths, two-point
   correlation, granulometry, pores, particle-size spread, edge density and orientation
   coherence), :data:`FEATURE_NAMES`;
2. per attribute a ridge regression on the standardised features most rank-correlated with the
   lot label (the number kept among 1, 2, 4, ..., 32 or all, and the penalty among
   :data:`ALPHAS`, chosen by their Spearman rho in a cross-validation *grouped by lot*): features
   that only tell lots apart, not the attribute, are not kept;
3. its skill is measured **leave-lots-out, nested**: leave-one-lot-out (one fold per lot, up to
   :data:`MAX_OUTER_FOLDS` folds), each tile predicted by a probe whose feature choice and fit saw
   none of its lot's tiles. Every fold's predictions (and the inner folds' of the choice in step
   2) are read on **one common origin**, the label mean and feature means over all the tiles,
   not the fold's own: a fold's means move *against* its held-out lots, so with them a probe that
   sees nothing reads a held-out rho near -1 under leave-one-lot-out (-0.66 with 5 folds over 16
   lots) and a weak real signal is pulled down with it (polydispersity on the quickstart's lots:
   tile rho 0.19, lot rho 0.41 with 5 folds and own means; 0.36-0.48 and 0.73-0.91 now). A
   common constant cannot correlate with any lot's label, and Spearman's rho is blind to it.
   ``heldout_spearman`` is the Spearman rho of those predictions against the labels (tiles),
   ``heldout_lot_spearman`` the same of the lots' mean prediction. The tile rho is bounded by
   how much tiles of one lot differ: on the quickstart the synthetic data's own measurement reads
   polydispersity at tile rho 0.44-0.53 (lot rho 0.86-0.91). A probe that ranks lots but not
   single tiles sees even the data's own generator's edits move the requested way only 62-70 %
   of the time (the oracle case of tests/examples/test_new_user.py), so :mod:`mxplain.trust`
   reads the edits' direction share against the probe's ``resolution`` (below), its ceiling, and
   judges an attribute only where that resolution reaches ``probe_min_resolution``.
   ``calibration_slope`` is the least-squares slope of the held-out prediction on the label,
   ``reading_slope`` the same of the refitted probe's (step 4) own readings of the tiles it was
   fitted on (how far its reading moves for a real lot one unit higher; the two agree where the
   probe does not overfit), and ``resolution`` the probe's own ceiling: the share of pairs of real
   tiles from different lots whose labels differ by 0.75-1.25 x ``delta`` that the held-out
   predictions order the right way;
4. the probe refitted on all the tiles is the *measure* (:meth:`Probe.measure`) handed to
   :func:`mxplain.editor_eval.edit_fidelity` (:func:`probe_edits`): the editor's +/-``delta``
   single-attribute edits of the editor-evaluation tiles, each judged against the reconstruction
   at the lot's attributes, as the synthetic measurement judges them. Besides the direction share,
   ``effect_ratio`` is the mean change of the probe's reading per unit of requested change over
   its ``reading_slope``: the same probe's reading of an edit against its reading of real lot
   differences, so the ridge's shrinkage cancels; about 1 where an edit does what a real lot
   difference does (an editor rendering the toy law of tests/core/test_trust.py exactly: 0.90-0.97,
   one moving a fifth of the way: 0.20), near 0 for an edit that moves the reading the right way
   but barely (a shortcut, or an attribute the editor renders only faintly). A probe that
   overfits its tiles has a reading slope larger than real lots' effect and so reads ratios low:
   the gate errs towards caution. :mod:`mxplain.trust` judges both, for the attributes the probe
   sees.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np

from mxplain.probe_morphology import MORPHOLOGY_NAMES, morphology_features
from mxplain.probe_texture import TEXTURE_NAMES, texture_features

FEATURE_NAMES: tuple[str, ...] = TEXTURE_NAMES + MORPHOLOGY_NAMES
ALPHAS = (1000.0, 100.0, 10.0, 1.0, 0.1)
KEEP = (1, 2, 4, 8, 16, 32)
RESOLUTION_BAND = (0.75, 1.25)
SELECT_TOLERANCE = 0.02  # the simplest choice within this rho of the best (a one-standard-error rule)
#: outer folds of the skill estimate: leave-one-lot-out up to this many lots (see the protocol)
MAX_OUTER_FOLDS = 24


def tile_features(tiles_u8: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 tiles (N, H, W) or (N, 1, H, W) -> float64 features (N, len(:data:`FEATURE_NAMES`))."""
    tiles_u8 = np.asarray(tiles_u8)
    if tiles_u8.ndim == 4:
        tiles_u8 = tiles_u8[:, 0]
    out = [np.concatenate([texture_features(part), morphology_features(part / 255.0)], axis=1)
           for part in (tiles_u8[i:i + batch] for i in range(0, len(tiles_u8), batch))]
    return np.concatenate(out) if out else np.zeros((0, len(FEATURE_NAMES)))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from mxplain.editor_eval import _spearman as rho

    return rho(np.asarray(x, np.float64), np.asarray(y, np.float64))


def _ridge_path(x: np.ndarray, y: np.ndarray, alphas) -> tuple:
    """Standardised ridge for every penalty in ``alphas`` at once (one SVD): the feature means and
    scales, the label mean and one coefficient vector per penalty."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    u, s, vt = np.linalg.svd((x - mean) / scale, full_matrices=False)
    uty = u.T @ (y - y.mean())
    return mean, scale, float(y.mean()), [vt.T @ (s / (s ** 2 + a) * uty) for a in alphas]


def _screen(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Feature columns by decreasing |Spearman rho| with ``y`` (stable for ties)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=0), rankdata(y)
    rx = (rx - rx.mean(axis=0)) / np.maximum(rx.std(axis=0), 1e-12)
    ry = (ry - ry.mean()) / max(ry.std(), 1e-12)
    return np.argsort(-np.abs((rx * ry[:, None]).mean(axis=0)), kind="stable")


def _folds(groups: np.ndarray, n: int) -> list:
    from sklearn.model_selection import GroupKFold

    return list(GroupKFold(n_splits=n).split(groups, groups, groups))


def _select(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The kept columns and the penalty of the simplest choice (fewest columns, then the largest
    penalty) whose lot-grouped cross-validated Spearman rho is within :data:`SELECT_TOLERANCE` of
    the best; and that rho."""
    folds = _folds(groups, min(4, len(np.unique(groups))))
    keeps = sorted({min(k, x.shape[1]) for k in KEEP} | {x.shape[1]})
    pred = {(k, a): np.zeros(len(y)) for k in keeps for a in ALPHAS}
    origin = x.mean(axis=0), float(y.mean())
    for train, test in folds:
        order = _screen(x[train], y[train])
        for k in keeps:
            cols = order[:k]
            _, scale, _, coefs = _ridge_path(x[train][:, cols], y[train], ALPHAS)
            z = (x[test][:, cols] - origin[0][cols]) / scale
            for a, coef in zip(ALPHAS, coefs):
                pred[(k, a)][test] = z @ coef + origin[1]
    scores = {key: np.nan_to_num(_spearman(p, y), nan=-2.0) for key, p in pred.items()}
    top = max(scores.values())
    best = min((key for key, s in scores.items() if s >= top - SELECT_TOLERANCE),
               key=lambda key: (key[0], -key[1]))
    return _screen(x, y)[:best[0]], best[1], float(scores[best])


@dataclass
class AttributeModel:
    """One attribute's ridge: plain arrays (the columns of :data:`FEATURE_NAMES` it uses)."""

    columns: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> AttributeModel:
        cols, alpha, _ = _select(x, y, groups)
        mean, scale, ym, (coef,) = _ridge_path(x[:, cols], y, [alpha])
        return cls(np.asarray(cols), mean, scale, coef, ym, float(alpha))

    def predict(self, features: np.ndarray, origin: tuple | None = None) -> np.ndarray:
        """The reading of ``features``; ``origin`` = (feature means over all columns, label mean)
        replaces the model's own means (held-out readings of every fold on one origin)."""
        mean, icpt = (self.mean, self.intercept) if origin is None else \
            (origin[0][self.columns], origin[1])
        return ((features[:, self.columns] - mean) / self.scale) @ self.coef + icpt


@dataclass
class Probe:
    """A fitted probe: :meth:`measure` predicts every attribute of uint8 tiles."""

    models: tuple[AttributeModel, ...]
    attributes: tuple[str, ...]

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        return np.stack([m.predict(features) for m in self.models], axis=1)

    def measure(self, tiles_u8: np.ndarray) -> np.ndarray:
        return self.predict_features(tile_features(tiles_u8)).reshape(len(tiles_u8), -1)


def resolution(pred: np.ndarray, label: np.ndarray, groups: np.ndarray, delta: float) -> float:
    """Share of pairs of tiles from different lots whose labels differ by 0.75-1.25 x ``delta``
    that ``pred`` orders the way of the labels (NaN without such pairs)."""
    dl = label[:, None] - label[None, :]
    dp = pred[:, None] - pred[None, :]
    lo, hi = RESOLUTION_BAND
    pairs = (groups[:, None] != groups[None, :]) & (np.abs(dl) >= lo * delta) \
        & (np.abs(dl) <= hi * delta) & (dl > 0)
    return float((dp[pairs] > 0).mean()) if pairs.any() else float("nan")


def _skill(oof: np.ndarray, y: np.ndarray, groups: np.ndarray, delta: float) -> dict:
    lots = np.unique(groups)
    lot_pred = np.array([oof[groups == i].mean() for i in lots])
    lot_label = np.array([y[groups == i][0] for i in lots])
    slope = resid = float("nan")
    if np.ptp(y) > 0:
        slope, icpt = np.polyfit(y, oof, 1)
        resid = float(np.std(oof - (slope * y + icpt)))
    return {"heldout_spearman": _spearman(oof, y),
            "heldout_lot_spearman": _spearman(lot_pred, lot_label),
            "calibration_slope": float(slope), "residual_std": resid,
            "resolution": resolution(oof, y, groups, delta)}


def fit_probe_features(x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                       attributes: tuple[str, ...], delta: float = 0.35) -> tuple[Probe, dict]:
    """Steps 2-3 of the protocol on features ``x`` (N, F) of tiles with lot labels ``y`` (N, K)
    and lot indices ``groups`` (at least 3 lots): the probe refitted on all tiles and
    ``{"attributes": {name: skill and choice}, "folds"}``."""
    lots = np.unique(groups)
    outer = _folds(groups, min(MAX_OUTER_FOLDS, len(lots)))
    models, info, x_mean = [], {}, x.mean(axis=0)
    for j, name in enumerate(attributes):
        oof = np.zeros(len(x))
        for train, test in outer:
            fold = AttributeModel.fit(x[train], y[train, j], groups[train])
            oof[test] = fold.predict(x[test], origin=(x_mean, float(y[:, j].mean())))
        model = AttributeModel.fit(x, y[:, j], groups)
        models.append(model)
        fitted = model.predict(x)
        info[name] = {**_skill(oof, y[:, j], groups, delta), "alpha": model.alpha,
                      "reading_slope": float(np.polyfit(y[:, j], fitted, 1)[0])
                      if np.ptp(y[:, j]) > 0 else float("nan"),
                      "features": [FEATURE_NAMES[c] if x.shape[1] == len(FEATURE_NAMES)
                                   else str(c) for c in model.columns]}
    return Probe(tuple(models), tuple(attributes)), {"attributes": info, "folds": len(outer)}


def fit_probe(store, n_tiles_per_lot: int = 24, seed: int = 0,
              attributes: tuple[str, ...] | None = None,
              delta: float = 0.35) -> tuple[Probe | None, dict]:
    """Fit the probe on real tiles of ``store`` (the module's protocol). Returns the probe refitted
    on all tiles and ``{"attributes": {name: {"heldout_spearman", "heldout_lot_spearman",
    "calibration_slope", "reading_slope", "residual_std", "resolution", "alpha", "features"}},
    "n_tiles",
    "n_lots", "folds", "model", "features", "seconds"}`` (``attributes``: those of the store's
    labels to probe, default all); ``(None, {"skipped": why})`` with fewer than 3 lots or none of
    ``attributes`` among the labels."""
    t0 = time.perf_counter()
    attributes = tuple(a for a in (attributes or store.attributes) if a in store.attributes)
    if not attributes:
        return None, {"skipped": "none of the editor's attributes is a label of the tile store"}
    tiles, lot_idx = store.all_tiles(max_per_lot=int(n_tiles_per_lot), seed=int(seed) + 17)
    lots = np.unique(lot_idx)
    if len(lots) < 3:
        return None, {"skipped": "the attribute probe needs at least 3 lots with tiles"}
    cols = [store.attributes.index(a) for a in attributes]
    y = np.asarray(store.lot_attributes[lot_idx][:, cols], dtype=np.float64)
    probe, out = fit_probe_features(tile_features(tiles), y, lot_idx, attributes, delta)
    out.update({"n_tiles": int(len(tiles)), "n_lots": int(len(lots)), "delta": float(delta),
                "model": "per attribute: ridge on the standardised texture and morphology "
                         "features most rank-correlated with the label (how many, and the "
                         "penalty, by lot-grouped cross-validation); skill nested "
                         "leave-one-lot-out",
                "features": len(FEATURE_NAMES), "seconds": float(time.perf_counter() - t0)})
    return probe, out


class _Remembered:
    """``measure`` that reuses its answer for tiles it has seen (the originals are measured by
    :func:`~mxplain.editor_eval.edit_fidelity` and again here for their spread)."""

    def __init__(self, measure):
        self.measure, self.seen = measure, {}

    def __call__(self, tiles_u8: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(np.ascontiguousarray(tiles_u8).tobytes(), digest_size=16).digest()
        if key not in self.seen:
            self.seen[key] = self.measure(tiles_u8)
        return self.seen[key]


def effect_intervals(editor, store, measure, probe: Probe, slopes: dict, n_tiles_per_lot: int,
                     seed: int, delta: float, n_boot: int = 1000) -> dict:
    """Per attribute of ``probe`` with a positive slope: the 95 % percentile bootstrap interval
    (over the edited tiles, seeded) of the effect ratio: the same +/-``delta`` edits as
    :func:`~mxplain.editor_eval.edit_fidelity` (decoded again; ``measure`` remembers the tiles it
    has read), each edit's change of the reading over its requested change, over the slope (held
    fixed)."""
    import torch

    from mxplain.editing import edit_batched, encode_batched
    from mxplain.editor_eval import sample_tiles
    from mxplain.store import to_tensor

    tiles, lot_idx = sample_tiles(store, n_tiles_per_lot, seed)
    a0 = torch.from_numpy(store.lot_attributes[lot_idx].astype(np.float32))
    latent = encode_batched(editor, to_tensor(tiles), 64)
    rec = measure(edit_batched(editor, latent, a0, 64))
    names = list(editor.attributes or store.attributes)
    rng, out = np.random.default_rng(seed), {}
    for col, name in enumerate(probe.attributes):
        slope = slopes.get(name, float("nan"))
        if name not in names or not (np.isfinite(slope) and slope > 0):
            continue
        j, per_tile = names.index(name), []
        for sign in (-1.0, 1.0):
            a = a0.clone()
            a[:, j] = torch.clamp(a0[:, j] + sign * delta, 0.0, 1.0)
            step = (a[:, j] - a0[:, j]).numpy().astype(np.float64)
            change = measure(edit_batched(editor, latent, a, 64))[:, col] - rec[:, col]
            per_tile.append(np.where(np.abs(step) > 1e-6, change / np.where(
                np.abs(step) > 1e-6, step, 1.0), np.nan))
        per_tile = np.nanmean(np.stack(per_tile, axis=1), axis=1)
        per_tile = per_tile[np.isfinite(per_tile)] / slope
        if len(per_tile) < 2:
            continue
        draws = rng.integers(0, len(per_tile), (n_boot, len(per_tile)))
        lo, hi = np.percentile(per_tile[draws].mean(axis=1), [2.5, 97.5])
        out[name] = [float(lo), float(hi)]
    return out


def probe_edits(editor, store, probe: Probe, fit_info: dict, n_tiles_per_lot: int = 6,
                seed: int = 0, delta: float = 0.35, ctx=None, intervals: bool = False) -> dict:
    """The probe as the measure of :func:`mxplain.editor_eval.edit_fidelity` (the same tiles,
    +/-``delta`` edits and direction rule as the synthetic measurement; a sweep of 0 and 1); returns
    ``fit_info`` with each attribute's ``direction_share``, ``spearman`` (requested vs probed value
    over the sweep), ``effect``, ``effect_ratio`` (step 4 of the protocol), ``entanglement`` and
    ``response`` (the edit response matrix's row in the probe's readings) added, and ``seconds``
    now covering both. With ``intervals`` also ``effect_ratio_ci``
    (:func:`effect_intervals`; it decodes the edits again: on the quickstart 7 s of one CPU
    thread more, so runs leave it off)."""
    from mxplain.editor_eval import edit_fidelity, sample_tiles

    t0 = time.perf_counter()
    names = tuple(editor.attributes or store.attributes)
    measure = _Remembered(probe.measure)
    fid = edit_fidelity(editor, store, measure, n_tiles_per_lot=n_tiles_per_lot, delta=delta,
                        ctx=ctx, n_steps=2, measure_attributes=probe.attributes, seed=seed)
    spread = np.nanstd(measure(sample_tiles(store, n_tiles_per_lot, seed)[0]), axis=0)
    spread = np.where(spread > 0, spread, 1.0)
    out = {**fit_info, "attributes": {a: dict(v) for a, v in fit_info["attributes"].items()},
           "delta": float(delta), "n_edit_tiles": fid["n_tiles"]}
    for name in names:
        block = fid["attributes"].get(name, {})
        row = out["attributes"].setdefault(name, {})
        row.update({k: block.get(k, float("nan")) for k in
                    ("direction_share", "spearman", "effect", "entanglement", "n_edits")})
        row["response"] = dict(block.get("response", {}))
        slope = row.get("reading_slope", float("nan"))
        col = probe.attributes.index(name) if name in probe.attributes else None
        ok = col is not None and np.isfinite(slope) and slope > 0
        row["effect_ratio"] = float(row["effect"] * spread[col] / slope) if ok \
            else float("nan")
    slopes = {a: v.get("reading_slope", float("nan")) for a, v in out["attributes"].items()}
    for name, ci in (effect_intervals(editor, store, measure, probe, slopes, n_tiles_per_lot,
                                      seed, delta) if intervals else {}).items():
        out["attributes"][name]["effect_ratio_ci"] = ci
    out["seconds"] = float(fit_info.get("seconds", 0.0) + time.perf_counter() - t0)
    return out
