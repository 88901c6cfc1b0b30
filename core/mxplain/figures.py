"""Saving matplotlib figures: the one shared tail (tight layout, parent folder, PNG, close)."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, path, dpi: int = 110, **savefig_kwargs) -> Path:
    """tight_layout, create the parent folder, save as PNG, close the figure; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **savefig_kwargs)
    plt.close(fig)
    return path
