"""Small hand-made tile stores with clearly different textures per lot."""

from pathlib import Path

import numpy as np

from mxplain.store import LotTable, TileStore


def texture_tiles(kind: int, n: int, size: int, rng) -> np.ndarray:
    """uint8 (n, size, size): 0 = fine noise, 1 = horizontal stripes, 2 = large blobs,
    3 = checkerboard; random phase and noise per tile."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = []
    for _ in range(n):
        ph = rng.uniform(0, 2 * np.pi)
        if kind == 0:
            img = rng.random((size, size))
        elif kind == 1:
            img = 0.5 + 0.5 * np.sin(yy * 2 * np.pi / 4 + ph)
        elif kind == 2:
            img = 0.5 + 0.5 * np.sin(yy / 5 + ph) * np.sin(xx / 5 + ph)
        else:
            img = ((np.floor(yy / 3 + ph) + np.floor(xx / 3)) % 2).astype(np.float32)
        img = np.clip(img + 0.1 * rng.standard_normal((size, size)), 0, 1)
        out.append(np.rint(255 * img).astype(np.uint8))
    return np.stack(out)


def texture_store(path: Path, kinds=(0, 1, 2, 3), n: int = 9, size: int = 32) -> TileStore:
    """One lot per texture kind; attribute ``size`` rises with the lot index, property too."""
    rng = np.random.default_rng(0)
    k = len(kinds)
    vals = np.stack([np.linspace(0.1, 0.9, k), np.linspace(0.9, 0.1, k)], 1)
    table = LotTable([f"L{i}" for i in range(k)], ("size", "porosity"), vals,
                     1000.0 + 100.0 * np.arange(k))
    TileStore.create(path, table, [n] * k, size)
    for i, kind in enumerate(kinds):
        TileStore.write_lot(path, i, texture_tiles(kind, n, size, rng), n)
    TileStore.mark_complete(path)
    return TileStore.open(path)
