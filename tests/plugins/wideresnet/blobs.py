"""Quick synthetic lots for the WideResNet tests: the blob radius of a lot's tiles follows its
property (about 2150 +- 150 psi), so a tile regressor can learn the property from one tile."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mxplain.store import LotTable, TileStore

ATTRS = ("size", "porosity", "polydispersity", "facetness")


def blob_tiles(rng: np.random.Generator, n: int, size: int, radius: float) -> np.ndarray:
    """``n`` uint8 tiles of ``size`` px: bright disks of about ``radius`` px on noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    n_blobs = max(2, int(0.25 * size * size / (np.pi * radius**2)))
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        img = rng.normal(0.3, 0.05, (size, size)).astype(np.float32)
        cy, cx = rng.uniform(0, size, (2, n_blobs))
        r = radius * rng.uniform(0.85, 1.15, n_blobs)
        d2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
        img[(d2 <= (r**2)[:, None, None]).any(0)] += 0.45
        out[i] = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return out


def make_store(path: Path, n_lots: int = 8, tiles_per_lot: int = 16, tile_size: int = 32,
               seed: int = 0, ragged: bool = False) -> TileStore:
    rng = np.random.default_rng(seed)
    prop = 2150.0 + 150.0 * np.linspace(-1.5, 1.5, n_lots)[rng.permutation(n_lots)]
    values = rng.uniform(0, 1, (n_lots, len(ATTRS)))
    values[:, 0] = (prop - prop.min()) / max(np.ptp(prop), 1e-9)
    counts = [tiles_per_lot - (i % 3 if ragged else 0) for i in range(n_lots)]
    table = LotTable([f"L{i:02d}" for i in range(n_lots)], ATTRS, values, prop)
    TileStore.create(path, table, counts, tile_size)
    for i in range(n_lots):
        radius = tile_size / 32 * (2.0 + 4.0 * (prop[i] - prop.min()) / max(np.ptp(prop), 1e-9))
        TileStore.write_lot(path, i, blob_tiles(rng, counts[i], tile_size, radius), max(counts))
    TileStore.mark_complete(path)
    return TileStore.open(path)
