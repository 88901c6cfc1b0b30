"""The ``compare`` explainer's numbers from a cube: pixel faithfulness against the random map, the
share of GradCAM mass on the dataset's structures, the agreement of the attribute explanations
with the true effects, and the comparison table (see :mod:`mxplain_gradcam.compare`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mxplain.interfaces import ExplainContext
from mxplain.truth import negligible_mask


def _finite_mean(a) -> float | None:
    a = np.asarray(a, np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def _fmt(v: float | None, spec: str = "+.3f") -> str:
    return "n/a" if v is None else format(v, spec)


def _gain(att: dict) -> str:
    """The size of the top attribute's mean gain over a random edit (pixel-curve units), so that
    "beats random in 100 % of lots" is read with how much."""
    top, rnd = att.get("gain_top_normalised"), att.get("gain_random_normalised")
    return "n/a" if top is None or rnd is None else format(top - rnd, "+.3g")


def summary_table(metrics: dict, gtruth: dict, have: set) -> list[dict]:
    """The comparison table's rows: per pixel method and attribute explainer, faithfulness,
    ground truth, actionability and cost (``have``: the cube's variables)."""
    rows = []
    labels = {"gradcam": "GradCAM", "integrated_gradients": "Integrated Gradients",
              "random": "random map"}
    rnd = metrics["pixel"].get("random", {})
    for meth, e in metrics["pixel"].items():
        if meth == "random":
            faith = (f"del AUC {_fmt(e['deletion_auc'])}, ins AUC {_fmt(e['insertion_auc'])}"
                     " (baseline)")
        else:
            faith = (f"del AUC {_fmt(e['deletion_auc'])} (random "
                     f"{_fmt(rnd.get('deletion_auc'))}), ins AUC "
                     f"{_fmt(e['insertion_auc'])} (random {_fmt(rnd.get('insertion_auc'))})")
        rows.append({"method": labels.get(meth, meth), "kind": "pixel",
                     "faithfulness": faith,
                     "deletion_auc": e["deletion_auc"], "insertion_auc": e["insertion_auc"],
                     "ground_truth": "n/a — no attribute direction",
                     "actionable_direction": "no",
                     "cost_ms_per_tile": e["cost_ms_per_tile"]})
    att = metrics["attribute"]
    fwd_gt = gtruth.get("forward") or gtruth.get("compare_sweep")
    if att or "sensitivity" in have:
        faith = (f"top-attribute edit {_fmt(att.get('gain_top_normalised'))} vs random "
                 f"{_fmt(att.get('gain_random_normalised'))} (pixel-curve units): top beats "
                 f"random in {_fmt(att.get('top_beats_random'), '.0%')} of lots, by "
                 f"{_gain(att)} on average"
                 if att else "n/a — no editor")
        rows.append({"method": "forward (attribute sweep)", "kind": "attribute",
                     "faithfulness": faith,
                     "gain_top_normalised": att.get("gain_top_normalised"),
                     "gain_random_normalised": att.get("gain_random_normalised"),
                     "ground_truth": (f"sign agreement {fwd_gt['agreement']:.0%}"
                                      if fwd_gt else "n/a — no ground truth"),
                     "sign_agreement": fwd_gt["agreement"] if fwd_gt else None,
                     "actionable_direction": "yes",
                     "cost_ms_per_tile": att.get("cost_ms_per_tile")})
    if "backward_attributes" in have:
        bw = gtruth.get("backward")
        reach = metrics.get("backward_target_reached")
        rows.append({"method": "backward (counterfactual)", "kind": "attribute",
                     "faithfulness": (f"median share of the requested change reached "
                                      f"{reach:.0%} (reachable targets)"
                                      if reach is not None else "n/a"),
                     "ground_truth": (f"sign agreement {bw['agreement']:.0%}"
                                      if bw else "n/a — no ground truth"),
                     "sign_agreement": bw["agreement"] if bw else None,
                     "actionable_direction": "yes",
                     "cost_ms_per_tile": None})
    return rows


def _pixel_scores(cube) -> dict[str, dict]:
    """Per pixel method: mean deletion and insertion AUC, cost, and the gains over the random
    map (empty without ``deletion_auc`` in the cube)."""
    if "deletion_auc" not in cube.data_vars:
        return {}
    pixel: dict[str, dict] = {}
    meths = [str(v) for v in cube["deletion_auc"]["pixel_method"].values]
    dauc = np.asarray(cube["deletion_auc"].values, np.float64)
    iauc = np.asarray(cube["insertion_auc"].values, np.float64)
    costs = np.asarray(cube["pixel_cost_ms"].values, np.float64)
    ri = meths.index("random") if "random" in meths else None
    for j, meth in enumerate(meths):
        d, i = dauc[..., j], iauc[..., j]
        entry = {"deletion_auc": _finite_mean(d), "insertion_auc": _finite_mean(i),
                 "cost_ms_per_tile": _finite_mean(costs[:, j]),
                 "tiles": int(np.isfinite(d).sum())}
        if ri is not None and meth != "random":
            dr, ir = dauc[..., ri], iauc[..., ri]
            ok = np.isfinite(d) & np.isfinite(dr)
            entry["deletion_gain_vs_random"] = _finite_mean(dr[ok] - d[ok])
            entry["insertion_gain_vs_random"] = _finite_mean(i[ok] - ir[ok])
            entry["deletion_beats_random"] = (float((d[ok] < dr[ok]).mean())
                                              if ok.any() else None)
        pixel[meth] = entry
    return pixel


def _structure_scores(cube, truth: np.ndarray | None, ctx: ExplainContext,
                      skipped: list) -> dict[str, Any]:
    """Per structure its share of |GradCAM| mass and of area and their ratio (``enrichment``);
    with the true effects, each structure's attribute (``ctx.structures``) and its |effect|, and
    ``order_agrees_with_truth``: every pair of structures with an attribute is enriched in the
    order of their true effects. Empty, with the reason in ``skipped``, where the cube has no
    structure masses (the dataset has no segmentation)."""
    if "structure_mass" not in cube.data_vars or not np.isfinite(
            cube["structure_mass"].values).any():
        skipped.append("structures: the dataset has no segmentation into labelled structures "
                       "(Dataset.segment)")
        return {}
    structures: dict[str, Any] = {}
    mass = np.nanmean(np.asarray(cube["structure_mass"].values, np.float64), 0)
    area = np.nanmean(np.asarray(cube["structure_area"].values, np.float64), 0)
    snames = [str(v) for v in cube["structure_mass"]["structure"].values]
    for j, s in enumerate(snames):
        structures[s] = {"mass_share": float(mass[j]), "area_share": float(area[j]),
                         "enrichment": float(mass[j] / area[j]) if area[j] > 0 else None}
    tmean = _truth_mean(truth, ctx) if truth is not None else {}
    carries = {s: a for s, a in ctx.structures.items() if a is not None}
    eff = {s: abs(tmean[a]) for s, a in carries.items() if a in tmean and s in structures}
    for s, e in eff.items():
        structures[s]["true_effect_abs"] = e
        structures[s]["attribute"] = carries[s]
    if len(eff) >= 2 and all(structures[s]["enrichment"] is not None for s in eff):
        names = list(eff)
        structures["order_agrees_with_truth"] = all(
            (structures[a]["enrichment"] > structures[b]["enrichment"]) == (eff[a] > eff[b])
            for i, a in enumerate(names) for b in names[i + 1:])
    return structures


def _truth_mean(truth: np.ndarray, ctx: ExplainContext) -> dict[str, float]:
    names = list(ctx.attributes)
    if len(names) != truth.shape[-1]:
        return {}
    with np.errstate(all="ignore"):
        row = np.nanmean(truth, 0)
    return {a: float(v) for a, v in zip(names, row) if np.isfinite(v)}


def _counterfactuals(cube) -> np.ndarray | None:
    """``(lot, tile, direction)``: the tile-directions that are counterfactuals, i.e. whose
    target was reachable and reached (``backward_reachable`` and ``backward_converged``, where
    the cube has them; None: every one counts). A target met at the start or missed is none."""
    have = set(cube.data_vars)
    mask = None
    for name in ("backward_reachable", "backward_converged"):
        if name in have:
            m = np.asarray(cube[name].values, bool)
            mask = m if mask is None else mask & m
    return mask


def _backward_agreement(cube, truth: np.ndarray) -> dict:
    """Sign of the counterfactual attribute change vs the true effect (increase: same sign,
    decrease: opposite sign), per tile, over the counterfactuals (:func:`_counterfactuals`) and
    the attributes that moved by more than 1e-3 and whose true effect is not negligible
    (:mod:`mxplain.truth`)."""
    ba = np.asarray(cube["backward_attributes"].values, np.float64)  # lot, tile, dir, attr
    la = np.asarray(cube["lot_attributes"].values, np.float64)  # lot, attr
    dirs = [str(d) for d in cube["backward_attributes"]["direction"].values]
    moved = ba - la[:, None, None, :]
    sign_dir = np.array([1.0 if d == "increase" else -1.0 for d in dirs])[None, None, :, None]
    t = np.broadcast_to(truth[:, None, None, :], moved.shape)
    scored = np.broadcast_to(~negligible_mask(truth)[:, None, None, :], moved.shape)
    ok = np.isfinite(moved) & scored & (np.abs(moved) > 1e-3)
    cf = _counterfactuals(cube)
    if cf is not None:
        ok &= cf[..., None]
    if not ok.any():
        return {"agreement": None, "pairs": 0}
    agree = np.sign(moved[ok]) == np.sign((t * sign_dir)[ok])
    return {"agreement": float(agree.mean()), "pairs": int(ok.sum())}


def _backward_faithfulness(cube) -> float | None:
    """Median over the tile-directions whose target was reachable (``backward_reachable`` where
    the cube has it: a target within the tolerance of the start asks for no change) of
    (achieved change) / (requested change), both from the prediction the backward explainer
    starts from: ``reconstruction_prediction`` (the editor's reconstruction at the lot's
    attributes) where present, else ``prediction``."""
    have = set(cube.data_vars)
    start = "reconstruction_prediction" if "reconstruction_prediction" in have else "prediction"
    if not {"backward_prediction", "backward_target", start} <= have:
        return None
    bp = np.asarray(cube["backward_prediction"].values, np.float64)
    bt = np.asarray(cube["backward_target"].values, np.float64)
    p = np.asarray(cube[start].values, np.float64)[..., None]
    req = bt - p
    ok = np.isfinite(bp) & np.isfinite(req) & (np.abs(req) > 1e-9)
    if "backward_reachable" in have:
        ok &= np.asarray(cube["backward_reachable"].values, bool)
    if not ok.any():
        return None
    return float(np.median((bp - p)[ok] / req[ok]))
