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
  forward sweep (each attribute in turn over values in [0, 1], the others at the lot's labels; the
  least-squares slope of the mean prediction, ``edit_slope``): the forward explainer's sweep of the
  same tiles where it ran (its grid, the cube's ``value``), else ``sweep_steps`` values swept here
  (:mod:`mxplain_gradcam.compare_inputs`); the top attribute by |slope| is edited
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

import time
from typing import Any, ClassVar

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.filters import gaussian_blur
from mxplain.interfaces import ExplainContext, Explainer, Lot, Variable
from mxplain.truth import sign_agreement
from mxplain_gradcam.compare_inputs import attribute_scores, pixel_maps
from mxplain_gradcam.compare_scores import (
    _backward_agreement,
    _backward_faithfulness,
    _finite_mean,
    _pixel_scores,
    _structure_scores,
    summary_table,
)
from mxplain_gradcam.gradcam import GradCAM, check_differentiable, default_sigma

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
    # deletion and insertion in one batched pass
    both = predict(torch.cat([torch.stack(deleted, 1), torch.stack(inserted, 1)]
                             ).reshape(-1, 1, h, w)).reshape(2, m, len(counts))
    p_del, p_ins = both[0], both[1]
    return {"p_del": p_del, "p_ins": p_ins, "p0": p_del[:, 0], "pr": p_ins[:, 0],
            "fractions": fractions}


def normalised_curves(raw: dict[str, np.ndarray], scale: np.ndarray) -> tuple[np.ndarray, ...]:
    """(deletion curve, insertion curve, deletion AUC, insertion AUC), per tile."""
    s = scale[:, None]
    dele = (raw["p_del"] - raw["p0"][:, None]) / s
    ins = (raw["p_ins"] - raw["pr"][:, None]) / s
    f = raw["fractions"]
    return dele, ins, np.trapezoid(dele, f, axis=1), np.trapezoid(ins, f, axis=1)


class Compare(Explainer):
    """GradCAM / IG vs attribute explanations: faithfulness, ground truth, cost; figures."""

    name: ClassVar[str] = "compare"
    test_params: ClassVar[dict] = {"max_tiles": 2, "curve_steps": 4, "ig_steps": 4, "sweep_steps": 3,
                                   "overlay_tiles": 1}
    requires_gradients: ClassVar[bool] = True
    #: taken over where the run has them (forward's sweep, the pipeline's reconstruction, the
    #: gradcam explainer's maps), computed here otherwise (:mod:`mxplain_gradcam.compare_inputs`)
    reads_optional: ClassVar[tuple[str, ...]] = ("forward_prediction", "reconstruction_prediction",
                                                 "gradcam", "integrated_gradients")

    @classmethod
    def requirements(cls, params: dict) -> frozenset[str]:
        """GradCAM's needs (a differentiable predictor with a torch module); the editor is
        optional (without one the attribute part is left out)."""
        return frozenset({"predictor", "gradients", "torch_module"})

    @classmethod
    def uses(cls, params: dict) -> frozenset[str]:
        """The needs and the editor where there is one: its attribute sweep edits through it, so
        the editor's trust gates mark the comparison like the other editing explainers."""
        return cls.requirements(params) | {"editor"}

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

        # pixel maps and their cost: the gradcam explainer's where it ran alike, else our own
        maps, cost = pixel_maps(sub, sel, ctx, self)
        rng = np.random.default_rng([int(ctx.seed), int(lot.index)])
        t0 = time.perf_counter()
        maps["random"] = rng.standard_normal((m, h, w)).astype(np.float32)
        cost["random"] = 1000.0 * (time.perf_counter() - t0) / m

        # deletion / insertion
        ref = reference_tiles(sub, self.reference)
        raws = self._curves(predict, sub, maps, ref)
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
            out.update(attribute_scores(lot, sub, sel, ctx, predict, self))

        # GradCAM mass on the structures of synthetic tiles
        if structure_part:
            mass, area = self._structures(sub, maps["gradcam"], ctx)
            out["structure_mass"], out["structure_area"] = mass, area
        return out

    def _curves(self, predict, sub: torch.Tensor, maps: dict, ref: torch.Tensor) -> dict:
        """Each pixel method's raw curves (:func:`perturbation_curves`), all methods' tiles
        predicted in one batched pass."""
        nm, m = len(PIXEL_METHODS), len(sub)
        stacked = np.concatenate([np.asarray(maps[meth]) for meth in PIXEL_METHODS])
        raw = perturbation_curves(predict, sub.repeat(nm, 1, 1, 1), stacked, self.curve_steps,
                                  ref.repeat(nm, 1, 1, 1))
        return {meth: {key: (val if key == "fractions" else val[j * m:(j + 1) * m])
                       for key, val in raw.items()} for j, meth in enumerate(PIXEL_METHODS)}

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
    def report_section(self, run):
        """Shown with GradCAM's section (same title): the summary's headline numbers, the
        ``compare_*`` figures and the overlays."""
        from mxplain.report_sections import default_section

        return default_section(run, GradCAM.section_title, ("compare_", "overlay_"))

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

        table = summary_table(metrics, gtruth, have)
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
