"""Figures of the synthetic dataset: the attribute grid and measured-vs-nominal scatter plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mxplain.figures import save_figure
from mxplain_synthetic.generate import ATTRIBUTES, generate_tiles
from mxplain_synthetic.measure import UNITS


def attribute_grid(path: str | Path, tile_size: int = 128, seed: int = 3,
                   values=(0.0, 0.25, 0.5, 0.75, 1.0)) -> Path:
    """Rows: attribute; columns: its value 0 -> 1, the others at 0.5; one seed per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(ATTRIBUTES), len(values),
                             figsize=(2.2 * len(values), 2.3 * len(ATTRIBUTES)))
    for i, attr in enumerate(ATTRIBUTES):
        for j, v in enumerate(values):
            attrs = {a: 0.5 for a in ATTRIBUTES}
            attrs[attr] = float(v)
            tile = generate_tiles(attrs, 1, tile_size, np.random.default_rng(seed))[0]
            ax = axes[i, j]
            ax.imshow(tile, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{v:g}")
            if j == 0:
                ax.set_ylabel(attr, fontsize=11)
    fig.suptitle(f"synthetic tiles ({tile_size} px): one attribute 0 -> 1, others 0.5")
    return save_figure(fig, path, dpi=80)


def measurement_figure(results: list[dict], path: str | Path) -> Path:
    """Lot-mean measurement vs nominal attribute, one row per tile size (``calibrate`` results)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), len(ATTRIBUTES),
                             figsize=(3.3 * len(ATTRIBUTES), 3.0 * len(results)), squeeze=False)
    for i, res in enumerate(results):
        for j, attr in enumerate(ATTRIBUTES):
            ax = axes[i, j]
            ax.scatter(res["nominal"][:, j], res["measured"][:, j], s=18)
            ax.set_title(f"{attr}, {res['tile_size']} px: r = {res['r'][attr]:.3f}", fontsize=9)
            ax.set_xlabel(f"nominal {attr}", fontsize=8)
            ax.set_ylabel(UNITS[attr], fontsize=7)
            ax.tick_params(labelsize=7)
    return save_figure(fig, path, dpi=80)
