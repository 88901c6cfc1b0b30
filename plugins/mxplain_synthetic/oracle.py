"""The synthetic generator used as an editor: a reference for edit fidelity.

:class:`OracleEditor` "edits" a tile of a synthetic lot by rendering it again from its own seed
with the requested attributes (:func:`~mxplain_synthetic.generate.render_tile`): the true causal
model of the images, so an edit changes the requested attribute and nothing else *in
distribution*. Judged by :func:`mxplain.editor_eval.edit_fidelity` with the same measurement, it
shows how far that protocol can go at all: a share of edits that the measurement sees move the
wrong way comes from the measurement's per-tile noise, not from an editor. The layout of the tile
is not kept (with other attributes the same seed draws other crystals), so it is a reference, not a
strict upper bound: an editor that keeps the layout and changes only the attribute can beat it.

:meth:`SyntheticLots.edit_fidelity_ceiling <mxplain_synthetic.dataset.SyntheticLots.edit_fidelity_ceiling>`
runs it; the pipeline reports it next to the editor's own fidelity
(``metrics.json``: ``editor.evaluation.fidelity_ceiling``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from mxplain.interfaces import Editor, NoLearnedState
from mxplain.store import to_uint8
from mxplain_synthetic.generate import ATTRIBUTES, render_tile


def _key(tile_u8: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(tile_u8).tobytes(), digest_size=16).digest()


class OracleEditor(NoLearnedState, Editor):
    """Re-renders tiles of ``dataset``'s ``store`` at new attributes from their own seeds.

    ``encode`` looks each tile up among the store's tiles (by content) and returns its render seed
    as an ``int64`` tensor; ``decode`` renders. Not differentiable."""

    name = "synthetic_oracle"
    differentiable = False
    attributes = ATTRIBUTES

    def __init__(self, dataset=None, store=None):
        self.dataset = dataset
        self.store = store
        self._seeds: dict[bytes, int] | None = None

    def _seed_table(self) -> dict[bytes, int]:
        if self._seeds is None:
            ds, store = self.dataset, self.store
            table = {}
            for i in range(store.n_lots):
                seeds = ds.tile_seeds(i)
                for j, tile in enumerate(store.tiles(i)):
                    table[_key(tile)] = int(seeds[j])
            self._seeds = table
        return self._seeds

    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        table = self._seed_table()
        u8 = to_uint8(tiles.detach().float().cpu())
        out = []
        for t in u8:
            seed = table.get(_key(t))
            if seed is None:
                raise ValueError("the oracle editor only edits tiles of its own synthetic store")
            out.append(seed)
        return torch.tensor(out, dtype=torch.int64)

    def decode(self, latent: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        a = attributes.detach().double().cpu().clamp(0.0, 1.0).numpy()
        size = int(self.dataset.tile_size)
        tiles = [render_tile(dict(zip(ATTRIBUTES, map(float, row))), size, int(s))
                 for row, s in zip(a, latent.tolist())]
        return torch.from_numpy(np.stack(tiles).astype(np.float32) / 255.0)[:, None]
