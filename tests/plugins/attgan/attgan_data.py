"""Tiny tile stores and a stand-in measure for the AttGAN / editor_eval tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mxplain.store import LotTable, TileStore

ATTRS = ("size", "porosity", "polydispersity", "facetness")


def render(a: np.ndarray, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Tiles whose mean grey level follows a[0] and whose horizontal stripes follow a[1]."""
    y = np.arange(size)[:, None]
    stripes = np.sin(2 * np.pi * y / 8.0) * np.ones((1, size))
    tiles = []
    for _ in range(n):
        img = 0.2 + 0.6 * a[0] + 0.15 * a[1] * stripes + rng.normal(0, 0.03, (size, size))
        tiles.append(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
    return np.stack(tiles)


def make_store(path: Path, n_lots: int = 4, per_lot: int = 8, size: int = 32,
               seed: int = 0, property_sign: float = 1.0) -> TileStore:
    """``property_sign = -1``: the same tiles and attributes under the opposite property law."""
    rng = np.random.default_rng(seed)
    vals = np.stack([rng.permutation((np.arange(n_lots) + 0.5) / n_lots) for _ in ATTRS], 1)
    table = LotTable([f"L{i}" for i in range(n_lots)], ATTRS, vals,
                     property_sign * np.arange(n_lots, dtype=float))
    TileStore.create(path, table, [per_lot] * n_lots, size)
    for i in range(n_lots):
        TileStore.write_lot(path, i, render(vals[i], per_lot, size, rng), per_lot)
    TileStore.mark_complete(path)
    return TileStore.open(path)


def stand_in_measure(tiles: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> (N, 4): mean grey, stripe amplitude (std of row means), pixel std of
    the row-detrended tile, mean |horizontal gradient|."""
    t = tiles.astype(np.float64) / 255.0
    rows = t.mean(axis=2)
    detr = t - rows[:, :, None]
    grad = np.abs(np.diff(t, axis=2)).mean(axis=(1, 2))
    return np.stack([t.mean(axis=(1, 2)), rows.std(axis=1), detr.std(axis=(1, 2)), grad], 1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest (and deterministically) on one thread on a shared machine; import
    this fixture into a test module to apply it there."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
