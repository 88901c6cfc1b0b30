"""What the comparison takes over from the explainers that ran before it on the same lot, and what
it computes itself otherwise (:attr:`mxplain.interfaces.Explainer.reads_optional`):

* **Attribute slopes** (``edit_slope``): the slope of the mean prediction over the first
  ``max_tiles`` tiles against each attribute's value, the others at the lot's labels. Where the
  forward explainer ran, its ``forward_prediction`` holds exactly those edits of those tiles on its
  own grid (the cube's ``value`` coordinate, ``linspace(0, 1, steps)``: 11 values by default) and
  the slope is fitted to them; otherwise the comparison sweeps ``sweep_steps`` values itself.
* **The reference prediction** (the lot's own labels): the pipeline's
  ``reconstruction_prediction`` where the run has an editor, the same edit.
* **Pixel maps**: the gradcam explainer's ``gradcam`` / ``integrated_gradients`` maps of the same
  tiles where its layer and IG settings are the comparison's own; otherwise computed here.

Every edit that remains (the sweep without forward, the reference without the pipeline's, the
``+-delta`` edits of each attribute) is decoded in one batched pass over all tiles and edits.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from mxplain.interfaces import ExplainContext, Lot, latent_take
from mxplain_gradcam.gradcam import GradCAM

#: the pixel maps the comparison takes over, with the gradcam explainer's settings they depend on
MAP_SETTINGS = {"gradcam": ("layer",),
                "integrated_gradients": ("layer", "ig_steps", "ig_baseline")}


def forward_grid(ctx: ExplainContext, sel: np.ndarray, k: int, base: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """(values ``(S,)``, predictions ``(m, K, S)``) of the forward explainer's sweep of the tiles
    ``sel``, or ``None`` where it did not run on this lot (or swept around other labels than
    ``base``: forward clips them to [0, 1])."""
    preds = ctx.lot_results.get("forward_prediction")
    values = ctx.cube_coords.get("value")
    if preds is None or values is None or not np.array_equal(
            base.astype(np.float32), np.clip(base, 0.0, 1.0).astype(np.float32)):
        return None
    preds = np.asarray(preds, np.float64)
    values = np.asarray(values, np.float64).reshape(-1)
    if preds.ndim != 3 or preds.shape[1] != k or preds.shape[2] != len(values) \
            or preds.shape[0] < len(sel):
        return None
    return values, preds[sel]


def slopes_of(values: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """``(K,)`` least-squares slopes of the mean over tiles of ``preds`` ``(m, K, S)``."""
    means = preds.mean(0)
    return np.array([np.polyfit(values, means[j], 1)[0] for j in range(len(means))])


def edited_predictions(sub: torch.Tensor, rows: np.ndarray, ctx: ExplainContext, predict,
                       batch_size: int) -> np.ndarray:
    """``(R, m)``: the prediction on each of the ``m`` tiles ``sub`` edited to each attribute row
    of ``rows`` ``(R, K)``: one encode, then every (row, tile) pair decoded in batches of
    ``batch_size``."""
    editor = ctx.editor
    dev = editor.device
    r, m = len(rows), len(sub)
    attrs = torch.as_tensor(np.repeat(rows, m, 0), dtype=torch.float32, device=dev)
    tile_of = torch.arange(m, device=dev).repeat(r)
    out = np.empty(r * m, np.float64)
    with torch.no_grad():
        latent = editor.encode(sub.to(dev))
        for b0 in range(0, r * m, batch_size):
            sl = slice(b0, min(b0 + batch_size, r * m))
            imgs = editor.decode(latent_take(latent, tile_of[sl]), attrs[sl]).float().cpu()
            out[sl] = predict(imgs)
    return out.reshape(r, m)


def lot_base(lot: Lot, k: int) -> np.ndarray:
    base = np.asarray(lot.attributes, np.float64).reshape(-1)[:k]
    return np.where(np.isfinite(base), base, 0.5)


#: an edit value this close to a value of forward's grid is that grid point's edit: the labels
#: are float32, so ``0.6 + 0.3`` and the grid's 0.9 differ in the last bits only
ON_GRID = 1e-6


def delta_edits(base: np.ndarray, delta: float, grid) -> tuple[list, dict]:
    """The ``+-delta`` edit of each attribute, the others at ``base``: ``(rows to decode,
    {(attribute, direction): step of forward's grid})``. An edit whose value is a value of
    forward's grid to within float32 rounding (:data:`ON_GRID`; a clipped one, 0 or 1, always
    is) is that grid point's edit and is taken from forward's sweep, not decoded again."""
    rows, on_grid = [], {}
    values = np.zeros(0) if grid is None else np.asarray(grid[0], np.float64)
    for j in range(len(base)):
        for d, sign in enumerate((1.0, -1.0)):
            v = float(np.clip(base[j] + sign * float(delta), 0.0, 1.0))
            near = np.flatnonzero(np.abs(values - v) <= ON_GRID)
            if len(near):
                on_grid[(j, d)] = int(near[0])
            else:
                rows.append(base.copy())
                rows[-1][j] = v
    return rows, on_grid


def attribute_scores(lot: Lot, sub: torch.Tensor, sel: np.ndarray, ctx: ExplainContext, predict,
                     compare) -> dict[str, np.ndarray]:
    """``edit_slope``, the top attribute and the gains of ``+-delta`` edits (see the module)."""
    k, m = len(ctx.attributes), len(sub)
    base = lot_base(lot, k)
    t0 = time.perf_counter()
    grid = forward_grid(ctx, sel, k, base)
    rows = []
    if grid is None:  # the comparison's own sweep
        values = np.linspace(0.0, 1.0, int(compare.sweep_steps))
        for j in range(k):
            for v in values:
                rows.append(base.copy())
                rows[-1][j] = v
    n_sweep = len(rows)
    ref = ctx.lot_results.get("reconstruction_prediction")
    own_ref = ref is None or not np.isfinite(np.asarray(lot.attributes, np.float64)).all()
    if own_ref:
        rows.append(base.copy())
    delta_rows, on_grid = delta_edits(base, compare.delta, grid)
    rows += delta_rows
    preds = edited_predictions(sub, np.asarray(rows), ctx, predict, int(compare.batch_size)) \
        if rows else np.zeros((0, m))
    if grid is None:
        slopes = slopes_of(values, preds[:n_sweep].T.reshape(m, k, len(values)))
        # the sweep's share of the batched pass (its rows of all the edits decoded)
        cost = 1000.0 * (time.perf_counter() - t0) / m * n_sweep / len(rows)
    else:
        slopes = slopes_of(*grid)
        n_fwd = len(ctx.lot_results["forward_prediction"])
        cost = 1000.0 * ctx.lot_seconds.get(ctx.lot_producers["forward_prediction"][0],
                                             0.0) / max(n_fwd, 1)
    p_ref = preds[n_sweep] if own_ref else np.asarray(ref, np.float64)[sel]
    decoded = iter(preds[n_sweep + own_ref:])
    gains = np.zeros((k, 2))
    for j in range(k):
        for d in range(2):
            edited = grid[1][:, j, on_grid[(j, d)]] if (j, d) in on_grid else next(decoded)
            gains[j, d] = float((edited - p_ref).mean())
    top = int(np.argmax(np.abs(slopes)))
    d_top = 0 if slopes[top] >= 0 else 1
    return {
        "edit_slope": slopes.astype(np.float32),
        "attribute_top": np.array(top, np.int32),
        "attribute_gain_top": np.array(gains[top, d_top], np.float32),
        "attribute_gain_random": np.array(gains.mean(), np.float32),
        "attribute_cost_ms": np.array(cost, np.float32),
    }


def pixel_maps(sub: torch.Tensor, sel: np.ndarray, ctx: ExplainContext, compare
               ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """GradCAM and IG maps of ``sub`` (the lot's tiles ``sel``) and their cost in ms per tile:
    the gradcam explainer's where it ran with the same settings (its seconds on the lot split
    over its maps by their passes: 1 for GradCAM, ``ig_steps`` for IG), else computed here."""
    gc = GradCAM(layer=compare.layer, batch_size=compare.batch_size, ig_steps=compare.ig_steps,
                 ig_baseline=compare.ig_baseline)
    mine = gc.get_params()
    maps, cost, taken = {}, {}, []
    for key, settings in MAP_SETTINGS.items():
        given = ctx.lot_results.get(key)
        producer, params = ctx.lot_producers.get(key, ("", {}))
        if given is not None and len(given) >= len(sel) and \
                all(params.get(s) == mine[s] for s in settings):
            maps[key] = np.asarray(given, np.float32)[sel]
            taken.append((key, producer, len(given)))
    if taken:
        passes = {"gradcam": 1.0, "integrated_gradients": float(compare.ig_steps)}
        producer = taken[0][1]
        total = sum(passes[k] for k in MAP_SETTINGS if k in ctx.lot_results)
        for key, _, n in taken:
            cost[key] = 1000.0 * ctx.lot_seconds.get(producer, 0.0) / max(n, 1) \
                * passes[key] / total
    for key, fn in (("gradcam", gc.gradcam), ("integrated_gradients", gc.ig)):
        if key not in maps:
            t0 = time.perf_counter()
            maps[key] = fn(sub, ctx.predictor)
            if ctx.predictor.device.type == "cuda":
                torch.cuda.synchronize(ctx.predictor.device)
            cost[key] = 1000.0 * (time.perf_counter() - t0) / max(len(sub), 1)
    return maps, cost
