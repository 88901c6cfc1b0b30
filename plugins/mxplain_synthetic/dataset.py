"""The ``synthetic`` dataset: lots of SEM-like tiles with known attributes and a known property law.

Law (SPEC: ``[data.law]``, the change of the property in units of ``property_std`` when an attribute
goes from 0 to 1 with the others fixed)::

    property = property_mean
               + property_std * sum_a law[a] * (A_a - 0.5)
               + lot_noise * property_std * eps_lot,        eps_lot ~ N(0, 1)

so ``d property / d A_a = law[a] * property_std`` (:meth:`SyntheticLots.true_sensitivity`, e.g. psi
per unit attribute, directly comparable with a slope of prediction against attribute value).

Seeds: the lot table (attributes, noise) comes from ``SeedSequence(seed, spawn_key=(0,))`` and
``(1,)``; lot ``i``'s tiles from ``SeedSequence(seed, spawn_key=(2, i))``, so any lot can be
regenerated alone (``--resume``) and gives the same tiles as an uninterrupted build.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import numpy as np

from mxplain.errors import UserError
from mxplain.interfaces import Dataset, Editor, RunContext
from mxplain.outputs import prepare_store
from mxplain.review_config import check_descriptions
from mxplain.store import LotTable, TileStore
from mxplain_synthetic.generate import ATTRIBUTES
from mxplain_synthetic.lots import (  # noqa: F401  (SAMPLINGS, sample_attributes: imported from here)
    NAME,
    SAMPLINGS,
    LotRenderer,
    sample_attributes,
)

DEFAULT_LAW = {"size": -2.0, "porosity": 0.5, "polydispersity": 1.0, "facetness": 1.5}
PROPERTIES = ("law", "simulated")
#: the masks :meth:`SyntheticLots.segment` returns (``measure.segment``'s structures)
SEGMENTED = ("holes", "boundaries", "crystals")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_num(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


class SyntheticLots(Dataset):
    """Synthetic crystal-powder lots with known attributes and a known property law.

    Every parameter is a key of the ``[data]`` table; ``law`` is ``[data.law]`` (attribute ->
    effect; attributes left out have no effect; ``None`` = :data:`DEFAULT_LAW`);
    ``attribute_descriptions`` is ``[data.attribute_descriptions]`` (attribute -> the definition
    ``mxplain review`` shows; ``None`` = the built-in definitions of the four attributes).
    """

    name: ClassVar[str] = NAME
    attributes: ClassVar[tuple[str, ...]] = ATTRIBUTES
    #: :meth:`segment`'s structures and the attribute each carries (pin-holes: porosity; crystal
    #: edges: size, the smaller the crystals the more edge per pixel)
    structures: ClassVar[dict[str, str | None]] = {"holes": "porosity", "boundaries": "size",
                                                   "crystals": None}

    def __init__(self, n_lots: int = 16, tiles_per_lot: int = 96, tile_size: int = 64,
                 seed: int = 0, law: dict | None = None, property_mean: float = 2150.0,
                 property_std: float = 150.0, lot_noise: float = 0.05,
                 property_name: str = "peak_stress", property_units: str = "psi",
                 workers: int = 1, attribute_sampling: str = "lhs",
                 attribute_descriptions: dict | None = None, property: str = "law"):
        self.n_lots = n_lots
        self.tiles_per_lot = tiles_per_lot
        self.tile_size = tile_size
        self.seed = seed
        self.law = law
        self.property_mean = property_mean
        self.property_std = property_std
        self.lot_noise = lot_noise
        self.property_name = property_name
        self.property_units = property_units
        self.workers = workers
        self.attribute_sampling = attribute_sampling
        self.attribute_descriptions = attribute_descriptions
        self.property = property
        self.validate()

    # ---- parameters -----------------------------------------------------------------------
    def validate(self) -> None:
        """Every parameter checked; a bad one is a :class:`UserError` naming its ``[data]`` key."""
        def bad(key, why):
            raise UserError(f"[data] {key} = {getattr(self, key)!r}: {why}")

        if not _is_int(self.n_lots) or self.n_lots < 2:
            bad("n_lots", "must be an integer >= 2")
        if not _is_int(self.tiles_per_lot) or self.tiles_per_lot < 1:
            bad("tiles_per_lot", "must be an integer >= 1")
        if not _is_int(self.tile_size) or self.tile_size < 32:
            bad("tile_size", "must be an integer >= 32 (pixels)")
        if not _is_int(self.seed) or self.seed < 0:
            bad("seed", "must be an integer >= 0")
        if not _is_int(self.workers) or self.workers < 1:
            bad("workers", "must be an integer >= 1")
        for key in ("property_mean", "property_std", "lot_noise"):
            v = getattr(self, key)
            if not _is_num(v) or not math.isfinite(v):
                bad(key, "must be a finite number")
        if self.property_std <= 0:
            bad("property_std", "must be > 0")
        if self.lot_noise < 0:
            bad("lot_noise", "must be >= 0")
        for key in ("property_name", "property_units"):
            if not isinstance(getattr(self, key), str):
                bad(key, "must be a string")
        if not self.property_name:
            bad("property_name", "must not be empty")
        if self.property not in PROPERTIES:
            bad("property", f"use one of {list(PROPERTIES)}")
        if self.attribute_sampling not in SAMPLINGS:
            bad("attribute_sampling", f"use one of {list(SAMPLINGS)}")
        self.resolved_law()
        check_descriptions(self.attribute_descriptions, ATTRIBUTES)

    @classmethod
    def check_params(cls, params: dict) -> None:
        """Every ``[data]`` value checked when the config is resolved (see :meth:`validate`)."""
        cls(**{**cls.param_defaults(), **params})

    @classmethod
    def data_shape(cls, params: dict):
        from mxplain.interfaces import DataShape

        p = {**cls.param_defaults(), **params}
        n_lots, per_lot = int(p["n_lots"]), int(p["tiles_per_lot"])
        return DataShape(n_lots, n_lots * per_lot, per_lot, int(p["tile_size"]),
                         attributes=tuple(ATTRIBUTES))

    @classmethod
    def footprint(cls, params: dict, data) -> list:
        """The store on disk (uncompressed ``uint8``), one lot's tiles in memory plus each render
        worker's float canvases (~40 bytes per pixel)."""
        from mxplain.interfaces import Footprint

        p = {**cls.param_defaults(), **params}
        shape = cls.data_shape(p)
        s2 = shape.tile_size ** 2
        return [Footprint("the tile store", ("n_lots", "tiles_per_lot", "tile_size"),
                          disk=shape.n_tiles * s2),
                Footprint("one lot's tiles while they are generated",
                          ("tiles_per_lot", "tile_size", "workers"),
                          memory=shape.max_tiles_per_lot * s2 + int(p["workers"]) * 40 * s2)]

    def resolved_law(self) -> dict[str, float]:
        """The law as a full ``{attribute: effect}`` dict (defaults when ``law`` is None)."""
        if self.law is None:
            return dict(DEFAULT_LAW)
        if not isinstance(self.law, dict):
            raise UserError(f"[data.law] must be a table of attribute = number, got {self.law!r}")
        out = {a: 0.0 for a in ATTRIBUTES}
        for key, value in self.law.items():
            if key not in ATTRIBUTES:
                raise UserError(f"[data.law] unknown attribute {key!r}; attributes are "
                                f"{', '.join(ATTRIBUTES)}")
            if not _is_num(value) or not math.isfinite(value):
                raise UserError(f"[data.law] {key} = {value!r} must be a finite number")
            out[key] = float(value)
        return out

    def true_sensitivity(self) -> dict[str, float] | None:
        """``{attribute: d property / d attribute}`` in property units per unit attribute (``None``
        with ``property = "simulated"``: the physics has no known law in the attributes)."""
        if self.property == "simulated":
            return None
        return {a: v * float(self.property_std) for a, v in self.resolved_law().items()}

    def simulator(self):
        """The pore space's effective diffusivity (:mod:`mxplain_synthetic.physics`), whatever
        ``property`` is: with ``"law"`` it judges designed tiles by physics, with ``"simulated"``
        it also labels the tiles."""
        from mxplain_synthetic.physics import pore_diffusivity_simulator

        return pore_diffusivity_simulator()

    def _source(self) -> dict:
        params = self.get_params()
        params["law"] = self.resolved_law()
        params.pop("workers")  # does not change the tiles
        params.pop("attribute_descriptions")  # nor do the words a review page shows
        if params["property"] == "law":
            params.pop("property")  # as stores written before the key (they still resume)
        return json.loads(json.dumps({"dataset": self.name, "params": params}))

    # ---- lots -----------------------------------------------------------------------------
    def lot_ids(self) -> list[str]:
        width = max(3, len(str(self.n_lots - 1)))
        return [f"lot{i:0{width}d}" for i in range(self.n_lots)]

    def _lots(self) -> LotRenderer:
        return LotRenderer(self.get_params())

    def lot_attributes(self) -> np.ndarray:
        """``(n_lots, 4)`` nominal attributes in :data:`ATTRIBUTES` order."""
        return self._lots().lot_attributes()

    def lot_properties(self, attributes: np.ndarray | None = None) -> np.ndarray:
        """The law applied to each lot's attributes, with the lot's own noise."""
        a = self.lot_attributes() if attributes is None else np.asarray(attributes, np.float64)
        law = self.resolved_law()
        w = np.array([law[k] for k in ATTRIBUTES])
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1,)))
        eps = rng.standard_normal(self.n_lots)
        std = float(self.property_std)
        return (float(self.property_mean) + std * ((a - 0.5) @ w)
                + float(self.lot_noise) * std * eps[: len(a)])

    def lot_table(self) -> LotTable:
        """The lots' ids, attributes and properties; with ``property = "simulated"`` the properties
        are placeholders (0) until :meth:`build` has simulated the tiles, and the name and units
        are the simulator's."""
        attrs = self.lot_attributes()
        if self.property == "simulated":
            sim = self.simulator()
            return LotTable(lot_ids=self.lot_ids(), attributes=ATTRIBUTES, values=attrs,
                            property=np.zeros(self.n_lots), property_name=sim.property_name,
                            property_units=sim.property_units)
        return LotTable(lot_ids=self.lot_ids(), attributes=ATTRIBUTES, values=attrs,
                        property=self.lot_properties(attrs), property_name=self.property_name,
                        property_units=self.property_units)

    def lot_tiles(self, index: int, attributes: np.ndarray | None = None) -> np.ndarray:
        """Lot ``index``'s tiles, ``uint8`` ``(tiles_per_lot, H, W)``, regenerated from its seed."""
        return self._lots().lot_tiles(index, attributes)

    def _lot_rng(self, index: int) -> np.random.Generator:
        return self._lots().lot_rng(index)

    def tile_seeds(self, index: int) -> np.ndarray:
        """The render seed of each of lot ``index``'s tiles (``render_tile(attributes, size,
        seed)`` gives the tile back)."""
        return self._lots().tile_seeds(index)

    def edit_fidelity_ceiling(self, store, measure=None, **kwargs) -> dict:
        """:func:`mxplain.editor_eval.edit_fidelity` of the generator itself used as the editor
        (:class:`~mxplain_synthetic.oracle.SyntheticOracleEditor`), same protocol and measurement:
        what the protocol lets any editor reach on these lots (see ``oracle.py``). ``store`` must
        be this dataset's tile store; ``kwargs`` as for ``edit_fidelity``."""
        from mxplain.editor_eval import edit_fidelity
        from mxplain_synthetic.oracle import SyntheticOracleEditor

        return edit_fidelity(SyntheticOracleEditor.for_dataset(self, store), store,
                             measure or self.measure, **kwargs)

    def reference_editor(self, store) -> Editor:
        """The generator itself as the editor (:class:`~mxplain_synthetic.oracle.SyntheticOracleEditor`)
        for tiles of ``store`` (this dataset's tile store): the realism ceiling."""
        from mxplain_synthetic.oracle import SyntheticOracleEditor

        return SyntheticOracleEditor.for_dataset(self, store)

    # ---- the store ------------------------------------------------------------------------
    def build(self, path: Path, ctx: RunContext | None = None, resume: bool = False) -> TileStore:
        """Write the tile store at ``path``; with ``resume`` continue an interrupted build of the
        same parameters (a store of other parameters is a :class:`UserError`)."""
        from tqdm.auto import tqdm

        from mxplain import zarrio

        self.validate()
        ctx = ctx or RunContext()
        path = Path(path)
        source = self._source()
        table = self.lot_table()
        continuing = prepare_store(path, "mxplain_tile_store", "tile store", resume)
        if continuing:
            attrs = zarrio.read_attrs(path)
            if attrs.get("source") != source:
                old = (attrs.get("source") or {}).get("params", {})
                diff = sorted(k for k in set(old) | set(source["params"])
                              if old.get(k) != source["params"].get(k))
                raise UserError(f"cannot resume tile store {str(path)!r}: it was built with "
                                f"other [data] parameters ({', '.join(diff) or 'dataset'})")
            # damaged lots (a lost or truncated chunk) are unflagged and generated again
            zarrio.verify_or_unflag(path, "lot_written", "tile store", repair=True)
        else:
            extra = {"source": source, "true_sensitivity": self.true_sensitivity(),
                     "law": self.resolved_law(),
                     "law_formula": "property = property_mean + property_std * sum_a law[a] * "
                                    "(A_a - 0.5) + lot_noise * property_std * eps_lot"}
            if self.property == "simulated":
                extra = {"source": source, "simulator": self.simulator().describe(),
                         "property_rule": "each tile's property simulated from its pixels "
                                          "(tile_property); a lot's property is their mean"}
            TileStore.create(path, table, [self.tiles_per_lot] * self.n_lots, self.tile_size,
                             attrs=extra)
        done = TileStore.lots_written(path)
        todo = [i for i in range(self.n_lots) if not done[i]]
        for i in tqdm(todo, desc="synthetic lots", unit="lot", disable=not ctx.progress):
            tiles = self.lot_tiles(i, table.values[i])
            TileStore.write_lot(path, i, tiles, self.tiles_per_lot)
        if self.property == "simulated":
            self._write_simulated(path, ctx)
        TileStore.mark_complete(path)
        return TileStore.open(path)

    def _write_simulated(self, path: Path, ctx: RunContext) -> None:
        """Simulate every stored tile (so a resumed build gives the same values), then write
        ``tile_property`` ``(lot, tile)`` (NaN past a lot's tiles) and the lot means as
        ``property``."""
        from tqdm.auto import tqdm

        store, sim = TileStore(path), self.simulator()
        values = np.full((store.n_lots, store.max_tiles), np.nan)
        for i in tqdm(range(store.n_lots), desc="simulated property", unit="lot",
                      disable=not ctx.progress):
            values[i, : store.counts[i]] = sim.simulate(store.tiles(i))
        write_tile_properties(path, values)

    # ---- the measurement module -----------------------------------------------------------
    def measure(self, tiles) -> np.ndarray:
        """Raw image-analysis measurements ``(N, 4)`` of ``uint8`` tiles ``(N, H, W)`` (float
        tiles in [0, 1] are converted), columns in :data:`ATTRIBUTES` order (see ``measure.py``);
        in ``workers`` processes like generation, the same numbers."""
        from mxplain_synthetic.measure import measure_tiles

        return measure_tiles(_as_uint8(tiles), workers=int(self.workers))

    def segment(self, tiles) -> dict[str, np.ndarray]:
        """Boolean ``holes``, ``boundaries`` and ``crystals`` masks ``(N, H, W)`` of ``uint8`` tiles
        ``(N, H, W)`` (one tile ``(H, W)``: masks ``(H, W)``), by :func:`mxplain_synthetic.measure.
        segment`."""
        from mxplain_synthetic.measure import segment

        t = _as_uint8(tiles)
        if t.ndim == 2:
            one = segment(t)
            return {s: np.asarray(one[s], bool) for s in SEGMENTED}
        per = [segment(tile) for tile in t]
        return {s: np.stack([np.asarray(m[s], bool) for m in per]) if per else
                np.zeros(t.shape, bool) for s in SEGMENTED}


def write_tile_properties(path: Path, values: np.ndarray) -> None:
    """Store per-tile properties ``(lot, tile)`` as ``tile_property`` and their lot means (NaN
    ignored) as the lot ``property`` (:attr:`mxplain.store.TileStore.tile_properties`)."""
    import xarray as xr

    from mxplain import zarrio

    values = np.asarray(values, np.float64)
    zarrio.write_small(path, "tile_property", xr.DataArray(values, dims=("lot", "tile")))
    zarrio.write_small(path, "property", xr.DataArray(np.nanmean(values, axis=1), dims=("lot",)))


def _as_uint8(tiles) -> np.ndarray:
    """uint8 arrays pass; float tiles/tensors in [0, 1] (``(N, 1, H, W)`` too) are converted."""
    try:
        import torch

        if isinstance(tiles, torch.Tensor):
            tiles = tiles.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(tiles)
    if arr.ndim == 4:
        arr = arr[:, 0]
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return arr
