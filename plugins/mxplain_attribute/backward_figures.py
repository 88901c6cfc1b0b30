"""The backward explainer's figures (seed 000 Figures 6 and 7), drawn from the cube alone: the
example tile and its counterfactual edits are cube variables written with the lot."""

from __future__ import annotations

import numpy as np

from mxplain.report_html import sig

from ._common import (
    DIRECTIONS,
    boot_rng,
    cube_example,
    figures_dir,
    fill_attributes,
    lot_label,
    pick_lots,
    save_figure,
)
from .backward_scores import change_bootstrap

#: the bar colours of the two directions
COLORS = {"increase": "C2", "decrease": "C3"}


def draw_figures(cube, ctx, attrs) -> list[str]:
    """Figures 6 and 7 of seed 000 from the cube alone; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")

    out = figures_dir(ctx)
    if out is None:
        return []
    lots = pick_lots(cube)
    if not lots:
        return []
    rows = []  # the low, median and high lots, each once
    for r in ("low", "median", "high"):
        if lots[r] not in [li for _, li in rows]:
            rows.append((r, lots[r]))
    base = fill_attributes(np.asarray(cube["lot_attributes"].values))
    return [save_figure(_figure6(cube, ctx, attrs, rows, base), out,
                        "backward_fig6_tile_counterfactual.png"),
            save_figure(_figure7(cube, ctx, attrs, rows, base), out,
                        "backward_fig7_lot_mean_change.png")]


def _figure6(cube, ctx, attrs, rows, base):
    """Figure 6: per lot of ``rows``, its example tile, the tile decoded at the counterfactual of
    each direction, and the attribute change as bars (a missed target: no bar)."""
    import matplotlib.pyplot as plt

    pos = np.arange(len(attrs))
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.8]})
    unit = f" {ctx.property_units}" if ctx.property_units else ""
    for r, (label, li) in enumerate(rows):
        tile0 = {v: np.asarray(cube[v].isel(lot=li, tile=0).values) for v in
                 ("backward_attributes", "backward_prediction", "backward_converged")}
        change = tile0["backward_attributes"].astype(np.float64) - base[li][None]  # (D, K)
        pred, conv = tile0["backward_prediction"], tile0["backward_converged"].astype(bool)
        reach = (np.asarray(cube["backward_reachable"].isel(lot=li, tile=0).values, bool)
                 if "backward_reachable" in cube.data_vars else np.ones_like(conv))
        regen = _example(cube, li)
        titles = ["original"] + [f"{d}: predicted {sig(float(pred[j]))}{unit}" +
                                 ("" if conv[j] and reach[j] else "\n(target not reached)"
                                  if reach[j] else "\n(unreachable)")
                                 for j, d in enumerate(DIRECTIONS)]
        conv = conv & reach  # an unreachable target is no counterfactual: no bar
        for j in range(3):
            ax = axes[r, j]
            ax.axis("off")
            if regen is not None:
                ax.imshow(regen[0] if j == 0 else regen[1][j - 1], cmap="gray", vmin=0,
                          vmax=1)
            ax.set_title(titles[j] if j else f"lot {lot_label(cube, li)} ({label})",
                         fontsize=9)
        ax = axes[r, 3]
        for j, d in enumerate(DIRECTIONS):  # a missed target is no advice: no bar
            ax.bar(pos + (j - 0.5) * 0.38, np.where(conv[j], change[j], 0.0), 0.38,
                   label=d if conv[j] else f"{d}: not reached", color=COLORS[d])
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(pos, attrs)
        ax.set_ylabel("A' - A")
        if not conv.any():
            ax.text(0.5, 0.5, _no_bar_reason(reach), ha="center", va="center", fontsize=9,
                    transform=ax.transAxes, color="0.35",
                    bbox={"facecolor": "white", "edgecolor": "none"})
        if r == 0:
            ax.legend(fontsize=8)
    fig.suptitle(f"backward explanation of one tile ({ctx.property_name})")
    return fig


def _no_bar_reason(reach) -> str:
    """Figure 6's text in a lot's empty bar panel: why neither direction has a counterfactual."""
    if not reach.any():
        return "no counterfactual:\nboth targets unreachable\nwithin the attribute bounds"
    return "no counterfactual:\nno reachable target reached"


def _figure7(cube, ctx, attrs, rows, base):
    """Figure 7: per lot of ``rows``, the mean change over its converged tiles with its bootstrap
    interval."""
    import matplotlib.pyplot as plt

    pos = np.arange(len(attrs))
    mask = np.asarray(cube["tile_mask"].values, bool)
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.4), squeeze=False,
                             sharey=True)
    for c, (label, li) in enumerate(rows):
        change, err, reached = _lot_change(cube, li, mask, base)  # converged tiles only
        ax = axes[0, c]
        for j, d in enumerate(DIRECTIONS):
            ax.bar(pos + (j - 0.5) * 0.38, np.nan_to_num(change[j]), 0.38, color=COLORS[d],
                   yerr=err[j], capsize=3, ecolor="k", error_kw={"lw": 0.8},
                   label=f"{d} ({reached[j]:.0%} of reachable reached)"
                   if np.isfinite(reached[j]) else f"{d}: no reachable target")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(pos, attrs)
        ax.set_title(f"{label} {ctx.property_name}: lot {lot_label(cube, li)}", fontsize=10)
        ax.legend(fontsize=8)  # each lot's own reached shares
        if c == 0:
            ax.set_ylabel("mean A' - A over reached tiles\n(95 % bootstrap interval)")
    fig.suptitle(_reached_caption(cube, mask), fontsize=9)
    return fig


def _example(cube, li: int):
    """Figure 6's images of lot ``li`` from the cube: its example tile and the tile decoded at
    each direction's counterfactual, ``None`` in a cube written before they were stored."""
    tile = cube_example(cube, "example_tile", li)
    edits = cube_example(cube, "backward_example_edit", li)
    return None if tile is None or edits is None else (tile, list(edits))


def _lot_change(cube, li: int, mask, base):
    """Figure 7's bars of lot ``li``: the mean change over converged tiles ``(D, K)`` (NaN: none
    converged, no bar), error bars ``(D, 2, K)`` (below, above; 0 without an interval) and the
    reached share of the reachable tiles ``(D,)`` (NaN: the lot has no reachable target in that
    direction; the cube stores that as 0). Cubes without the lot variables are recomputed from the
    tiles."""
    if "backward_mean_change" in cube:
        reached = np.asarray(cube["backward_reached_share"].values[li], np.float64)
        if "backward_reachable" in cube:
            any_reach = np.asarray(cube["backward_reachable"].values[li], bool)[mask[li]].any(0)
            reached = np.where(any_reach, reached, np.nan)
        change = np.where((reached > 0)[:, None],
                          np.asarray(cube["backward_mean_change"].values[li], np.float64), np.nan)
    else:
        xa = np.asarray(cube["backward_attributes"].values[li], np.float64)[mask[li]]
        conv = np.asarray(cube["backward_converged"].values[li], bool)[mask[li]]
        reach = (np.asarray(cube["backward_reachable"].values[li], bool)[mask[li]]
                 if "backward_reachable" in cube else None)
        ch = change_bootstrap(xa - base[li][None, None], conv, 0, boot_rng(0, 0, 0), reach)
        change, reached = ch["backward_mean_change"], ch["backward_reached_share"]
    err = np.zeros(change.shape[:1] + (2,) + change.shape[1:])
    if "backward_change_ci" in cube:
        ci = np.asarray(cube["backward_change_ci"].values[li], np.float64)  # (D, K, 2)
        err[:, 0] = np.clip(change - ci[..., 0], 0, None)
        err[:, 1] = np.clip(ci[..., 1] - change, 0, None)
    return change, np.nan_to_num(err), reached


def _reached_caption(cube, mask) -> str:
    """"reached 30/32 reachable targets (increase), ...; 4 unreachable" for figure 7."""
    conv = np.asarray(cube["backward_converged"].values, bool)
    reach = (np.asarray(cube["backward_reachable"].values, bool) if "backward_reachable" in cube
             else np.ones(conv.shape, bool))
    parts, unreachable = [], 0
    for j, d in enumerate(DIRECTIONS):
        c, r = conv[..., j][mask], reach[..., j][mask]
        parts.append(f"{int((c & r).sum())}/{int(r.sum())} ({d})")
        unreachable += int((~r).sum())
    return (f"targets reached: {', '.join(parts)} of the reachable; {unreachable} "
            "unreachable tile-directions not counted")
