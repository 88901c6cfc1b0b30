"""Pixel explanations (GradCAM, Integrated Gradients) and attribute explanations side by side.

``Compare`` (explainer ``compare``) works per lot in :meth:`Compare.explain_lot` on a subset of the
lot's tiles (the first ``max_tiles``) and aggregates in
:meth:`Compare.summarize`:

* **Pixel faithfulness** -- deletion and insertion curves. Pixels are ranked by their *signed*
  attribution toward increasing the prediction (most positive first). Deletion replaces the top
  fraction of pixels by the reference tile (``reference="blur"``: the tile blurred with
  sigma = tile size / 16; ``"mean"``: its mean grey level), insertion starts from the reference and
  puts the top pixels of the original back. With ``p0`` the prediction on the original, ``pr`` on
  the reference and ``s = max(|p0 - pr|, 0.1 * mean over the lot's subset of |p0 - pr|)``:
  ``deletion_curve = (p_k - p0) / s`` (starts at 0; lower area = more faithful) and
  ``insertion_curve = (p_k - pr) / s`` (starts at 0; higher area = more faithful). Areas use the
  trapezoid rule over the fraction of pixels in [0, 1]. A random map (seeded by the run's seed and
  the lot index) is the baseline.
* **Attribute faithfulness** (needs an editor) -- the lot's attribute slopes are estimated with a
  forward sweep (``sweep_steps`` values in [0, 1], each attribute in turn, the others at the lot's
  labels; the slope of the mean prediction, ``edit_slope``); the top attribute by |slope| is edited
  by ``delta`` in the direction of its sign and the mean prediction change (``attribute_gain_top``)
  is compared with a random attribute edited by ``delta`` in a random direction
  (``attribute_gain_random``: the exact expectation over all attributes and both directions).
  Summaries also give both in the units of the pixel curves (divided by ``pixel_scale``).
* **Structures** (where the dataset segments its tiles: ``ctx.segment`` and ``ctx.structures``,
  :meth:`mxplain.interfaces.Dataset.segment`; synthetic lots: holes, boundaries, crystals) -- share
  of |GradCAM| mass on each structure vs its share of area, and whether the structures' order of
  enrichment follows the true effects of the attributes they carry.
* A comparison table (metrics and ``figures/compare_table.png``), mean curves
  (``figures/compare_faithfulness.png``), overlays of the first tile of ``overlay_tiles`` lots
  (``figures/overlay_<lot>_<tile>.png``) and per-lot mean GradCAM maps
  (``figures/gradcam_lot_mean.png``).
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.interfaces import ExplainContext, Explainer, Lot, Variable
from mxplain.truth import negligible_mask, sign_agreement
from mxplain_gradcam.gradcam import GradCAM, check_differentiable, default_sigma, gaussian_blur

PIXEL_METHODS = ("gradcam", "integrated_gradients", "random")


def subset_indices(n: int, max_tiles: int) -> np.ndarray:
    """The first ``min(n, max_tiles)`` tiles (tiles of a lot are exchangeable crops); a prefix,
    so that the results-cube writer pads the rest of the tile axis."""
    return np.arange(min(int(n), max(int(max_tiles), 1)), dtype=np.int64)


def reference_tiles(tiles: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "blur":
        return gaussian_blur(tiles, default_sigma(tiles))
    if kind == "mean":
        return tiles.mean(dim=(1, 2, 3), keepdim=True).expand_as(tiles).contiguous()
    raise UserError(f"[explain.compare] reference must be 'blur' or 'mean', got {kind!r}")


def perturbation_curves(predict, tiles: torch.Tensor, maps: np.ndarray, steps: int,
                        reference: torch.Tensor) -> dict[str, np.ndarray]:
    """Deletion and insertion curves of ``maps`` (``(m, H, W)``, signed) on ``tiles``.

    ``predict``: ``(N, 1, H, W)`` float tensor -> ``(N,)`` numpy. Returns raw predictions
    ``p_del``/``p_ins`` ``(m, steps + 1)``, ``p0``/``pr`` ``(m,)`` and the fractions."""
    m, _, h, w = tiles.shape
    npix = h * w
    fractions = np.linspace(0.0, 1.0, int(steps) + 1)
    counts = np.round(fractions * npix).astype(np.int64)
    flat = np.asarray(maps, np.float64).reshape(m, npix)
    order = np.argsort(-flat, axis=1, kind="stable")
    rank = np.empty_like(order)
    rows = np.arange(m)[:, None]
    rank[rows, order] = np.arange(npix)[None, :]
    rank_t = torch.from_numpy(rank).view(m, 1, h, w)
    deleted, inserted = [], []
    for c in counts:
        mask = rank_t < int(c)
        deleted.append(torch.where(mask, reference, tiles))
        inserted.append(torch.where(mask, tiles, reference))
    p_del = predict(torch.stack(deleted, 1).reshape(-1, 1, h, w)).reshape(m, len(counts))
    p_ins = predict(torch.stack(inserted, 1).reshape(-1, 1, h, w)).reshape(m, len(counts))
    return {"p_del": p_del, "p_ins": p_ins, "p0": p_del[:, 0], "pr": p_ins[:, 0],
            "fractions": fractions}


def normalised_curves(raw: dict[str, np.ndarray], scale: np.ndarray) -> tuple[np.ndarray, ...]:
    """(deletion curve, insertion curve, deletion AUC, insertion AUC), per tile."""
    s = scale[:, None]
    dele = (raw["p_del"] - raw["p0"][:, None]) / s
    ins = (raw["p_ins"] - raw["pr"][:, None]) / s
    f = raw["fractions"]
    return dele, ins, np.trapezoid(dele, f, axis=1), np.trapezoid(ins, f, axis=1)


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


class Compare(Explainer):
    """GradCAM / IG vs attribute explanations: faithfulness, ground truth, cost; figures."""

    name: ClassVar[str] = "compare"
    test_params: ClassVar[dict] = {"max_tiles": 2, "curve_steps": 4, "ig_steps": 4, "sweep_steps": 3,
                                   "overlay_tiles": 1}
    requires_gradients: ClassVar[bool] = True

    @classmethod
    def requirements(cls, params: dict) -> frozenset[str]:
        """GradCAM's needs (a differentiable predictor with a torch module); the editor is
        optional (without one the attribute part is left out)."""
        return frozenset({"predictor", "gradients", "torch_module"})

    def __init__(self, max_tiles: int = 8, curve_steps: int = 16, delta: float = 0.3,
                 overlay_tiles: int = 3, layer: str | None = None, ig_steps: int = 16,
                 ig_baseline: str = "mean", reference: str = "blur", sweep_steps: int = 5,
                 batch_size: int = 64):
        self.max_tiles = max_tiles
        self.curve_steps = curve_steps
        self.delta = delta
        self.overlay_tiles = overlay_tiles
        self.layer = layer
        self.ig_steps = ig_steps
        self.ig_baseline = ig_baseline
        self.reference = reference
        self.sweep_steps = sweep_steps
        self.batch_size = batch_size

    # ---------------------------------------------------------------- cube layout
    def extra_dims(self) -> dict[str, Any]:
        return {"pixel_method": list(PIXEL_METHODS),
                "curve_fraction": np.linspace(0.0, 1.0, int(self.curve_steps) + 1)}

    @staticmethod
    def _parts(ctx: ExplainContext) -> tuple[bool, bool]:
        """(attribute part: an editor is in the run, structure part: the dataset segments its
        tiles; the cube's ``structure`` dimension holds ``ctx.structures``)."""
        return (ctx.editor is not None and len(ctx.attributes) > 0,
                ctx.segment is not None and len(ctx.structures) > 0)

    def variables(self, ctx: ExplainContext) -> dict[str, Variable]:
        """Every value is finite; the parts that cannot run (no editor, no segmentation) are not
        declared at all, and tiles beyond ``max_tiles`` are padded (NaN) by the cube writer."""
        f32 = "float32"
        out = {
            "deletion_auc": Variable(("lot", "tile", "pixel_method"), f32),
            "insertion_auc": Variable(("lot", "tile", "pixel_method"), f32),
            "deletion_curve": Variable(("lot", "pixel_method", "curve_fraction"), f32),
            "insertion_curve": Variable(("lot", "pixel_method", "curve_fraction"), f32),
            "pixel_cost_ms": Variable(("lot", "pixel_method"), f32, units="ms"),
            "pixel_scale": Variable(("lot",), f32),
            "overlay_image": Variable(("lot", "y", "x"), f32),
            "overlay_gradcam": Variable(("lot", "y", "x"), f32),
            "overlay_ig": Variable(("lot", "y", "x"), f32),
            "gradcam_mean": Variable(("lot", "y", "x"), f32),
        }
        attribute_part, structure_part = self._parts(ctx)
        slope = f"{ctx.property_units} per unit attribute" if ctx.property_units else ""
        if attribute_part:
            out.update({
                "edit_slope": Variable(("lot", "attribute"), f32, units=slope),
                "attribute_top": Variable(("lot",), "int32", -1),
                "attribute_gain_top": Variable(("lot",), f32, units=ctx.property_units),
                "attribute_gain_random": Variable(("lot",), f32, units=ctx.property_units),
                "attribute_cost_ms": Variable(("lot",), f32, units="ms"),
            })
        if structure_part:
            out.update({
                "structure_mass": Variable(("lot", "structure"), f32),
                "structure_area": Variable(("lot", "structure"), f32),
            })
        return out

    @classmethod
    def check_params(cls, params: dict) -> None:
        """Ranges and choices of ``[explain.compare]``, when the config is resolved."""
        p = {**cls.param_defaults(), **params}
        cls(**p)._check()
        for key, choices in (("reference", ("blur", "mean")), ("ig_baseline", ("mean", "blur"))):
            if p[key] not in choices:
                raise UserError(f"[explain.compare] {key} must be one of {', '.join(choices)}, "
                                f"got {p[key]!r}")

    def _check(self) -> None:
        if int(self.max_tiles) < 1:
            raise UserError(f"[explain.compare] max_tiles must be >= 1, got {self.max_tiles!r}")
        if int(self.curve_steps) < 2:
            raise UserError(f"[explain.compare] curve_steps must be >= 2, got "
                            f"{self.curve_steps!r}")
        if not 0 < float(self.delta) <= 1:
            raise UserError(f"[explain.compare] delta must be in (0, 1], got {self.delta!r}")
        if int(self.sweep_steps) < 2:
            raise UserError(f"[explain.compare] sweep_steps must be >= 2, got "
                            f"{self.sweep_steps!r}")

    # ---------------------------------------------------------------- per lot
    def explain_lot(self, lot: Lot, ctx: ExplainContext) -> dict[str, np.ndarray]:
        self._check()
        predictor = ctx.predictor
        check_differentiable(predictor, "compare")
        tiles = lot.tiles.float()
        n, _, h, w = tiles.shape
        nm = len(PIXEL_METHODS)
        sel = subset_indices(n, self.max_tiles)
        sub = tiles[sel]
        m = len(sub)

        def predict(x: torch.Tensor) -> np.ndarray:
            return predictor.predict(x, batch_size=int(self.batch_size)).astype(np.float64)

        if m == 0:
            raise UserError(f"compare: lot {lot.lot_id!r} has no tiles")
        out: dict[str, np.ndarray] = {
            "deletion_auc": np.zeros((m, nm), np.float32),
            "insertion_auc": np.zeros((m, nm), np.float32),
            "deletion_curve": np.zeros((nm, int(self.curve_steps) + 1), np.float32),
            "insertion_curve": np.zeros((nm, int(self.curve_steps) + 1), np.float32),
            "pixel_cost_ms": np.zeros(nm, np.float32),
        }

        # pixel maps and their cost
        gc = GradCAM(layer=self.layer, batch_size=self.batch_size, ig_steps=self.ig_steps,
                     ig_baseline=self.ig_baseline)
        maps, cost = gc.timed(sub, predictor)
        rng = np.random.default_rng([int(ctx.seed), int(lot.index)])
        t0 = time.perf_counter()
        maps["random"] = rng.standard_normal((m, h, w)).astype(np.float32)
        cost["random"] = 1000.0 * (time.perf_counter() - t0) / m

        # deletion / insertion
        ref = reference_tiles(sub, self.reference)
        raws = {meth: perturbation_curves(predict, sub, maps[meth], self.curve_steps, ref)
                for meth in PIXEL_METHODS}
        change = np.abs(raws["gradcam"]["p0"] - raws["gradcam"]["pr"])
        lot_scale = float(change.mean())
        scale = np.maximum(change, max(0.1 * lot_scale, 1e-8))
        for j, meth in enumerate(PIXEL_METHODS):
            dele, ins, dauc, iauc = normalised_curves(raws[meth], scale)
            out["deletion_auc"][:, j] = dauc
            out["insertion_auc"][:, j] = iauc
            out["deletion_curve"][j] = dele.mean(0)
            out["insertion_curve"][j] = ins.mean(0)
            out["pixel_cost_ms"][j] = cost[meth]
        out["pixel_scale"] = np.array(lot_scale, np.float32)
        out["overlay_image"] = sub[0, 0].numpy().astype(np.float32)
        out["overlay_gradcam"] = maps["gradcam"][0]
        out["overlay_ig"] = maps["integrated_gradients"][0]
        out["gradcam_mean"] = maps["gradcam"].mean(0).astype(np.float32)

        attribute_part, structure_part = self._parts(ctx)
        # attribute explanations, edited with the editor
        if attribute_part:
            out.update(self._attribute_part(lot, sub, ctx, predict))

        # GradCAM mass on the structures of synthetic tiles
        if structure_part:
            mass, area = self._structures(sub, maps["gradcam"], ctx)
            out["structure_mass"], out["structure_area"] = mass, area
        return out

    def _attribute_part(self, lot: Lot, sub: torch.Tensor, ctx: ExplainContext,
                        predict) -> dict[str, np.ndarray]:
        editor = ctx.editor
        k = len(ctx.attributes)
        m = len(sub)
        base = np.asarray(lot.attributes, np.float64).reshape(-1)[:k]
        base = np.where(np.isfinite(base), base, 0.5)
        dev = editor.device  # TrainableModel.device (the CPU until to() moves it)
        with torch.no_grad():
            t0 = time.perf_counter()
            latent = editor.encode(sub.to(dev))

            def edited(attrs: np.ndarray) -> np.ndarray:
                a = torch.as_tensor(np.tile(attrs, (m, 1)), dtype=torch.float32, device=dev)
                return predict(editor.decode(latent, a).float().cpu())

            values = np.linspace(0.0, 1.0, int(self.sweep_steps))
            slopes = np.zeros(k)
            for j in range(k):
                means = []
                for v in values:
                    a = base.copy()
                    a[j] = v
                    means.append(edited(a).mean())
                slopes[j] = np.polyfit(values, np.asarray(means), 1)[0]
            cost = 1000.0 * (time.perf_counter() - t0) / m
            p_ref = edited(base)
            gains = np.zeros((k, 2))
            for j in range(k):
                for d, sign in enumerate((1.0, -1.0)):
                    a = base.copy()
                    a[j] = np.clip(a[j] + sign * float(self.delta), 0.0, 1.0)
                    gains[j, d] = float((edited(a) - p_ref).mean())
        top = int(np.argmax(np.abs(slopes)))
        d_top = 0 if slopes[top] >= 0 else 1
        return {
            "edit_slope": slopes.astype(np.float32),
            "attribute_top": np.array(top, np.int32),
            "attribute_gain_top": np.array(gains[top, d_top], np.float32),
            "attribute_gain_random": np.array(gains.mean(), np.float32),
            "attribute_cost_ms": np.array(cost, np.float32),
        }

    @staticmethod
    def _structures(sub: torch.Tensor, cams: np.ndarray, ctx: ExplainContext
                    ) -> tuple[np.ndarray, ...]:
        """Per structure of ``ctx.structures``: the mean over tiles of the share of |GradCAM| mass
        on it and of its share of the area."""
        from mxplain.store import to_uint8

        imgs = to_uint8(sub)
        names = list(ctx.structures)
        masks = ctx.segment(imgs)
        mass = np.zeros((len(imgs), len(names)))
        area = np.zeros_like(mass)
        for i, img in enumerate(imgs):
            g = np.abs(cams[i]).astype(np.float64)
            tot = g.sum()
            for j, s in enumerate(names):
                mk = np.asarray(masks[s][i], bool) if s in masks else np.zeros(img.shape, bool)
                area[i, j] = mk.mean()
                # an all-zero map puts no mass anywhere: count it as uniform (mass = area)
                mass[i, j] = g[mk].sum() / tot if tot > 0 else area[i, j]
        return mass.mean(0).astype(np.float32), area.mean(0).astype(np.float32)

    # ---------------------------------------------------------------- summary
    def summarize(self, cube, ctx: ExplainContext) -> dict:
        from mxplain_gradcam import figures

        metrics: dict[str, Any] = {"skipped": []}
        skipped = metrics["skipped"]
        have = set(cube.data_vars)

        # --- pixel faithfulness
        metrics["pixel"] = _pixel_scores(cube)
        if not metrics["pixel"]:
            skipped.append("pixel faithfulness: no deletion_auc in the cube")

        # --- attribute faithfulness (compare's own edits)
        attribute: dict[str, Any] = {}
        gt = np.asarray(cube["attribute_gain_top"].values, np.float64) \
            if "attribute_gain_top" in have else np.full(1, np.nan)
        if np.isfinite(gt).any():
            gr = np.asarray(cube["attribute_gain_random"].values, np.float64)
            sc = np.asarray(cube["pixel_scale"].values, np.float64)
            ok = np.isfinite(gt) & np.isfinite(gr)
            norm = np.where(sc > 0, sc, np.nan)
            attribute = {
                "gain_top": _finite_mean(gt[ok]), "gain_random": _finite_mean(gr[ok]),
                "gain_top_normalised": _finite_mean(gt[ok] / norm[ok]),
                "gain_random_normalised": _finite_mean(gr[ok] / norm[ok]),
                "top_beats_random": float((gt[ok] > gr[ok]).mean()),
                "delta": float(self.delta),
                "cost_ms_per_tile": _finite_mean(cube["attribute_cost_ms"].values),
                "lots": int(ok.sum()),
            }
        else:
            skipped.append("attribute faithfulness: no editor in the run")
        metrics["attribute"] = attribute

        # --- ground truth
        truth = self._truth(cube, ctx)
        gtruth: dict[str, Any] = {}
        if truth is None:
            skipped.append("ground truth: no true_sensitivity (not synthetic data)")
        else:
            if "sensitivity" in have:
                gtruth["forward"] = sign_agreement(cube["sensitivity"].values, truth)
            else:
                skipped.append("forward: no sensitivity in the cube (explainer forward not run)")
            if "edit_slope" in have and np.isfinite(cube["edit_slope"].values).any():
                gtruth["compare_sweep"] = sign_agreement(cube["edit_slope"].values, truth)
            if "backward_attributes" in have and "lot_attributes" in have:
                gtruth["backward"] = _backward_agreement(cube, truth)
            else:
                skipped.append("backward: no backward_attributes in the cube")
        metrics["ground_truth"] = gtruth
        backward_faith = _backward_faithfulness(cube) if "backward_prediction" in have else None
        if backward_faith is not None:
            metrics["backward_target_reached"] = backward_faith

        # --- structures
        metrics["structures"] = _structure_scores(cube, truth, ctx, skipped)

        table = self._table(metrics, gtruth, have)
        metrics["table"] = table
        if ctx.figures_dir is not None:
            metrics["figures"] = figures.write_all(cube, ctx, table, int(self.overlay_tiles))
        return metrics

    @staticmethod
    def _truth(cube, ctx: ExplainContext) -> np.ndarray | None:
        """True effects as ``(lot, attribute)``, from the cube or ``ctx.true_sensitivity``."""
        if "true_sensitivity" in cube.data_vars:
            t = np.asarray(cube["true_sensitivity"].values, np.float64)
            if np.isfinite(t).any():
                return t
        if ctx.true_sensitivity:
            names = [str(a) for a in cube["attribute"].values] if "attribute" in cube.coords \
                else list(ctx.attributes)
            row = np.array([ctx.true_sensitivity.get(a, np.nan) for a in names], np.float64)
            nlot = cube.sizes.get("lot", 1)
            return np.tile(row, (nlot, 1))
        return None

    def _table(self, metrics: dict, gtruth: dict, have: set) -> list[dict]:
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
                                          f"{reach:.0%}" if reach is not None else "n/a"),
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


def _backward_agreement(cube, truth: np.ndarray) -> dict:
    """Sign of the counterfactual attribute change vs the true effect (increase: same sign,
    decrease: opposite sign), over attributes that moved by more than 1e-3 and whose true effect
    is not negligible (:mod:`mxplain.truth`)."""
    ba = np.asarray(cube["backward_attributes"].values, np.float64)  # lot, tile, dir, attr
    la = np.asarray(cube["lot_attributes"].values, np.float64)  # lot, attr
    dirs = [str(d) for d in cube["backward_attributes"]["direction"].values]
    moved = ba - la[:, None, None, :]
    sign_dir = np.array([1.0 if d == "increase" else -1.0 for d in dirs])[None, None, :, None]
    t = np.broadcast_to(truth[:, None, None, :], moved.shape)
    scored = np.broadcast_to(~negligible_mask(truth)[:, None, None, :], moved.shape)
    ok = np.isfinite(moved) & scored & (np.abs(moved) > 1e-3)
    if not ok.any():
        return {"agreement": None, "pairs": 0}
    agree = np.sign(moved[ok]) == np.sign((t * sign_dir)[ok])
    return {"agreement": float(agree.mean()), "pairs": int(ok.sum())}


def _backward_faithfulness(cube) -> float | None:
    """Median over tiles and directions of (achieved change) / (requested change), both from the
    prediction the backward explainer starts from: ``reconstruction_prediction`` (the editor's
    reconstruction at the lot's attributes) where present, else ``prediction``."""
    have = set(cube.data_vars)
    start = "reconstruction_prediction" if "reconstruction_prediction" in have else "prediction"
    if not {"backward_prediction", "backward_target", start} <= have:
        return None
    bp = np.asarray(cube["backward_prediction"].values, np.float64)
    bt = np.asarray(cube["backward_target"].values, np.float64)
    p = np.asarray(cube[start].values, np.float64)[..., None]
    req = bt - p
    ok = np.isfinite(bp) & np.isfinite(req) & (np.abs(req) > 1e-9)
    if not ok.any():
        return None
    return float(np.median((bp - p)[ok] / req[ok]))


def safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s)) or "lot"
