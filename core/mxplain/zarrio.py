"""Lot-by-lot zarr writing shared by the tile store and the results cube.

A store is created as a template (metadata only, through dask) and then filled one lot at a time
with region writes along ``lot`` (chunked one lot per chunk, so writers never share a chunk). A lot
counts as written only once its ``<flag>`` entry is set, in a second write after the data: a run
killed midway leaves the lot unflagged and ``--resume`` writes it again.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from mxplain import failpoints

_held = 0  # > 0 while quiet_for_threads() holds the filters for the whole process


@contextlib.contextmanager
def quiet():
    """Silence zarr-v3 notices about string dtypes and consolidated metadata (we rely on neither
    being readable by other zarr implementations)."""
    if _held:  # the filters are in place already (and catch_warnings is not thread-safe)
        yield
        return
    with warnings.catch_warnings():
        _filters()
        yield


def _filters() -> None:
    warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
    warnings.filterwarnings("ignore", message=".*Consolidated metadata.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="xarray.*")


@contextlib.contextmanager
def quiet_for_threads():
    """:func:`quiet` for a block in which other threads read and write zarr stores: the filters
    are installed once here and :func:`quiet` leaves the (process-wide, not thread-safe) warning
    filters alone until the block ends. Enter it in one thread only."""
    global _held
    with warnings.catch_warnings():
        _filters()
        _held += 1
        try:
            yield
        finally:
            _held -= 1


def fill_for(dtype) -> object:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return False
    return 0


def create_template(
    path: Path,
    variables: dict[str, tuple[tuple[str, ...], str]],
    sizes: dict[str, int],
    coords: dict[str, np.ndarray],
    attrs: dict,
    flag: str,
    chunks: dict[str, int] | None = None,
    data: dict[str, xr.DataArray] | None = None,
) -> None:
    """Write metadata for every variable (dims, dtype) plus ``flag(lot)``; ``data`` holds small
    variables written in full right away (lot tables, coordinates)."""
    chunks = {"lot": 1, **(chunks or {})}
    ds_vars = {}
    for name, (dims, dtype) in variables.items():
        shape = tuple(sizes[d] for d in dims)
        ch = tuple(min(chunks.get(d, sizes[d]), max(sizes[d], 1)) for d in dims)
        arr = da.full(shape, fill_for(dtype), dtype=dtype, chunks=ch)
        ds_vars[name] = xr.Variable(dims, arr)
    ds_vars[flag] = xr.Variable(("lot",), da.zeros(sizes["lot"], dtype=bool, chunks=1))
    ds = xr.Dataset(ds_vars, coords=coords, attrs=_jsonable(attrs))
    for name, value in (data or {}).items():
        ds[name] = value
    with quiet():
        ds.to_zarr(path, mode="w", compute=False, consolidated=True)
        # small variables given as data are computed and written by to_zarr(compute=False) only
        # when they are numpy-backed; dask-backed ones (the templates) stay unwritten on purpose.


def write_lot(path: Path, index: int, values: dict[str, tuple[tuple[str, ...], np.ndarray]],
              flag: str) -> None:
    """Write one lot's variables (dims without ``lot``) into region ``lot=index``, then its flag."""
    ds = xr.Dataset({name: (("lot", *dims), arr[None]) for name, (dims, arr) in values.items()})
    region = {"lot": slice(index, index + 1)}
    with quiet():
        ds.to_zarr(path, region=region, mode="r+")
        failpoints.hit(f"write:{Path(path).name}")
        xr.Dataset({flag: (("lot",), np.array([True]))}).to_zarr(path, region=region, mode="r+")


def lots_done(path: Path, flag: str) -> np.ndarray:
    with quiet():
        return np.asarray(zarr.open_group(str(path), mode="r")[flag][:], dtype=bool)


def update_attrs(path: Path, attrs: dict) -> None:
    with quiet():
        g = zarr.open_group(str(path), mode="r+")
        g.attrs.update(_jsonable(attrs))
        zarr.consolidate_metadata(str(path))


def read_attrs(path: Path) -> dict:
    with quiet():
        return dict(zarr.open_group(str(path), mode="r").attrs)


def open_dataset(path: Path) -> xr.Dataset:
    with quiet():
        return xr.open_zarr(path, consolidated=True)


def _jsonable(obj):
    """Attributes must survive JSON: numpy scalars become Python numbers."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
