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
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.interfaces import Editor
from mxplain.store import to_uint8
from mxplain_synthetic.generate import ATTRIBUTES, render_star, render_tile
from mxplain_synthetic.lots import NAME, LotRenderer

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
        source = (getattr(store, "attrs", None) or {}).get("source") or {}
        if source.get("dataset") != NAME:
            raise UserError("the synthetic_oracle editor needs a tile store built by the synthetic "
                            f"dataset; {str(store.path)!r} was not")
        self.dataset_, self._store, self._seeds = LotRenderer(source["params"]), store, None
        return {"tiles_indexed": len(self._seed_table())}

    def state_dict(self) -> dict:
        params = dict(self.dataset_.get_params())
        params.pop("workers", None)
        return {"dataset_params": json.dumps(params, sort_keys=True)}

    def load_state_dict(self, state: dict) -> None:
        self.dataset_ = LotRenderer(json.loads(state["dataset_params"]))
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

    def _render(self, keys: list[tuple]) -> list[np.ndarray]:
        """``render_tile`` of each (attributes, size, seed), remembered for recent ones whatever
        the oracle (the fidelity protocol and the realism ceiling ask for the same renders again:
        a clipped +/-delta edit is the sweep's end); the others rendered once each, in the
        dataset's ``workers`` processes when > 1, as generation does (the same tiles)."""
        found = {k: _renders[k] for k in keys if k in _renders}
        jobs = {k: (dict(zip(ATTRIBUTES, k[0])), k[1], k[2]) for k in keys if k not in found}
        workers = int(getattr(self.dataset_, "workers", 1))
        if workers > 1 and len(jobs) >= 2 * workers:
            with ProcessPoolExecutor(max_workers=workers) as ex:
                done = list(ex.map(render_star, jobs.values(),
                                   chunksize=max(1, len(jobs) // (4 * workers))))
        else:
            done = [render_tile(*j) for j in jobs.values()]
        found.update(zip(jobs, done))
        for k in keys:
            if k not in _renders:
                _renders[k] = found[k]
            _renders.move_to_end(k)
        while _renders and len(_renders) * keys[0][1] ** 2 > RENDER_CACHE_BYTES:
            _renders.popitem(last=False)
        return [found[k] for k in keys]

    def decode(self, latent: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        a = attributes.detach().double().cpu().clamp(0.0, 1.0).numpy()
        size = int(self.dataset_.tile_size)
        tiles = self._render([(tuple(map(float, row)), size, int(s))
                              for row, s in zip(a, latent.tolist())])
        out = torch.from_numpy(np.stack(tiles).astype(np.float32) / 255.0)[:, None]
        return out.to(getattr(self, "device", torch.device("cpu")))
