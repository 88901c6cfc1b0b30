"""The backward explainer's numbers from a cube: reached shares against reachable targets, the
mean change over converged tiles and its bootstrap interval, the stability of A', and the direction
of the change against the true law (see :mod:`mxplain_attribute.backward`)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mxplain.truth import negligible_mask

from ._common import DIRECTIONS, bootstrap, fill_attributes, interval, interval_summary

#: a (lot, direction) whose largest restart spread of A' exceeds this is counted as unstable
UNSTABLE_SPREAD = 0.1
#: the coverage of the bootstrap intervals of the mean change
CI_LEVEL = 0.95


def change_bootstrap(change: np.ndarray, conv: np.ndarray, n_boot: int,
                     rng: np.random.Generator,
                     reachable: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per direction, over the reachable tiles that reached their target only: the mean change
    ``(D, K)`` (``backward_mean_change``, NaN without such a tile), its bootstrap interval
    ``(D, K, 2)`` (``backward_change_ci``, with ``n_boot`` > 0) and the reached share ``(D,)`` of
    the reachable tiles (``backward_reached_share``, NaN without a reachable tile). A target
    within the tolerance of the start is met by ``A' = A``: no counterfactual, in no average.
    ``change (n, D, K)``, ``conv`` and ``reachable (n, D)`` (None: every target reachable)."""
    n, nd, k = change.shape
    reach = np.ones(conv.shape, bool) if reachable is None else np.asarray(reachable, bool)
    conv = np.asarray(conv, bool) & reach
    mean = np.full((nd, k), np.nan)
    ci = np.full((nd, k, 2), np.nan)
    for j in range(nd):
        terms = np.asarray(change[conv[:, j], j], np.float64)  # (m, K) converged tiles
        if len(terms):
            mean[j] = terms.mean(axis=0)
        draws = bootstrap(terms if len(terms) else np.zeros((0, k)),
                          lambda t: t.mean(axis=1), n_boot, rng)
        ci[j] = interval(draws, mean[j], CI_LEVEL)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        share = conv.sum(axis=0) / reach.sum(axis=0) if n else np.full(nd, np.nan)
    out = {"backward_reached_share": share.astype(np.float32),
           "backward_mean_change": mean.astype(np.float32)}
    if n_boot:
        out["backward_change_ci"] = ci.astype(np.float32)
    return out


def restart_spread(main: np.ndarray, restarts: np.ndarray, nd: int, k: int) -> np.ndarray:
    """``(D, K)``: over the restarted tiles (the first ``len(restarts)``), the mean range of A'
    over the main solve ``main (n, D, K)`` and the restarts ``restarts (tiles, restarts, D, K)``."""
    if len(restarts) == 0:
        return np.zeros((nd, k))
    every = np.concatenate([main[: len(restarts), None], restarts], axis=1)
    return (every.max(axis=1) - every.min(axis=1)).mean(axis=0)


def score_backward(cube, attrs, targets=(0.10, -0.10), target_mode: str = "relative") -> dict:
    """Backward metrics from a cube: per direction, the share of real tiles that reached their
    target within tol, over the tile-directions whose target the reachability probe found
    reachable (``reached_share``; ``reachable`` and ``unreachable`` count them, ``reached_share_all``
    is over every tile-direction, ``reached_unreachable`` counts unreachable ones reached anyway;
    a cube without ``backward_reachable`` counts every target reachable), mean iterations, the mean
    change ``A' - A`` per attribute over all tiles (``mean_change``), the stability of A'
    (``stability``: :func:`score_stability`); with ``true_sensitivity`` (relative or reachable
    targets: the target's sign is the direction's): whether each non-negligible attribute's mean
    change points the way the law says (``direction_agrees``: sign of the truth times the sign of
    the direction's target), the share of lots whose lot-mean change does
    (``direction_lot_share``), and the share of agreeing (direction, attribute) pairs
    (``direction_agreement_overall``)."""
    mask = np.asarray(cube["tile_mask"].values, bool)
    conv = np.asarray(cube["backward_converged"].values, bool)
    iters = np.asarray(cube["backward_iterations"].values, np.float64)
    xa = np.asarray(cube["backward_attributes"].values, np.float64)  # (L, T, D, K)
    base = fill_attributes(np.asarray(cube["lot_attributes"].values))  # (L, K)
    change = xa - base[:, None, None, :]
    real = mask & np.isfinite(xa).all(axis=(2, 3))
    out: dict[str, Any] = {"tiles": int(real.sum())}
    if not real.any():
        return out
    reach = (np.asarray(cube["backward_reachable"].values, bool) if "backward_reachable" in cube
             else np.ones(conv.shape, bool))
    out.update(reached_scores(conv, reach, real))
    out["mean_iterations"] = {d: float(iters[..., j][real].mean())
                              for j, d in enumerate(DIRECTIONS)}
    used = real[..., None] & conv  # (L, T, D): averages count converged tiles only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_change = np.stack([change[..., j, :][used[..., j]].mean(axis=0)
                                for j in range(len(DIRECTIONS))])  # (D, K)
    out["mean_change"] = {d: {a: float(mean_change[j, k]) for k, a in enumerate(attrs)}
                          for j, d in enumerate(DIRECTIONS)}
    out["mean_change_tiles"] = {d: int(used[..., j].sum()) for j, d in enumerate(DIRECTIONS)}
    out.update(change_uncertainty(cube, attrs, mask.any(axis=1)))
    stability = score_stability(cube, attrs, mask.any(axis=1))
    if stability:
        out["stability"] = stability
    if "true_sensitivity" not in cube or target_mode == "absolute":
        return out
    out.update(_direction_scores(cube, attrs, targets, change, used, mean_change))
    return out


def change_uncertainty(cube, attrs, written: np.ndarray) -> dict:
    """Compact bootstrap metrics over the written lots, per direction and attribute: the median
    width of ``backward_change_ci`` and the share of lots whose interval excludes 0
    (``change_ci``); per direction the median over lots of ``backward_reached_share`` and the
    number of lots where no tile reached its target (``lots_none_reached``)."""
    out: dict[str, Any] = {}
    if "backward_change_ci" in cube and written.any():
        ci = np.asarray(cube["backward_change_ci"].values, np.float64)[written]  # (L, D, K, 2)
        if "backward_reached_share" in cube:  # none reached: no interval (stored as 0)
            none = np.asarray(cube["backward_reached_share"].values, np.float64)[written] == 0
            ci = np.where(none[..., None, None], np.nan, ci)
        summary = interval_summary(ci)  # (D, K) each
        out["ci_level"] = CI_LEVEL
        out["change_ci"] = {d: {a: {"width_median": float(summary["width_median"][j, k]),
                                    "excludes_zero_share":
                                        float(summary["excludes_zero_share"][j, k])}
                                for k, a in enumerate(attrs)} for j, d in enumerate(DIRECTIONS)}
    if "backward_reached_share" in cube and written.any():
        share = np.asarray(cube["backward_reached_share"].values, np.float64)[written]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["lot_reached_share_median"] = {d: float(np.nanmedian(share[:, j]))
                                               for j, d in enumerate(DIRECTIONS)}
        out["lots_none_reached"] = {d: int((share[:, j] == 0).sum())
                                    for j, d in enumerate(DIRECTIONS)}
    return out


def reached_scores(conv: np.ndarray, reach: np.ndarray, real: np.ndarray) -> dict:
    """Reached shares against reachable targets only, the unreachable counted separately:
    ``conv``, ``reach`` ``(L, T, D)`` bool, ``real`` ``(L, T)``."""
    out: dict[str, dict] = {"reached_share": {}, "reachable": {}, "unreachable": {},
                            "reached_unreachable": {}, "reached_share_all": {}}
    for j, d in enumerate(DIRECTIONS):
        c, r = conv[..., j][real], reach[..., j][real]
        out["reached_share"][d] = float(c[r].mean()) if r.any() else float("nan")
        out["reachable"][d] = int(r.sum())
        out["unreachable"][d] = int((~r).sum())
        out["reached_unreachable"][d] = int((c & ~r).sum())
        out["reached_share_all"][d] = float(c.mean())
    return out


def score_stability(cube, attrs, written: np.ndarray) -> dict:
    """Stability of A' over the written lots: per direction and attribute the mean over lots of
    ``backward_restart_spread`` and of ``backward_tile_spread``; the largest restart spread, and
    the share of (lot, direction) pairs whose largest restart spread over the attributes exceeds
    :data:`UNSTABLE_SPREAD` (``unstable_share``). Empty without those variables."""
    out: dict[str, Any] = {}
    for name, key in (("backward_restart_spread", "restart_spread"),
                      ("backward_tile_spread", "tile_spread")):
        if name not in cube or not written.any():
            continue
        v = np.asarray(cube[name].values, np.float64)[written]  # (L', D, K)
        mean = v.mean(axis=0)
        out[key] = {d: {a: float(mean[j, k]) for k, a in enumerate(attrs)}
                    for j, d in enumerate(DIRECTIONS)}
        out[f"{key}_max"] = float(v.max())
        if key == "restart_spread":
            out["unstable_share"] = float((v.max(axis=2) > UNSTABLE_SPREAD).mean())
            out["unstable_threshold"] = UNSTABLE_SPREAD
    return out


def _direction_scores(cube, attrs, targets, change, used, mean_change) -> dict:
    """``used (L, T, D)``: the real, converged tile-directions the lot means average."""
    written = np.asarray(cube["tile_mask"].values, bool).any(axis=1)
    truth = np.asarray(cube["true_sensitivity"].values, np.float64)
    lots = written & np.isfinite(truth).all(axis=1)
    if not lots.any():
        return {}
    law = truth[lots].mean(axis=0)
    neg = negligible_mask(law[None])[0]
    agrees: dict[str, dict[str, bool]] = {}
    lot_share: dict[str, dict[str, float]] = {}
    flags = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lot_mean = np.nanmean(np.where(used[..., None], change, np.nan), axis=1)  # (L, D, K)
    for j, d in enumerate(DIRECTIONS):
        sgn = np.sign(float(targets[j]))
        agrees[d], lot_share[d] = {}, {}
        for k, a in enumerate(attrs):
            if neg[k]:
                continue
            want = np.sign(law[k]) * sgn
            if not np.isfinite(mean_change[j, k]):
                continue
            ok = bool(np.sign(mean_change[j, k]) == want)
            agrees[d][a] = ok
            flags.append(ok)
            lm = lot_mean[lots, j, k]
            good = np.isfinite(lm)
            lot_share[d][a] = float((np.sign(lm[good]) == want).mean()) if good.any() else 0.0
    return {"direction_agrees": agrees, "direction_lot_share": lot_share,
            "direction_agreement_overall": float(np.mean(flags)) if flags else float("nan")}
