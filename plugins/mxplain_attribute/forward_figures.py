"""The forward explainer's figures (seed 000 Figures 4 and 5), drawn from the cube alone: the
example tile's edits are a cube variable written with the lot (``forward_example_edit``)."""

from __future__ import annotations

import numpy as np

from mxplain.figures import finite_range as _finite_range
from mxplain.figures import honest_axis, property_spread

from ._common import cube_example, figures_dir, lot_label, pick_lots, save_figure

#: the coverage of the bootstrap intervals (the legend's words)
CI_LEVEL = 0.95
#: the attribute values of the example edits (``example_value``) figure 4a shows
EXAMPLE_VALUES = (0.0, 0.5, 1.0)


def draw_figures(cube, ctx, attrs, mask, values) -> list[str]:
    """Figures 4a, 4b and 5 of seed 000 from the cube alone (``values``: the sweep's attribute
    values); returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = figures_dir(ctx)
    if out is None:
        return []
    fp = cube["forward_prediction"]
    lots = pick_lots(cube)
    if not lots:
        return []
    prop = (np.asarray(cube["measured_property"].values, np.float64)
            if "measured_property" in cube else np.full(mask.shape[0], np.nan))
    k_attr = attrs.index("size") if "size" in attrs else 0
    aname = attrs[k_attr]
    li = lots["median"]
    unit = f" ({ctx.property_units})" if ctx.property_units else ""
    ylabel = f"predicted {ctx.property_name}{unit}"
    names = []
    ticks = [f"{v:.1f}" for v in values]

    # Figure 4a: one tile's curve, three edited tiles beneath at 0, 0.5 and 1
    curve = np.asarray(fp.isel(lot=li, tile=0, attribute=k_attr).values, np.float64)
    edits = cube_example(cube, "forward_example_edit", li)  # (K, values, H, W) or None
    imgs = None if edits is None else list(edits[k_attr])
    fig = plt.figure(figsize=(6, 6.5 if imgs else 4))
    gs = fig.add_gridspec(2 if imgs else 1, 3, height_ratios=[1.6, 1] if imgs else [1])
    ax = fig.add_subplot(gs[0, :])
    spread = property_spread(cube, mask)
    u = ctx.property_units
    ax.plot(values, curve, "o-", color="C0", label="tile 0")
    honest_axis(ax, *_finite_range(curve), spread, prop[li],
                float(curve[len(curve) // 2]) if len(curve) else np.nan, u)
    ax.set_xlabel(f"{aname} attribute value")
    ax.set_ylabel(ylabel)
    ax.set_title(f'"{aname}" sensitivity of one tile, lot {lot_label(cube, li)}')
    ax.legend(fontsize=8)
    for j, (im, v) in enumerate(zip(imgs or [], EXAMPLE_VALUES)):
        axi = fig.add_subplot(gs[1, j])
        axi.imshow(im, cmap="gray", vmin=0, vmax=1)
        axi.set_title(f"{aname} = {v:.1f}", fontsize=9)
        axi.axis("off")
    names.append(save_figure(fig, out, "forward_fig4a_tile_curve.png"))

    # Figure 4b: the lot's boxplot of predictions per step
    data = np.asarray(fp.isel(lot=li, attribute=k_attr).values, np.float64)[mask[li]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.boxplot([c[np.isfinite(c)] for c in data.T], showfliers=True)
    ax.set_xticks(range(1, len(values) + 1), ticks)
    honest_axis(ax, *_finite_range(data), spread, prop[li], _mid_median(data), u)
    ax.set_xlabel(f"{aname} attribute value")
    ax.set_ylabel(ylabel)
    draw_slope(ax, values, data, *_lot_ci(cube, li, k_attr), legend=True)
    ax.set_title(f'"{aname}" sensitivity of lot {lot_label(cube, li)} ({mask[li].sum()} tiles)')
    names.append(save_figure(fig, out, "forward_fig4b_lot_boxplot.png"))

    # Figure 5: four-attribute panel for the high, median and low lots, on one y scale
    fig = _figure5(cube, ctx, attrs, mask, lots, prop, spread, values)
    names.append(save_figure(fig, out, "forward_fig5_attribute_panel.png"))
    return names

def _figure5(cube, ctx, attrs, mask, lots, prop, spread, values):
    import matplotlib.pyplot as plt

    fp = cube["forward_prediction"]
    ticks = [f"{v:.1f}" for v in values]
    u = ctx.property_units
    rows = [(r, lots[r]) for r in ("high", "median", "low")]
    fig, axes = plt.subplots(len(rows), len(attrs), figsize=(3.2 * len(attrs), 2.6 * len(rows)),
                             squeeze=False, sharey=True)  # one scale: the lots compare
    blocks = [np.asarray(fp.isel(lot=lj).values, np.float64)[mask[lj]] for _, lj in rows]
    lo, hi = _finite_range(np.concatenate([b.ravel() for b in blocks]))
    for r, (label, lj) in enumerate(rows):
        block = blocks[r]  # (n, K, S)
        for k, a in enumerate(attrs):
            ax = axes[r, k]
            ax.boxplot([c[np.isfinite(c)] for c in block[:, k].T], showfliers=False)
            ax.set_xticks(range(1, len(values) + 1),
                          [t if i % 5 == 0 else "" for i, t in enumerate(ticks)])
            honest_axis(ax, lo, hi, spread, prop[lj], _mid_median(block[:, k]), u,
                        note=r == 0 and k == 0)
            draw_slope(ax, values, block[:, k], *_lot_ci(cube, lj, k))
            if r == 0:
                ax.set_title(a)
            if r == len(rows) - 1:
                ax.set_xlabel("attribute value")
            if k == 0:
                ax.set_ylabel(f"{label}: lot {lot_label(cube, lj)}\n{ctx.property_name}")
    fig.suptitle(f"forward explanations ({ctx.property_name} vs attribute value)")
    return fig


def _lot_ci(cube, li: int, k: int):
    """(sensitivity, (low, high) or None) of lot ``li``, attribute ``k``."""
    s = float(cube["sensitivity"].values[li, k])
    if "sensitivity_ci" not in cube:
        return s, None
    ci = np.asarray(cube["sensitivity_ci"].values[li, k], np.float64)
    return s, (tuple(ci) if np.isfinite(ci).all() else None)


def _mid_median(data) -> float:
    """The median prediction at the middle step (the no-effect level of a sweep)."""
    d = np.asarray(data, np.float64)
    col = d[:, d.shape[1] // 2] if d.ndim == 2 and d.shape[1] else np.array([])
    col = col[np.isfinite(col)]
    return float(np.median(col)) if col.size else float("nan")


def draw_slope(ax, values, data, slope: float, ci, legend: bool = False) -> None:
    """Overlay on a boxplot of predictions per step (positions 1..S) the lot sensitivity as a line
    through the median of the middle step, with its bootstrap interval as an error bar at the last
    step (the predicted change from the middle to the end, at the interval's bounds)."""
    if not np.isfinite(slope) or len(values) < 2:
        return
    vals = np.asarray(values, np.float64)
    pos = 1 + (len(vals) - 1) * (vals - vals[0]) / (vals[-1] - vals[0])
    mid = len(vals) // 2
    col = np.asarray(data, np.float64)[:, mid]
    if not np.isfinite(col).any():
        return
    y0 = float(np.nanmedian(col))
    ax.plot(pos, y0 + slope * (vals - vals[mid]), "-", color="C1", lw=1.2,
            label=f"slope {slope:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""))
    if ci:
        dv = vals[-1] - vals[mid]
        lo, hi = sorted((y0 + ci[0] * dv, y0 + ci[1] * dv))
        y1 = y0 + slope * dv
        ax.errorbar([pos[-1]], [y1], yerr=[[max(y1 - lo, 0)], [max(hi - y1, 0)]], fmt="none",
                    ecolor="C1", capsize=4, lw=1.5)
    if legend:
        ax.legend(fontsize=8, title=f"{int(CI_LEVEL * 100)} % bootstrap interval"
                  if ci else None, title_fontsize=7)
