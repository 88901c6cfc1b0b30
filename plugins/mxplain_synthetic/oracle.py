"""``synthetic_oracle``: the synthetic generator used as an editor.

:class:`SyntheticOracleEditor` "edits" a tile of a synthetic lot by rendering it again from its own
seed with the requested attributes (:func:`~mxplain_synthetic.generate.render_tile`): the true
causal model of the images, so an edit changes the requested attribute and nothing else *in
distribution*. Two uses:

* **the ceiling of edit fidelity**: judged by :func:`mxplain.editor_eval.edit_fidelity` with the
  same measurement, it shows how far that protocol can go at all (an edit the measurement sees
  moving the wrong way comes from the measurement's per-tile noise, not from an editor).
  :meth:`SyntheticLots.edit_fidelity_ceiling <mxplain_synthetic.dataset.SyntheticLots.edit_fidelity_ceiling>`
  runs it; every run on synthetic lots reports it (``editor.evaluation.fidelity_ceiling``);
* **the explainers with a perfect editor** (``[editor] name = "synthetic_oracle"``): forward sweeps
  and backward counterfactuals then test the *predictor* alone. It is not differentiable, so the
  backward explainer uses its gradient-free optimiser.

The layout of a tile is not kept (with other attributes the same seed draws other crystals), so the
ceiling is a reference, not a strict upper bound: an editor that keeps the layout and changes only
the attribute can beat it. ``fit`` needs a tile store written by the ``synthetic`` dataset (its
parameters are in the store); the saved state is those parameters, and a loaded oracle finds the
seeds of tiles by rendering the lots again.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.interfaces import Editor
from mxplain.store import to_uint8
from mxplain_synthetic.generate import ATTRIBUTES, render_tile

RENDER_CACHE_BYTES = 64 << 20
_renders: OrderedDict[tuple, np.ndarray] = OrderedDict()


def _key(tile_u8: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(tile_u8).tobytes(), digest_size=16).digest()


class SyntheticOracleEditor(Editor):
    """Re-renders tiles of a synthetic store at new attributes from their own seeds.

    ``encode`` looks each tile up among the lots' tiles (by content) and returns its render seed as
    an ``int64`` tensor; ``decode`` renders. Not differentiable."""

    name = "synthetic_oracle"
    differentiable = False
    attributes = ATTRIBUTES

    def __init__(self):
        pass

    @classmethod
    def for_dataset(cls, dataset, store=None) -> SyntheticOracleEditor:
        """An oracle of ``dataset`` (a ``SyntheticLots``); ``store``: its tile store, which makes
        the seed lookup cheaper than rendering the lots again."""
        ed = cls()
        ed.dataset_, ed._store, ed._seeds = dataset, store, None
        return ed

    # ---- learned state: the dataset's parameters ----------------------------------------------
    def fit(self, store, ctx) -> dict:
        from mxplain_synthetic.dataset import SyntheticLots

        source = (getattr(store, "attrs", None) or {}).get("source") or {}
        if source.get("dataset") != SyntheticLots.name:
            raise UserError("the synthetic_oracle editor needs a tile store built by the synthetic "
                            f"dataset; {str(store.path)!r} was not")
        self.dataset_, self._store, self._seeds = SyntheticLots(**source["params"]), store, None
        return {"tiles_indexed": len(self._seed_table())}

    def state_dict(self) -> dict:
        params = dict(self.dataset_.get_params())
        params.pop("workers", None)
        return {"dataset_params": json.dumps(params, sort_keys=True)}

    def load_state_dict(self, state: dict) -> None:
        from mxplain_synthetic.dataset import SyntheticLots

        self.dataset_ = SyntheticLots(**json.loads(state["dataset_params"]))
        self._store, self._seeds = None, None

    # ---- editing ------------------------------------------------------------------------------
    def _seed_table(self) -> dict[bytes, int]:
        if getattr(self, "_seeds", None) is None:
            ds, store = self.dataset_, self._store
            table = {}
            for i in range(ds.n_lots):
                tiles = store.tiles(i) if store is not None else ds.lot_tiles(i)
                for tile, seed in zip(tiles, ds.tile_seeds(i)):
                    table[_key(tile)] = int(seed)
            self._seeds = table
        return self._seeds

    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        table = self._seed_table()
        out = []
        for t in to_uint8(tiles.float()):
            seed = table.get(_key(t))
            if seed is None:
                raise UserError("the synthetic_oracle editor only edits tiles of its own "
                                "synthetic lots")
            out.append(seed)
        return torch.tensor(out, dtype=torch.int64)

    @staticmethod
    def _render(attrs: tuple, size: int, seed: int) -> np.ndarray:
        """``render_tile``, remembered for recent (attributes, size, seed), whatever the oracle:
        the fidelity protocol and the realism ceiling ask for the same renders again (a clipped
        +/-delta edit is the sweep's end)."""
        key = (attrs, size, seed)
        tile = _renders.get(key)
        if tile is None:
            tile = _renders[key] = render_tile(dict(zip(ATTRIBUTES, attrs)), size, seed)
            while _renders and len(_renders) * size * size > RENDER_CACHE_BYTES:
                _renders.popitem(last=False)
        else:
            _renders.move_to_end(key)
        return tile

    def decode(self, latent: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        a = attributes.detach().double().cpu().clamp(0.0, 1.0).numpy()
        size = int(self.dataset_.tile_size)
        tiles = [self._render(tuple(map(float, row)), size, int(s))
                 for row, s in zip(a, latent.tolist())]
        out = torch.from_numpy(np.stack(tiles).astype(np.float32) / 255.0)[:, None]
        return out.to(getattr(self, "device", torch.device("cpu")))
