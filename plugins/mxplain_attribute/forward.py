"""Forward sensitivity sweeps (seed 000, §4.3 and §5, Figures 4 and 5).

For every tile of a lot and every attribute, the attribute is swept over ``linspace(0, 1, steps)``
while the other attributes stay at the lot's labels; each edited tile ``G(I; A)`` is fed to the
predictor. The tile is encoded once; all (tile, attribute, step) combinations are decoded and
predicted in large batches by repeating the latent with :func:`mxplain.interfaces.latent_take`.

The lot's ``sensitivity`` of an attribute is the slope of prediction against attribute value
(property units per unit attribute, i.e. the predicted change from 0 to 1), estimated robustly:

* ``"theil-sen"`` (default): the median, over every tile and every pair of steps ``i < j``, of the
  within-tile pairwise slope ``(p_j - p_i) / (v_j - v_i)``. Pairs are formed within a tile only, so
  the tiles' different offsets do not enter; the median makes it robust to outlier tiles and steps
  (breakdown point ~29 % of the pairs).
* ``"median"``: per-tile least-squares slopes, then the median over tiles.
* ``"ols"``: per-tile least-squares slopes, then the mean over tiles (least squares with one
  intercept per tile; not robust).

Uncertainty (``n_boot``, default 1000; 0 turns it off): the lot's tiles are resampled with
replacement ``n_boot`` times and the lot statistic recomputed exactly as above from the per-tile
terms already computed (numpy, no model call). ``sensitivity_ci`` is the percentile 95 % interval
of those draws, ``sensitivity_sign_stability`` the share of draws with the sign of the estimate.
Each lot's draws come from (run seed, lot index) alone: the same on Dask workers, in any lot order.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from mxplain.errors import UserError
from mxplain.interfaces import ExplainContext, Explainer, Lot, Variable, latent_take
from mxplain.truth import sign_agreement

from ._common import (
    BOUNDS,
    autocast,
    boot_rng,
    bootstrap,
    check_n_boot,
    edit_predict,
    example_edits,
    fill_attributes,
    interval,
    interval_summary,
    lot_attribute_vector,
    model_device,
    require_models,
)
from .forward_figures import CI_LEVEL, EXAMPLE_VALUES, draw_figures, draw_slope

ROBUST = ("theil-sen", "median", "ols")


def tile_terms(preds: np.ndarray, values: np.ndarray, robust: str = "theil-sen") -> np.ndarray:
    """The per-tile terms the lot statistic reduces: ``preds (n, K, S)`` -> ``(n, K, P)``: every
    within-tile pairwise slope (``"theil-sen"``, ``P`` pairs of steps) or the tile's
    least-squares slope (``"median"``, ``"ols"``, ``P = 1``)."""
    preds = np.asarray(preds, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if robust not in ROBUST:
        raise UserError(f"[explain.forward] robust = {robust!r}; use one of {', '.join(ROBUST)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if robust == "theil-sen":
            i, j = np.triu_indices(v.size, k=1)
            dv = v[j] - v[i]
            keep = np.abs(dv) > 0
            return (preds[..., j[keep]] - preds[..., i[keep]]) / dv[keep]  # (n, K, P)
        vc = v - v.mean()
        return ((preds * vc).sum(-1) / (vc**2).sum())[..., None]  # (n, K, 1) OLS slope per tile


def reduce_terms(terms: np.ndarray, robust: str = "theil-sen") -> np.ndarray:
    """The lot statistic of tile terms ``(..., n, K, P)`` -> ``(..., K)``: the median over every
    tile's terms (``"theil-sen"``, ``"median"``) or their mean (``"ols"``); NaN terms ignored.
    Applied to the lot's tiles by :func:`slopes` and to resampled tiles by the bootstrap."""
    t = np.moveaxis(np.asarray(terms, np.float64), -2, -3)  # (..., K, n, P)
    t = t.reshape(t.shape[:-2] + (-1,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if robust == "ols":
            return np.nanmean(t, axis=-1)
        return np.median(t, axis=-1) if np.isfinite(t).all() else np.nanmedian(t, axis=-1)


def slopes(preds: np.ndarray, values: np.ndarray, robust: str = "theil-sen") -> np.ndarray:
    """Slope of prediction against value: ``preds (n, K, S)``, ``values (S,)`` -> ``(K,)``.
    Non-finite predictions are ignored; a column without data gives NaN."""
    preds = np.asarray(preds, dtype=np.float64)
    terms = tile_terms(preds, values, robust)
    n, k, s = preds.shape
    if n == 0 or s < 2:
        return np.full(k, np.nan)
    return reduce_terms(terms, robust)


def sensitivity_bootstrap(preds: np.ndarray, values: np.ndarray, robust: str, n_boot: int,
                          rng: np.random.Generator, level: float = 0.95):
    """Bootstrap over tiles of the lot sensitivity: ``preds (n, K, S)`` -> the estimate ``(K,)``,
    its percentile interval ``(K, 2)`` and sign stability ``(K,)`` (share of draws with the
    estimate's sign). The lot's tiles are resampled with replacement and the statistic
    recomputed exactly as :func:`slopes` does (:func:`reduce_terms` of the same tile terms):
    numpy only, no model call."""
    est = slopes(preds, values, robust)
    terms = tile_terms(preds, values, robust) if len(preds) and len(values) >= 2 else \
        np.zeros((0, len(est), 1))
    draws = bootstrap(terms, lambda t: reduce_terms(t, robust), int(n_boot), rng)
    ci, stability = interval(draws, est, level)
    return est, ci, stability


def score_forward(sens: np.ndarray, truth: np.ndarray, attributes) -> dict:
    """Ground-truth scores of lot sensitivities ``sens (L, K)`` against ``truth (L, K)``.

    * ``sign_agreement``: per attribute, the share of lots whose sensitivity has the sign of the
      truth, over lots where the attribute's true effect is not negligible (an attribute that is
      negligible everywhere is left out);
    * ``sign_agreement_overall``: the same share over all non-negligible (lot, attribute) pairs;
    * ``rank_spearman``: Spearman correlation between |sensitivity| and |truth| across attributes,
      per lot, averaged over lots (lots where either is constant are skipped).
    Negligible: |truth| <= 0.1 * max |truth| of the lot (:mod:`mxplain.truth`, the rule every
    explainer's ground-truth score uses).
    """
    sens = np.asarray(sens, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    signs = sign_agreement(sens, truth, attributes)
    rhos = []
    for row_s, row_t in zip(np.abs(sens), np.abs(truth)):
        ok = np.isfinite(row_s) & np.isfinite(row_t)
        if ok.sum() < 2 or np.ptp(row_s[ok]) == 0 or np.ptp(row_t[ok]) == 0:
            continue
        rhos.append(stats.spearmanr(row_s[ok], row_t[ok])[0])
    overall = signs["agreement"]
    out: dict[str, Any] = {"sign_agreement": signs["by_attribute"], "scored_pairs": signs["pairs"]}
    out["sign_agreement_overall"] = float("nan") if overall is None else overall
    out["rank_spearman"] = float(np.mean(rhos)) if rhos else float("nan")
    return out


class ForwardSweep(Explainer):
    """Forward sensitivity sweep: ``forward_prediction (lot, tile, attribute, step)``,
    ``sensitivity (lot, attribute)``; the step coordinate holds the attribute values."""

    name: ClassVar[str] = "forward"
    test_params: ClassVar[dict] = {"steps": 3}
    requires_editor: ClassVar[bool] = True

    @classmethod
    def requirements(cls, params: dict) -> frozenset[str]:
        """A predictor (differentiable or not) and an editor of the data's named attributes."""
        return frozenset({"predictor", "editor", "attributes"})

    def __init__(self, steps: int = 11, batch_size: int | str = 256, robust: str = "theil-sen",
                 n_boot: int = 1000):
        self.steps = steps
        self.batch_size = batch_size
        self.robust = robust
        self.n_boot = n_boot

    # -- cube layout ---------------------------------------------------------------------------
    def values(self) -> np.ndarray:
        """The attribute value of each step: ``linspace(0, 1, steps)``."""
        return np.linspace(0.0, 1.0, int(self.steps)).astype(np.float64)

    def _check(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 2:
            raise UserError(f"[explain.forward] steps = {self.steps!r}; needs an integer >= 2")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int)
                                          or isinstance(self.batch_size, bool) or self.batch_size < 1):
            raise UserError(f"[explain.forward] batch_size = {self.batch_size!r}; needs an "
                            f'integer >= 1 or "auto" ([run] batch_size)')
        if self.robust not in ROBUST:
            raise UserError(f"[explain.forward] robust = {self.robust!r}; use one of "
                            f"{', '.join(ROBUST)}")
        check_n_boot(self.n_boot, self.name)

    def extra_dims(self) -> dict[str, Any]:
        # the step coordinate *is* the attribute value (SPEC: ``value`` (step)); see extra_coords
        return {"step": self.values(), "bound": list(BOUNDS),
                "example_value": np.asarray(EXAMPLE_VALUES)}

    def extra_coords(self) -> dict[str, tuple[str, np.ndarray]]:
        """Non-dimension coordinates for the cube: ``value`` (step)."""
        return {"value": ("step", self.values())}

    def variables(self, ctx: ExplainContext) -> dict[str, Variable]:
        self._check()
        p = ctx.property_units
        slope = f"{p} per unit attribute" if p else ""
        out = {
            "forward_prediction": Variable(
                ("lot", "tile", "attribute", "step"), "float32", units=p,
                description="predictor on the tile edited to value[step] for that attribute"),
            "sensitivity": Variable(
                ("lot", "attribute"), "float32", units=slope,
                description="the lot's robust slope of prediction against attribute value"),
            "forward_example_edit": Variable(
                ("lot", "attribute", "example_value", "y", "x"), "uint8", 0,
                description="the lot's example_tile edited to example_value for that attribute, "
                            "the others at the lot's labels (uint8 grey levels; figure 4a)"),
        }
        if self.n_boot:
            out["sensitivity_ci"] = Variable(
                ("lot", "attribute", "bound"), "float32", units=slope,
                description="percentile 95 % bootstrap interval of sensitivity over tiles")
            out["sensitivity_sign_stability"] = Variable(
                ("lot", "attribute"), "float32", units="1",
                description="share of bootstrap draws with the sign of sensitivity")
        return out

    # -- one lot -------------------------------------------------------------------------------
    def sweep(self, tiles: torch.Tensor, lot_attrs: np.ndarray, ctx: ExplainContext) -> np.ndarray:
        """Predictions ``(n, K, steps)`` for tiles ``(n, 1, H, W)`` around attributes ``(K,)``."""
        self._check()
        predictor, editor = require_models(ctx, self.name)
        edev = model_device(editor, ctx.device)
        k, s, n = len(lot_attrs), int(self.steps), len(tiles)
        per = k * s
        values = torch.as_tensor(self.values(), dtype=torch.float32, device=edev)
        base = torch.as_tensor(lot_attrs, dtype=torch.float32, device=edev)
        # predictions stay on the editor's device and come back in one copy: no sync per batch
        out = torch.empty(n * per, dtype=torch.float32, device=edev)
        bs = int(ctx.batch_size if self.batch_size == "auto" else self.batch_size)
        chunk = bs  # tiles encoded at once; their latents are repeated for every edit
        total = -(-n * per // bs) if n else 0
        bar = tqdm(total=total, desc="forward sweep", disable=not ctx.progress, leave=False)
        with torch.no_grad():
            for t0 in range(0, n, chunk):
                batch = tiles[t0 : t0 + chunk].to(edev)
                with autocast(edev):
                    latent = editor.encode(batch)
                m = len(batch) * per
                r = torch.arange(m, device=edev)
                tile_idx, attr_idx, step_idx = r // per, (r // s) % k, r % s
                for b0 in range(0, m, bs):
                    sl = slice(b0, min(b0 + bs, m))
                    attrs = base.expand(sl.stop - sl.start, k).clone()
                    rows = torch.arange(sl.stop - sl.start, device=edev)
                    attrs[rows, attr_idx[sl]] = values[step_idx[sl]]
                    with autocast(edev):
                        p = edit_predict(editor, predictor, latent_take(latent, tile_idx[sl]),
                                         attrs)
                    out[t0 * per + sl.start : t0 * per + sl.stop] = p.float()
                    bar.update(1)
        bar.close()
        return out.reshape(n, k, s).cpu().numpy()

    def explain_lot(self, lot: Lot, ctx: ExplainContext) -> dict[str, np.ndarray]:
        k = len(ctx.attributes) if ctx.attributes else len(np.atleast_1d(lot.attributes))
        a = lot_attribute_vector(lot, k, self.name)
        preds = self.sweep(lot.tiles, a, ctx)
        rng = boot_rng(ctx.seed, lot.index, 0)
        est, ci, stability = sensitivity_bootstrap(preds, self.values(), self.robust,
                                                   int(self.n_boot), rng, CI_LEVEL)
        out = {"forward_prediction": preds.astype(np.float32),
               "sensitivity": est.astype(np.float32)}
        if self.n_boot:
            out["sensitivity_ci"] = ci.astype(np.float32)
            out["sensitivity_sign_stability"] = stability.astype(np.float32)
        out["forward_example_edit"] = self._example_edits(lot, a, ctx)
        return out

    def _example_edits(self, lot: Lot, a: np.ndarray, ctx: ExplainContext) -> np.ndarray:
        """``(K, len(EXAMPLE_VALUES), H, W)`` uint8: the lot's first tile edited to each example
        value of each attribute, the others at the lot's labels (zeros for a lot without tiles)."""
        k, nv = len(a), len(EXAMPLE_VALUES)
        if not len(lot.tiles):
            return np.zeros((k, nv, *lot.tiles.shape[-2:]), np.uint8)
        attrs = np.repeat(a[None], k * nv, 0)
        attrs[np.arange(k * nv), np.repeat(np.arange(k), nv)] = np.tile(EXAMPLE_VALUES, k)
        editor = ctx.editor
        imgs = example_edits(editor, lot.tiles[0], attrs, model_device(editor, ctx.device))
        return imgs.reshape(k, nv, *imgs.shape[-2:])

    # -- after all lots ------------------------------------------------------------------------
    def _cube_values(self, cube) -> np.ndarray:
        if "value" in cube:
            return np.asarray(cube["value"].values, dtype=np.float64)
        if "step" in cube.coords and np.issubdtype(cube["step"].dtype, np.floating):
            return np.asarray(cube["step"].values, dtype=np.float64)
        return self.values()

    def report_section(self, run):
        """Titled after Liu et al. 2020 through the run's editor: the summary's headline numbers
        and the ``forward_*`` figures."""
        from mxplain.report_sections import default_section

        return default_section(run, f"Forward sensitivity: attribute sweeps{run.via_editor} "
                                    f"(after Liu et al. 2020)", ("forward_",))

    def summarize(self, cube, ctx: ExplainContext) -> dict:
        attrs = [str(a) for a in (cube["attribute"].values if "attribute" in cube.coords
                                  else ctx.attributes)]
        sens = np.asarray(cube["sensitivity"].values, dtype=np.float64)
        mask = np.asarray(cube["tile_mask"].values, dtype=bool)
        done = mask.any(axis=1) & np.isfinite(sens).all(axis=1)
        metrics: dict[str, Any] = {"robust": self.robust, "steps": int(self.steps),
                                   "n_boot": int(self.n_boot), "lots": int(done.sum())}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            metrics["sensitivity_median"] = {
                a: float(np.nanmedian(sens[done, k])) for k, a in enumerate(attrs)}
        if "true_sensitivity" in cube and done.any():
            truth = np.asarray(cube["true_sensitivity"].values, dtype=np.float64)
            metrics.update(score_forward(sens[done], truth[done], attrs))
        metrics.update(uncertainty_metrics(cube, attrs, done))
        if done.any():
            try:
                metrics["figures"] = draw_figures(cube, ctx, attrs, mask,
                                                  self._cube_values(cube))
            except Exception as exc:  # a figure must not lose the run's numbers
                warnings.warn(f"forward figures failed: {type(exc).__name__}: {exc}",
                              stacklevel=2)
        return metrics


def uncertainty_metrics(cube, attrs, done: np.ndarray) -> dict:
    """Compact bootstrap metrics over the done lots, per attribute: the median width of
    ``sensitivity_ci`` and the share of lots whose interval excludes 0 (``sensitivity_ci``), the
    median sign stability (``sign_stability_median``). Empty without the variables."""
    if "sensitivity_ci" not in cube or not done.any():
        return {}
    ci = np.asarray(cube["sensitivity_ci"].values, np.float64)[done]
    summary = interval_summary(ci)
    out: dict[str, Any] = {"ci_level": CI_LEVEL}
    out["sensitivity_ci"] = {a: {"width_median": float(summary["width_median"][k]),
                                 "excludes_zero_share": float(summary["excludes_zero_share"][k])}
                             for k, a in enumerate(attrs)}
    if "sensitivity_sign_stability" in cube:
        st = np.asarray(cube["sensitivity_sign_stability"].values, np.float64)[done]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["sign_stability_median"] = {a: float(np.nanmedian(st[:, k]))
                                            for k, a in enumerate(attrs)}
    return out


__all__ = ["CI_LEVEL", "EXAMPLE_VALUES", "ForwardSweep", "draw_slope", "reduce_terms",
           "sensitivity_bootstrap", "slopes", "score_forward", "tile_terms", "fill_attributes",
           "uncertainty_metrics"]
