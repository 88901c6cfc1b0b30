"""Figures of the ``compare`` explainer (matplotlib, Agg, PNG into ``ctx.figures_dir``)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mxplain.figures import finite_range, honest_axis, property_spread  # noqa: E402
from mxplain.interfaces import ExplainContext  # noqa: E402

CMAP = "RdBu_r"  # signed maps: red = toward a higher prediction, blue = toward a lower one


def _sym(a: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    v = float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 0.0
    return v if v > 0 else 1.0


def _save(fig, path: Path) -> str:
    from mxplain.figures import literal_text

    literal_text(fig)  # lot ids, attribute names and units are the user's: no mathtext
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return str(path)


def write_all(cube, ctx: ExplainContext, table: list[dict], overlay_tiles: int) -> list[str]:
    out_dir = Path(ctx.figures_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [table_figure(table, out_dir / "compare_table.png")]
    if "deletion_curve" in cube.data_vars:
        written.append(faithfulness_figure(cube, out_dir / "compare_faithfulness.png"))
    written += overlay_figures(cube, ctx, out_dir, overlay_tiles)
    p = lot_mean_figure(cube, out_dir / "gradcam_lot_mean.png")
    if p:
        written.append(p)
    return written


def table_figure(table: list[dict], path: Path) -> str:
    cols = ["method", "kind", "faithfulness", "ground_truth", "actionable_direction",
            "cost_ms_per_tile"]
    heads = ["method", "kind", "faithfulness", "ground truth", "actionable\ndirection",
             "ms / tile"]
    cells = []
    for r in table:
        row = []
        for c in cols:
            v = r.get(c)
            if c == "cost_ms_per_tile":
                v = "not measured" if v is None else f"{v:.2f}"
            elif c == "faithfulness":
                v = str(v).replace(", ins", ",\nins").replace(" (pixel", "\n(pixel")
            row.append(str(v))
        cells.append(row)
    fig, ax = plt.subplots(figsize=(15, 0.9 + 0.75 * max(len(cells), 1)))
    ax.axis("off")
    if cells:
        t = ax.table(cellText=cells, colLabels=heads, loc="center", cellLoc="left",
                     colWidths=[0.16, 0.06, 0.42, 0.16, 0.08, 0.09])
        t.auto_set_font_size(False)
        t.set_fontsize(8)
        t.scale(1, 2.6)
    else:
        ax.text(0.5, 0.5, "no methods to compare", ha="center")
    ax.set_title("Pixel vs attribute explanations")
    return _save(fig, path)


def faithfulness_figure(cube, path: Path) -> str:
    frac = np.asarray(cube["curve_fraction"].values, np.float64)
    meths = [str(v) for v in cube["pixel_method"].values]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, ax, better in (("deletion_curve", axes[0], "lower area = more faithful"),
                             ("insertion_curve", axes[1], "higher area = more faithful")):
        arr = np.asarray(cube[name].values, np.float64)  # lot, method, fraction
        for j, meth in enumerate(meths):
            with np.errstate(all="ignore"):
                curve = np.nanmean(arr[:, j], 0)
            if np.isfinite(curve).any():
                ax.plot(frac, curve, label=meth, ls="--" if meth == "random" else "-")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("fraction of pixels (ranked by signed attribution)")
        ax.set_ylabel("prediction change / |p(original) - p(reference)|")
        ax.set_title(f"{name.split('_')[0]} ({better})")
        ax.legend(fontsize=8)
    return _save(fig, path)


def safe_name(s: str) -> str:
    """``s`` as a file-name part: every run of other characters than letters, digits, ``_.-``
    replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s)) or "lot"


def _lot_label(cube, i: int) -> str:
    if "lot" in cube.coords:
        return safe_name(cube["lot"].values[i])
    return str(i)


def overlay_figures(cube, ctx: ExplainContext, out_dir: Path, overlay_tiles: int) -> list[str]:
    if "overlay_image" not in cube.data_vars or overlay_tiles <= 0:
        return []
    img = np.asarray(cube["overlay_image"].values, np.float64)
    valid = np.where(np.isfinite(img).all(axis=(1, 2)))[0]
    if not len(valid):
        return []
    pick = valid[np.unique(np.round(np.linspace(0, len(valid) - 1,
                                                min(overlay_tiles, len(valid)))).astype(int))]
    have = set(cube.data_vars)
    attrs = [str(a) for a in cube["attribute"].values] if "attribute" in cube.coords \
        else list(ctx.attributes)
    written = []
    for i in pick:
        tile = 0
        fig, axes = plt.subplots(1, 5, figsize=(22, 4.4), layout="constrained")
        axes[0].imshow(img[i], cmap="gray", vmin=0, vmax=1)
        axes[0].set_title(f"lot {_lot_label(cube, i)}, tile {tile}")
        g = np.asarray(cube["overlay_gradcam"].values[i], np.float64)
        v = _sym(g)
        axes[1].imshow(img[i], cmap="gray", vmin=0, vmax=1)
        im = axes[1].imshow(g, cmap=CMAP, vmin=-v, vmax=v, alpha=0.6)
        fig.colorbar(im, ax=axes[1], shrink=0.8)
        axes[1].set_title("GradCAM (signed, raw)")
        ig = np.asarray(cube["overlay_ig"].values[i], np.float64)
        v = _sym(ig)
        im = axes[2].imshow(ig, cmap=CMAP, vmin=-v, vmax=v)
        fig.colorbar(im, ax=axes[2], shrink=0.8)
        axes[2].set_title("Integrated Gradients")
        for ax in axes[:3]:
            ax.set_xticks([])
            ax.set_yticks([])
        ax = axes[3]
        if "forward_prediction" in have and "value" in cube.variables:
            fp = np.asarray(cube["forward_prediction"].values[i, tile], np.float64)
            vals = np.asarray(cube["value"].values, np.float64)
            for a, name in enumerate(attrs[: fp.shape[0]]):
                ax.plot(vals, fp[a], marker=".", label=name)
            mask = np.asarray(cube["tile_mask"].values, bool) if "tile_mask" in have else \
                np.ones(cube["prediction"].shape, bool) if "prediction" in have else None
            level = "reconstruction_prediction" if "reconstruction_prediction" in have \
                else "prediction"  # the edited tile at its own attributes: no effect
            own = float(cube[level].values[i, tile]) if level in have else np.nan
            spread = property_spread(cube, mask) if mask is not None else np.nan
            honest_axis(ax, *finite_range(fp), spread, zero=own, units=ctx.property_units)
            ax.set_xlabel("attribute value")
            units = f" ({ctx.property_units})" if ctx.property_units else ""
            ax.set_ylabel(f"{ctx.property_name}{units}")
            ax.legend(fontsize=8)
            ax.set_title("forward: edited-tile prediction")
        else:
            ax.text(0.5, 0.5, "no forward explanation\nin this run", ha="center", va="center")
            ax.axis("off")
        ax = axes[4]
        if "backward_attributes" in have and "lot_attributes" in have:
            ba = np.asarray(cube["backward_attributes"].values[i, tile], np.float64)
            la = np.asarray(cube["lot_attributes"].values[i], np.float64)
            dirs = [str(d) for d in cube["backward_attributes"]["direction"].values]
            x = np.arange(len(attrs))
            wdt = 0.8 / max(len(dirs), 1)
            conv = np.asarray(cube["backward_converged"].values[i, tile], bool) \
                if "backward_converged" in have else np.ones(len(dirs), bool)
            for d, dname in enumerate(dirs):  # a missed target is no advice: no bar
                ax.bar(x + d * wdt, np.where(conv[d], ba[d] - la, 0.0), wdt,
                       label=dname if conv[d] else f"{dname}: target not reached")
            ax.set_xticks(x + 0.4 - wdt / 2, attrs, rotation=30, fontsize=8)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_ylabel("A' - A")
            ax.legend(fontsize=8)
            ax.set_title("backward: counterfactual change")
        else:
            ax.text(0.5, 0.5, "no backward explanation\nin this run", ha="center",
                    va="center")
            ax.axis("off")
        written.append(_save(fig, out_dir / f"overlay_{_lot_label(cube, i)}_{tile}.png"))
    return written


def lot_mean_figure(cube, path: Path, max_lots: int = 16) -> str | None:
    """Mean GradCAM map of each lot (the ``gradcam`` variable over real tiles where present,
    else compare's subset mean), on one common symmetric colour scale."""
    if "gradcam" in cube.data_vars:
        g = np.asarray(cube["gradcam"].values, np.float64)
        if "tile_mask" in cube.data_vars:
            mask = np.asarray(cube["tile_mask"].values, bool)
            g = np.where(mask[:, :, None, None], g, np.nan)
        with np.errstate(all="ignore"):
            means = np.nanmean(g, 1)
    elif "gradcam_mean" in cube.data_vars:
        means = np.asarray(cube["gradcam_mean"].values, np.float64)
    else:
        return None
    idx = [i for i in range(len(means)) if np.isfinite(means[i]).any()][:max_lots]
    if not idx:
        return None
    v = _sym(means[idx])
    ncol = min(4, len(idx))
    nrow = int(np.ceil(len(idx) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3 * ncol + 1, 3 * nrow), squeeze=False)
    prop = np.asarray(cube["measured_property"].values, np.float64) \
        if "measured_property" in cube.data_vars else None
    im = None
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), idx):
        im = ax.imshow(means[i], cmap=CMAP, vmin=-v, vmax=v)
        title = f"lot {_lot_label(cube, i)}"
        if prop is not None and np.isfinite(prop[i]):
            title += f"\nproperty {prop[i]:.3g}"
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03)
    fig.suptitle("Mean GradCAM per lot (signed, common scale)", y=1.0 + 0.08 / nrow)
    return _save(fig, path)
