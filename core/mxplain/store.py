"""The tile store: SEM tiles ``(lot, tile, y, x)`` as ``uint8`` plus a lot table, in zarr.

Layout (readable with ``xarray.open_zarr``)::

    tiles           (lot, tile, y, x) uint8   ragged lots padded with zeros
    tile_count      (lot)             int32   real tiles per lot
    lot_attributes  (lot, attribute)  float32 lot labels in [0, 1] (NaN where unlabelled)
    property        (lot)             float64 measured (or ground-truth) lot property
    tile_property   (lot, tile)       float64 optional: per-tile property (NaN-padded), e.g. a
                                              simulated one; the lot property is then its mean
    lot_written     (lot)             bool    set after a lot's tiles are written
    lot_digest      (lot, digest_variable) uint64  digest of the lot's stored tiles, written with
                                              the flag; every read checks it (damage is an error)

Root attributes: ``mxplain_tile_store`` (format version), ``property_name``, ``property_units``,
``tile_size``, ``complete`` (every lot written) and whatever the writer adds (``source``, ``law``…).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mxplain import zarrio
from mxplain.errors import UserError
from mxplain.interface_types import Lot

FORMAT_VERSION = 1
FLAG = "lot_written"


def to_tensor(tiles) -> torch.Tensor:
    """``uint8`` ``(N, H, W)`` / float arrays or tensors -> float32 ``(N, 1, H, W)`` in [0, 1]."""
    if isinstance(tiles, torch.Tensor):
        t = tiles
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
    else:
        arr = np.asarray(tiles)
        t = torch.from_numpy(arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else
                             arr.astype(np.float32))
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"tiles must have shape (N, H, W) or (N, 1, H, W), got {tuple(t.shape)}")
    return t.float()


def to_uint8(tiles: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float tiles in [0, 1] (``(N, 1, H, W)`` or ``(N, H, W)``) -> ``uint8`` ``(N, H, W)``."""
    arr = tiles.detach().cpu().numpy() if isinstance(tiles, torch.Tensor) else np.asarray(tiles)
    if arr.ndim == 4:
        arr = arr[:, 0]
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def train_val_split(lot_idx: np.ndarray, val_fraction: float, split: str = "tile",
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation positions of tiles whose lots are ``lot_idx``: a seeded random
    ``val_fraction`` of the tiles (``split="tile"``, as seed 000) or of whole lots (``"lots"``:
    validation on unseen lots)."""
    rng = np.random.default_rng(seed)
    n = len(lot_idx)
    if split == "lots":
        lots = np.unique(lot_idx)
        if len(lots) < 2:
            raise UserError(f'split = "lots" needs at least 2 lots with tiles, the tile store has '
                            f"{len(lots)}")
        n_val = min(len(lots) - 1, max(1, round(float(val_fraction) * len(lots))))
        val = np.isin(lot_idx, rng.permutation(lots)[:n_val])
        return np.flatnonzero(~val), np.flatnonzero(val)
    if n < 2:
        raise UserError(f"training needs at least 2 tiles, got {n}")
    n_val = min(n - 1, max(1, round(float(val_fraction) * n)))
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclass
class LotTable:
    """The labels of every lot: ids, attribute names and values, property."""

    lot_ids: list[str]
    attributes: tuple[str, ...]
    values: np.ndarray  # (n_lots, K)
    property: np.ndarray  # (n_lots,)
    property_name: str = "peak_stress"
    property_units: str = "psi"

    def validate(self, where: str) -> None:
        ids = list(self.lot_ids)
        if not ids:
            raise UserError(f"{where}: no lots")
        seen = set()
        for lot in ids:
            if lot in seen:
                raise UserError(f"{where}: duplicate lot id {lot!r}")
            seen.add(lot)
        if len(set(self.attributes)) != len(self.attributes):
            raise UserError(f"{where}: duplicate attribute names {list(self.attributes)}")
        v = np.asarray(self.values, dtype=np.float64)
        if v.shape != (len(ids), len(self.attributes)):
            raise UserError(f"{where}: attribute table has shape {v.shape}, expected "
                            f"({len(ids)}, {len(self.attributes)})")
        for i, lot in enumerate(ids):
            for j, a in enumerate(self.attributes):
                x = v[i, j]
                if not np.isfinite(x):
                    raise UserError(f"{where}: lot {lot!r} has no valid value for {a!r}")
                if not 0.0 <= x <= 1.0:
                    raise UserError(f"{where}: lot {lot!r} attribute {a!r} = {x:g} is outside [0, 1]")
            if not np.isfinite(self.property[i]):
                raise UserError(f"{where}: lot {lot!r} has no valid {self.property_name}")


class TileStore:
    """A zarr tile store on disk. Use :meth:`create` to start one and :meth:`open` to read one."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._ds = zarrio.open_dataset(self.path)
        self._tiles = self._ds["tiles"]
        a = self._ds.attrs
        self.lot_ids: list[str] = [str(x) for x in self._ds["lot"].values]
        self.attributes: tuple[str, ...] = tuple(str(x) for x in self._ds["attribute"].values)
        self.counts = self._ds["tile_count"].values.astype(int)
        self.lot_attributes = self._ds["lot_attributes"].values.astype(np.float32)
        self.properties = self._ds["property"].values.astype(np.float64)
        #: per-tile properties ``(lot, tile)`` (NaN past a lot's tiles) where the store has them
        #: (a synthetic store with ``property = "simulated"``: each tile's own simulated value, the
        #: lot property their mean); ``None`` in stores of lot labels only
        self.tile_properties: np.ndarray | None = (
            self._ds["tile_property"].values.astype(np.float64) if "tile_property" in self._ds
            else None)
        self.property_name: str = a.get("property_name", "property")
        self.property_units: str = a.get("property_units", "")
        self.tile_size: int = int(a["tile_size"])
        self.attrs = dict(a)
        self._digests = None
        if zarrio.DIGEST in self._ds and zarrio.DIGEST_DIM in self._ds.coords:
            names = [str(x) for x in self._ds[zarrio.DIGEST_DIM].values]
            if "tiles" in names:
                self._digests = self._ds[zarrio.DIGEST].values[:, names.index("tiles")]

    # ---- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, table: LotTable, counts, tile_size: int, attrs: dict | None = None,
               tile_chunk: int = 256) -> None:
        """Write the store's metadata and lot table; tiles follow with :meth:`write_lot`."""
        import xarray as xr

        table.validate(str(path))
        counts = np.asarray(counts, dtype=np.int32)
        n_lots, k = len(table.lot_ids), len(table.attributes)
        sizes = {"lot": n_lots, "tile": int(counts.max()), "y": tile_size, "x": tile_size,
                 "attribute": k}
        coords = {"lot": np.array(table.lot_ids, dtype=str),
                  "attribute": np.array(table.attributes, dtype=str)}
        data = {
            "tile_count": xr.DataArray(counts, dims=("lot",)),
            "lot_attributes": xr.DataArray(np.asarray(table.values, np.float32),
                                           dims=("lot", "attribute")),
            "property": xr.DataArray(np.asarray(table.property, np.float64), dims=("lot",)),
        }
        meta = {"mxplain_tile_store": FORMAT_VERSION, "property_name": table.property_name,
                "property_units": table.property_units, "tile_size": tile_size,
                "complete": False, **(attrs or {})}
        zarrio.create_template(Path(path), {"tiles": (("lot", "tile", "y", "x"), "uint8")},
                               sizes, coords, meta, FLAG, chunks={"tile": tile_chunk}, data=data)

    @staticmethod
    def write_lot(path: Path, index: int, tiles: np.ndarray, n_max: int) -> None:
        """Write lot ``index``'s ``uint8`` tiles ``(n, H, W)`` (padded to ``n_max``), then flag it."""
        tiles = np.asarray(tiles)
        if tiles.dtype != np.uint8 or tiles.ndim != 3:
            raise ValueError(f"lot tiles must be uint8 (n, H, W), got {tiles.dtype} {tiles.shape}")
        if len(tiles) < n_max:
            pad = np.zeros((n_max - len(tiles), *tiles.shape[1:]), np.uint8)
            tiles = np.concatenate([tiles, pad])
        zarrio.write_lot(Path(path), index, {"tiles": (("tile", "y", "x"), tiles)}, FLAG)

    @staticmethod
    def lots_written(path: Path) -> np.ndarray:
        return zarrio.lots_done(Path(path), FLAG)

    @staticmethod
    def mark_complete(path: Path) -> None:
        zarrio.update_attrs(Path(path), {"complete": True})

    # ---- reading --------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> TileStore:
        """Open a complete tile store; anything else is a :class:`UserError` naming the path."""
        path = Path(path)
        attrs = zarrio.read_marked(path, "tile store", "mxplain_tile_store", FORMAT_VERSION)
        if not attrs.get("complete"):
            raise UserError(f"tile store {str(path)!r} is incomplete (an interrupted write); "
                            f"rerun with --resume")
        return cls(path)

    @property
    def n_lots(self) -> int:
        return len(self.lot_ids)

    @property
    def n_tiles(self) -> int:
        return int(self.counts.sum())

    @property
    def max_tiles(self) -> int:
        return int(self._tiles.shape[1])

    def lot_index(self, lot: int | str) -> int:
        if isinstance(lot, str):
            if lot not in self.lot_ids:
                raise UserError(f"unknown lot {lot!r} in {str(self.path)!r}")
            return self.lot_ids.index(lot)
        return int(lot)

    def tiles(self, lot: int | str) -> np.ndarray:
        """The real tiles of one lot, ``uint8`` ``(n, H, W)``; checked against the digest written
        with them (a lost or altered chunk is a :class:`UserError` naming the lot)."""
        i = self.lot_index(lot)
        if self._digests is None:
            return np.asarray(self._tiles[i, : self.counts[i]].values)
        try:
            full = np.asarray(self._tiles[i].values)
        except Exception as exc:  # noqa: BLE001 - a chunk that does not decode
            raise UserError(f"tile store {str(self.path)!r} is damaged: 'tiles' of lot "
                            f"{self.lot_ids[i]!r} is unreadable ({type(exc).__name__})") from None
        if zarrio.lot_digest(full) != int(self._digests[i]):
            raise UserError(f"tile store {str(self.path)!r} is damaged: 'tiles' of lot "
                            f"{self.lot_ids[i]!r} differs from what was written (a lost or "
                            f"altered chunk)")
        return full[: self.counts[i]]

    def content_hash(self, include_property: bool = True) -> str:
        """SHA-256 (hex) of the store's content: lot ids, attribute names, lot attributes,
        properties, tile counts, tile size and every lot's tiles (through the per-lot digests
        where the store has them, else the tiles themselves). Equal stores hash equal on any
        machine; a model trained on a store records it (``TileStore.content_hash``).

        ``include_property=False`` leaves the lot properties out: the hash of what an editor
        learns from (tiles and attribute labels), equal for two stores whose tiles and attributes
        agree and whose property law differs."""
        h = hashlib.sha256()
        h.update(json.dumps([self.lot_ids, list(self.attributes), self.tile_size,
                             self.counts.tolist()]).encode())
        h.update(np.ascontiguousarray(self.lot_attributes, np.float32).tobytes())
        if include_property:
            h.update(np.ascontiguousarray(self.properties, np.float64).tobytes())
        for i in range(self.n_lots):
            digest = (int(self._digests[i]) if self._digests is not None
                      else zarrio.lot_digest(np.asarray(self._tiles[i].values)))
            h.update(digest.to_bytes(8, "little"))
        return h.hexdigest()

    def verify(self) -> list[str]:
        """Every lot read and checked against its digest; the damaged ones, described."""
        return [f"'tiles' of lot {self.lot_ids[i]!r}: {why}"
                for i, _name, why in zarrio.damaged_lots(self.path, FLAG)]

    def lot(self, lot: int | str) -> Lot:
        i = self.lot_index(lot)
        return Lot(index=i, lot_id=self.lot_ids[i], tiles=to_tensor(self.tiles(i)),
                   attributes=self.lot_attributes[i].copy(), property=float(self.properties[i]))

    def iter_lots(self) -> Iterator[Lot]:
        for i in range(self.n_lots):
            yield self.lot(i)

    def all_tiles(self, lots=None, max_per_lot: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Real tiles of the given lots (default: all) with their lot index: ``(N, H, W)``, ``(N,)``.
        With ``max_per_lot`` > 0, lots with more tiles contribute a seeded random subset (in
        store order)."""
        lots = range(self.n_lots) if lots is None else [self.lot_index(x) for x in lots]
        rng = np.random.default_rng(seed)
        tiles, idx = [], []
        for i in lots:
            t = self.tiles(i)
            if max_per_lot and len(t) > max_per_lot:
                t = t[np.sort(rng.choice(len(t), max_per_lot, replace=False))]
            tiles.append(t)
            idx.append(np.full(len(t), i, dtype=np.int64))
        if not tiles:
            return np.zeros((0, self.tile_size, self.tile_size), np.uint8), np.zeros(0, np.int64)
        return np.concatenate(tiles), np.concatenate(idx)

    def true_sensitivity(self) -> dict[str, float] | None:
        law = self.attrs.get("true_sensitivity")
        return {str(k): float(v) for k, v in law.items()} if law else None
