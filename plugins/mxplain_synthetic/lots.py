"""The synthetic lots' generative model, seeds to tiles: the lots' attributes from the dataset's
seed, each lot's render generator, its tiles and their render seeds. What both the dataset
(:class:`~mxplain_synthetic.dataset.SyntheticLots`) and the oracle editor
(:class:`~mxplain_synthetic.oracle.SyntheticOracleEditor`, which renders tiles again from their
seeds) need; neither imports the other for it."""

from __future__ import annotations

import numpy as np

from mxplain.errors import UserError
from mxplain_synthetic.generate import ATTRIBUTES, generate_tiles, tile_seeds

#: the dataset's registered name, recorded as the ``source`` of the tile stores it writes
NAME = "synthetic"
SAMPLINGS = ("lhs", "uniform")


def sample_attributes(n_lots: int, seed, method: str = "lhs") -> np.ndarray:
    """``(n_lots, 4)`` lot attributes in [0.05, 0.95]: a Latin hypercube optimised for an even
    spread (centred-discrepancy, up to 256 lots; attributes nearly uncorrelated), or independent
    uniform draws.
    ``seed`` is an int or a ``numpy.random.SeedSequence``."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    rng = np.random.default_rng(ss)
    if method == "lhs":
        from scipy.stats import qmc

        # the discrepancy optimisation costs ~n^2: plain LHS beyond a few hundred lots
        opt = "random-cd" if n_lots <= 256 else None
        u = qmc.LatinHypercube(d=len(ATTRIBUTES), optimization=opt, seed=rng).random(n_lots)
    elif method == "uniform":
        u = rng.random((n_lots, len(ATTRIBUTES)))
    else:
        raise UserError(f"[data] attribute_sampling = {method!r}: use one of {list(SAMPLINGS)}")
    return 0.05 + 0.9 * u


class LotRenderer:
    """The lots of a synthetic dataset's parameters (``n_lots``, ``tiles_per_lot``, ``tile_size``,
    ``seed``, ``attribute_sampling``, ``workers``; others are kept for :meth:`get_params` only)."""

    def __init__(self, params: dict):
        self.params = dict(params)
        self.n_lots = int(params["n_lots"])
        self.tiles_per_lot = int(params["tiles_per_lot"])
        self.tile_size = int(params["tile_size"])
        self.seed = int(params["seed"])
        self.attribute_sampling = params.get("attribute_sampling", "lhs")
        self.workers = int(params.get("workers", 1))

    def get_params(self) -> dict:
        return dict(self.params)

    def lot_attributes(self) -> np.ndarray:
        """``(n_lots, 4)`` nominal attributes in :data:`ATTRIBUTES` order."""
        ss = np.random.SeedSequence(self.seed, spawn_key=(0,))
        return sample_attributes(self.n_lots, ss, self.attribute_sampling)

    def lot_rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(2, int(index))))

    def lot_tiles(self, index: int, attributes: np.ndarray | None = None) -> np.ndarray:
        """Lot ``index``'s tiles, ``uint8`` ``(tiles_per_lot, H, W)``, regenerated from its seed."""
        if not 0 <= index < self.n_lots:
            raise UserError(f"lot index {index} outside 0..{self.n_lots - 1}")
        a = self.lot_attributes()[index] if attributes is None else attributes
        return generate_tiles(dict(zip(ATTRIBUTES, map(float, a))), self.tiles_per_lot,
                              self.tile_size, self.lot_rng(index), workers=self.workers)

    def tile_seeds(self, index: int) -> np.ndarray:
        """The render seed of each of lot ``index``'s tiles (``render_tile(attributes, size,
        seed)`` gives the tile back)."""
        return tile_seeds(self.lot_rng(index), self.tiles_per_lot)
