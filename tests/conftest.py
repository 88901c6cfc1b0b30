import os

import numpy as np
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture
def small_store(tmp_path):
    """A tiny hand-made tile store: 3 lots of 16x16 tiles, ragged counts."""
    from mxplain.store import LotTable, TileStore

    rng = np.random.default_rng(0)
    table = LotTable(["a", "b", "c"], ("size", "porosity"),
                     np.array([[0.1, 0.9], [0.5, 0.5], [0.9, 0.2]]),
                     np.array([1000.0, 1100.0, 1200.0]))
    path = tmp_path / "tiles.zarr"
    counts = [4, 3, 5]
    TileStore.create(path, table, counts, 16)
    for i, n in enumerate(counts):
        TileStore.write_lot(path, i, rng.integers(0, 255, (n, 16, 16), dtype=np.uint8), max(counts))
    TileStore.mark_complete(path)
    return TileStore.open(path)
