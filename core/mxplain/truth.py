"""Scores of explanations against a known truth (synthetic data), one rule for every explainer.

An explainer's estimate of a per-lot effect (a sensitivity ``d property / d attribute``, a sweep
slope, a design trait) agrees with the truth when it has the truth's sign. Scored are the
(lot, attribute) pairs where both are finite and the true effect is *not negligible*:
``|truth| > 0.1 * max |truth|`` of its lot (:func:`negligible_mask`); an attribute with no effect
has no sign to recover.
"""

from __future__ import annotations

import warnings

import numpy as np

NEGLIGIBLE = 0.1


def negligible_mask(truth: np.ndarray) -> np.ndarray:
    """True where a true effect is negligible: |truth| <= 0.1 * max|truth| of its lot (last axis)
    or not finite."""
    t = np.abs(np.asarray(truth, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        m = np.nanmax(t, axis=-1, keepdims=True)
    return ~(t > NEGLIGIBLE * m) | ~np.isfinite(t)


def sign_agreement(estimate, truth, attributes=None, weights=None) -> dict:
    """Share of scored (lot, attribute) pairs whose ``estimate`` has the sign of ``truth``.

    ``estimate`` and ``truth``: ``(lots, K)`` (a ``(K,)`` truth is broadcast to every lot);
    ``weights`` (same shape, optional, >= 0) weigh the pairs. Returns ``agreement`` (None when no
    pair is scored), ``pairs`` (how many) and, with ``attributes``, ``by_attribute`` (the share per
    attribute, attributes with no scored pair left out)."""
    est = np.atleast_2d(np.asarray(estimate, np.float64))
    t = np.broadcast_to(np.asarray(truth, np.float64), est.shape)
    w = np.ones_like(est) if weights is None else np.broadcast_to(
        np.asarray(weights, np.float64), est.shape)
    ok = ~negligible_mask(t) & np.isfinite(est) & (w > 0)
    match = (np.sign(est) == np.sign(t)) & ok
    out: dict = {"agreement": _share(match, ok, w), "pairs": int(ok.sum())}
    if attributes is not None:
        out["by_attribute"] = {str(a): _share(match[:, k], ok[:, k], w[:, k])
                               for k, a in enumerate(attributes) if ok[:, k].any()}
    return out


def _share(match: np.ndarray, ok: np.ndarray, w: np.ndarray) -> float | None:
    den = float((w * ok).sum())
    return float((w * match).sum() / den) if den > 0 else None


__all__ = ["NEGLIGIBLE", "negligible_mask", "sign_agreement"]
