"""The ``latent_design`` explainer's numbers and summary figures from a cube: the simulated
property's rise along each path (with bootstrap intervals), the calibration of the dataset's
measurement against the lot labels, the interpretability scores of seed 001 §4.1 and their figures
(see :mod:`mxplain_latent.design` for the method)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from mxplain.figures import save_figure
from mxplain.truth import sign_agreement

PATHS = ("latent", "pixel")


def _boot_ci(x: np.ndarray, rng: np.random.Generator, n_boot: int) -> list[float] | None:
    """95 % percentile bootstrap interval of the mean of ``x`` (tiles resampled)."""
    if len(x) < 2:
        return None
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def simulated_rise(sim: np.ndarray, pred: np.ndarray, seed: int = 0, n_boot: int = 1000,
                   compare_prediction: bool = True) -> dict:
    """The true (simulated) property along each path: ``sim`` and ``pred`` ``(T, P, S)`` (tiles,
    paths in :data:`PATHS` order, steps). Per path the mean rise from step 0 to the last step with
    a 95 % percentile bootstrap interval over tiles, the share of tiles whose true property rose,
    the mean true property per step, and the ratio of the true to the predicted mean rise (with
    ``compare_prediction``: only where the predictor predicts the simulated property, else
    ``None``); and the paired difference latent minus pixel (the same tiles resampled for both)."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(21,)))
    rise = sim[:, :, -1] - sim[:, :, 0]  # (T, P)
    prise = pred[:, :, -1] - pred[:, :, 0]
    out: dict[str, Any] = {"tiles": int(len(sim)), "n_boot": int(n_boot),
                           "interval": "95 % percentile bootstrap over tiles"}
    for j, path in enumerate(PATHS[: sim.shape[1]]):
        r, pm = rise[:, j], float(prise[:, j].mean())
        out[path] = {"start_mean": float(sim[:, j, 0].mean()),
                     "rise_mean": float(r.mean()), "rise_ci": _boot_ci(r, rng, n_boot),
                     "rise_positive_share": float(np.mean(r > 0)),
                     "mean_by_step": [float(v) for v in sim[:, j].mean(0)],
                     "true_over_predicted_rise": (float(r.mean() / pm)
                                                  if pm != 0 and compare_prediction else None)}
    if sim.shape[1] >= 2:
        diff = rise[:, 0] - rise[:, 1]
        out["latent_minus_pixel_rise"] = float(diff.mean())
        out["latent_minus_pixel_rise_ci"] = _boot_ci(diff, rng, n_boot)
    return out


def simulated_figure(sim: np.ndarray, summary: dict, folder) -> str:
    """The simulated property along both paths (mean over tiles, 95 % bootstrap band per step)
    and each path's mean rise with its interval."""
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    T, P, S = sim.shape
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(8.0, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    idx = rng.integers(0, T, (500, T))
    for j, (path, col) in enumerate(zip(PATHS, ("C0", "C3"))):
        band = np.percentile(sim[idx, j].mean(1), [2.5, 97.5], axis=0)
        ax.plot(np.arange(S), sim[:, j].mean(0), color=col, label=f"{path} path")
        ax.fill_between(np.arange(S), band[0], band[1], color=col, alpha=0.2, lw=0)
        res = summary[path]
        ci = res["rise_ci"] or [res["rise_mean"]] * 2
        bx.bar(j, res["rise_mean"], color=col, yerr=[[res["rise_mean"] - ci[0]],
                                                   [ci[1] - res["rise_mean"]]], capsize=4)
    ax.set_xlabel("design step", fontsize=8)
    ax.set_ylabel(f"simulated {summary.get('property', 'property')}", fontsize=8)
    ax.legend(fontsize=7)
    bx.axhline(0, color="k", lw=0.6)
    bx.set_xticks(range(P))
    bx.set_xticklabels([f"{p}\n({summary[p]['rise_positive_share']:.0%} rose)"
                        for p in PATHS[:P]], fontsize=8)
    bx.set_ylabel("true rise (95 % CI)", fontsize=8)
    fig.suptitle(f"Design judged by physics ({T} tiles)", fontsize=9)
    return str(save_figure(fig, Path(folder) / "latent_design_simulated.png", dpi=110))


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.var(x) <= 0:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def calibration_slopes(m0: np.ndarray, ok0: np.ndarray, labels: np.ndarray,
                       min_t: float = 2.0) -> np.ndarray:
    """Per attribute, the factor that turns a change of the raw measurement into a change on the
    attribute (lot label) scale: ``1 / alpha`` of the classical calibration line
    ``m = alpha * a + beta + noise`` fitted on the original tiles (``m0`` (T, K) with validity
    ``ok0``, ``labels`` (T, K)).

    The measurement is regressed on the label, not the label on the measurement: a tile's
    measurement is noisy around its lot's exact label, and the reverse regression's slope
    ``cov(m, a) / var(m)`` is attenuated by the measurement's reliability (``corr^2``), a different
    factor per attribute, which would distort the direction of the trait vector. NaN (attribute left
    out of the scores) where the measurement is not demonstrably related to the label: fewer than
    3 valid tiles, no spread, or a correlation whose t statistic is below ``min_t``."""
    T, K = m0.shape
    calib = np.full(K, np.nan)
    for k in range(K):
        good = ok0[:, k] & np.isfinite(m0[:, k]) & np.isfinite(labels[:, k])
        n = int(good.sum())
        if n < 4:
            continue
        m, a = m0[good, k], labels[good, k]
        if np.var(a) <= 0 or np.var(m) <= 0:
            continue
        r = float(np.corrcoef(m, a)[0, 1])
        t = abs(r) * math.sqrt(n - 2) / math.sqrt(max(1.0 - r * r, 1e-12))
        if not np.isfinite(t) or t < min_t:
            continue
        alpha = np.cov(m, a)[0, 1] / np.var(a, ddof=1)
        calib[k] = 1.0 / alpha
    return calib


def interpretability_scores(pred: np.ndarray, meas: np.ndarray, ok: np.ndarray,
                            labels: np.ndarray, truth: np.ndarray) -> dict:
    """Seed 001 §4.1 scores per path (see the module docstring).

    ``pred`` (T, P, S) predictions along each path, ``meas`` (T, P, S, K) raw measurements with
    validity ``ok``, ``labels`` (T, K) the tiles' lot attributes, ``truth`` (K,) the true
    ``d property / d attribute``. Paths are ``PATHS`` in order."""
    T, P, S, K = meas.shape
    calib = calibration_slopes(meas[:, -1, 0], ok[:, -1, 0], labels)
    use = np.isfinite(truth) & np.isfinite(calib)
    s = np.where(use, truth, 0.0)
    out: dict[str, Any] = {"calibration": {
        "slope_attribute_per_measured": [None if not np.isfinite(v) else float(v) for v in calib],
        "method": "classical (measurement on label, inverted); t >= 2",
        "scored": use.tolist()}}
    for j in range(P):
        traits = np.full((T, K), np.nan)
        explained = np.full(T, np.nan)
        for t in range(T):
            dp = pred[t, j, -1] - pred[t, j, 0]
            delta = np.zeros(K)
            for k in range(K):
                if not use[k]:
                    continue
                g = ok[t, j, :, k]
                a = meas[t, j, g, k] * calib[k]
                traits[t, k] = _slope(pred[t, j, g], a)
                if g[0] and g[-1]:
                    delta[k] = a[-1] - a[0]
                else:
                    delta[k] = np.nan
            if abs(dp) > 0 and np.isfinite(delta).all():
                explained[t] = float(s @ delta / dp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_trait = np.nanmean(traits, axis=0)
        mt = np.where(use & np.isfinite(mean_trait), mean_trait, 0.0)
        den = np.linalg.norm(mt) * np.linalg.norm(s)
        cos = float(mt @ s / den) if den > 0 else float("nan")
        ratio = float(den)  # ||t|| / ||t*|| with ||t*|| = 1 / ||s||
        score = cos * min(ratio, 1.0 / ratio) if den > 0 else float("nan")
        sign = sign_agreement(traits, s, weights=np.abs(s))["agreement"]
        sign = float("nan") if sign is None else sign
        name = PATHS[j] if j < len(PATHS) else str(j)
        out[name] = {
            "interpretability": None if math.isnan(score) else score,
            "direction_cosine": None if math.isnan(cos) else cos,
            "magnitude_ratio": None if math.isnan(score) else ratio,
            "sign_agreement": None if math.isnan(sign) else sign,
            "explained_fraction": (float(np.nanmedian(explained))
                                   if np.isfinite(explained).any() else None),
            "trait": [None if not np.isfinite(v) else float(v) for v in mean_trait],
            "tiles_scored": int(np.isfinite(traits).any(axis=1).sum()),
        }
    return out


def trait_figure(summary: dict, attrs: list[str], folder) -> str:
    """Bar chart: mean trait d(attribute)/d(property) per path next to the law's, in units of the
    law's trait length (so a path whose attribute changes are too small for its rise has short
    bars whatever their direction)."""
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    xk = np.arange(len(attrs))
    truth = np.array([np.nan if summary["true_trait_direction"][a] is None
                      else summary["true_trait_direction"][a] for a in attrs], float)
    law = np.array([np.nan if summary["true_trait"][a] is None else summary["true_trait"][a]
                    for a in attrs], float)
    unit = float(np.linalg.norm(np.nan_to_num(law)))
    ax.bar(xk - 0.27, np.nan_to_num(truth), 0.27, label="law", color="0.6")
    for off, path, col in ((0.0, "latent", "C0"), (0.27, "pixel", "C3")):
        t = np.array([np.nan if v is None else v for v in summary[path]["trait"]], float)
        t = t / unit if unit > 0 else t
        res = summary[path]
        sc, cos, r = (res.get(k) for k in ("interpretability", "direction_cosine",
                                           "magnitude_ratio"))
        lab = (f"{path} path: score {sc:.2f} (cos {cos:.2f}, size x{r:.2g})"
               if None not in (sc, cos, r) else f"{path} path")
        ax.bar(xk + off, np.nan_to_num(t), 0.27, label=lab, color=col)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(xk)
    ax.set_xticklabels([a if np.isfinite(v) else f"{a}\n(not scored)" for a, v in zip(attrs, truth)],
                       fontsize=8)
    ax.set_ylabel("d attribute / d prediction\n(units of the law's trait length)", fontsize=8)
    ax.legend(fontsize=7)
    return str(save_figure(fig, Path(folder) / "latent_design_traits.png", dpi=110))
