"""Lot-by-lot zarr writing shared by the tile store and the results cube.

A store is created as a template (metadata only, through dask) and then filled one lot at a time
with region writes along ``lot`` (chunked one lot per chunk, so writers never share a chunk). A lot
counts as written only once its ``<flag>`` entry is set, in a second write after the data: a run
killed midway leaves the lot unflagged and ``--resume`` writes it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from mxplain import failpoints, outputs
from mxplain.errors import UserError

#: per-lot digests of every lot variable, ``(lot, digest_variable)`` uint64, written with the flag
DIGEST = "lot_digest"
DIGEST_DIM = "digest_variable"

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
    """Write metadata for every variable (dims, dtype) plus ``flag(lot)`` and the per-lot digests
    (:data:`DIGEST`); ``data`` holds small variables written in full right away (lot tables,
    coordinates). Atomic: the template is written into a sibling ``.<name>.creating`` folder and
    renamed into place (:mod:`mxplain.outputs`), so a kill leaves no half-made store at ``path``.
    ``path`` must not exist or be an empty folder (:func:`mxplain.outputs.prepare_store`)."""
    path = Path(path)
    chunks = {"lot": 1, **(chunks or {})}
    ds_vars = {}
    for name, (dims, dtype) in variables.items():
        shape = tuple(sizes[d] for d in dims)
        ch = tuple(min(chunks.get(d, sizes[d]), max(sizes[d], 1)) for d in dims)
        arr = da.full(shape, fill_for(dtype), dtype=dtype, chunks=ch)
        ds_vars[name] = xr.Variable(dims, arr)
    ds_vars[flag] = xr.Variable(("lot",), da.zeros(sizes["lot"], dtype=bool, chunks=1))
    names = sorted(variables)
    ds_vars[DIGEST] = xr.Variable(("lot", DIGEST_DIM), da.zeros(
        (sizes["lot"], len(names)), dtype=np.uint64, chunks=(1, max(len(names), 1))))
    coords = {**coords, DIGEST_DIM: np.array(names, dtype=str)}
    ds = xr.Dataset(ds_vars, coords=coords, attrs=_jsonable(attrs))
    for name, value in (data or {}).items():
        ds[name] = value
    tmp = outputs.creating_path(path)
    outputs.clear_leftover(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    (tmp / outputs.CREATING).write_bytes(b"")
    with quiet():
        ds.to_zarr(tmp / "store", mode="w-", compute=False, consolidated=True)
        # small variables given as data are computed and written by to_zarr(compute=False) only
        # when they are numpy-backed; dask-backed ones (the templates) stay unwritten on purpose.
    failpoints.hit(f"create:{path.name}")
    if path.is_dir():
        path.rmdir()  # an empty folder the user made for it
    os.replace(tmp / "store", path)
    outputs.remove_store(tmp, "leftover of a store creation")
    failpoints.hit(f"created:{path.name}")


def lot_digest(arr: np.ndarray) -> int:
    """64-bit digest of one lot's values of one variable, as stored (dtype, C order)."""
    a = np.ascontiguousarray(arr)
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return int.from_bytes(h.digest(), "little")


def write_lot(path: Path, index: int, values: dict[str, tuple[tuple[str, ...], np.ndarray]],
              flag: str) -> None:
    """Write one lot's variables (dims without ``lot``) into region ``lot=index``, then its flag
    together with the digests of what was written (stores made before digests: the flag only)."""
    with quiet():
        group = zarr.open_group(str(path), mode="r")
        stored = {name: np.asarray(arr, dtype=group[name].dtype)
                  for name, (_dims, arr) in values.items()}
        names = _digest_names(group)
    ds = xr.Dataset({name: (("lot", *dims), stored[name][None])
                     for name, (dims, _arr) in values.items()})
    region = {"lot": slice(index, index + 1)}
    done = {flag: (("lot",), np.array([True]))}
    if names is not None:
        missing = [n for n in names if n not in stored]
        if missing:
            raise RuntimeError(f"lot {index}: no values for {missing}")
        digests = np.array([[lot_digest(stored[n]) for n in names]], dtype=np.uint64)
        done[DIGEST] = (("lot", DIGEST_DIM), digests)
    with quiet():
        ds.to_zarr(path, region=region, mode="r+")
        failpoints.hit(f"write:{Path(path).name}")
        xr.Dataset(done).to_zarr(path, region=region, mode="r+")


def _digest_names(group) -> list[str] | None:
    if DIGEST not in group or DIGEST_DIM not in group:
        return None
    return [str(x) for x in group[DIGEST_DIM][:]]


def damaged_lots(path: Path, flag: str) -> list[tuple[int, str, str]]:
    """Flagged lots whose stored values no longer match their digests: ``(lot index, variable,
    why)`` for each (a missing chunk reads as fill values, a truncated one fails to decode).
    Stores without digests (written before them) are not checked."""
    out = []
    with quiet():
        group = zarr.open_group(str(path), mode="r")
        names = _digest_names(group)
        if names is None:
            return out
        done = np.asarray(group[flag][:], dtype=bool)
        digests = np.asarray(group[DIGEST][:])
        for i in np.flatnonzero(done):
            for j, name in enumerate(names):
                why = _check_lot(group, name, int(i), int(digests[i, j]))
                if why:
                    out.append((int(i), name, why))
                    break
    return out


def _check_lot(group, name: str, i: int, expected: int) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            arr = np.asarray(group[name][i])
    except Exception as exc:  # noqa: BLE001 - any decoding failure is damage
        return f"unreadable ({type(exc).__name__})"
    return "" if lot_digest(arr) == expected else "values differ from those written"


def unflag(path: Path, lots, flag: str) -> None:
    """Clear the done-flags of ``lots`` (they are written again)."""
    with quiet():
        arr = zarr.open_group(str(path), mode="r+")[flag]
        for i in lots:
            arr[int(i)] = False


def verify_or_unflag(path: Path, flag: str, what: str, repair: bool) -> list[str]:
    """Check every flagged lot's digests; damaged lots are unflagged (``repair``: they will be
    written again) or refused with one line naming the array and the lot."""
    try:
        bad = damaged_lots(path, flag)
    except Exception as exc:  # noqa: BLE001 - unreadable metadata
        raise UserError(f"{what} {str(path)!r} cannot be read ({type(exc).__name__}); "
                        f"it is damaged") from None
    if bad and not repair:
        i, name, why = bad[0]
        raise UserError(f"{what} {str(path)!r} is damaged: {name!r} of lot {i} is {why}"
                        + (f" (and {len(bad) - 1} more lots)" if len(bad) > 1 else ""))
    if bad:
        unflag(path, [b[0] for b in bad], flag)
        warnings.warn(f"{what} {str(path)!r}: {len(bad)} damaged lot(s) ({bad[0][1]!r} of lot "
                      f"{bad[0][0]} {bad[0][2]}) are written again", stacklevel=2)
    return [f"{name}[lot {i}]: {why}" for i, name, why in bad]


def lots_done(path: Path, flag: str) -> np.ndarray:
    with quiet():
        return np.asarray(zarr.open_group(str(path), mode="r")[flag][:], dtype=bool)


def update_attrs(path: Path, attrs: dict) -> None:
    with quiet():
        g = zarr.open_group(str(path), mode="r+")
        g.attrs.update(_jsonable(attrs))
        zarr.consolidate_metadata(str(path))


def write_small(path: Path, name: str, value: xr.DataArray) -> None:
    """Add (or replace) a small variable written in full (no lot chunks, no digest) to a finished
    store, e.g. the results cube's ``trust_attribute_verdict``."""
    with quiet():
        g = zarr.open_group(str(path), mode="r")
        attrs = dict(g.attrs)  # an append rewrites the group's attributes: kept as they were
        ds = xr.Dataset({name: value}, attrs=attrs)
        ds.to_zarr(str(path), mode="r+" if name in g else "a", consolidated=True)
        g = zarr.open_group(str(path), mode="r+")
        g.attrs.clear()
        g.attrs.update(attrs)
        zarr.consolidate_metadata(str(path))


def read_attrs(path: Path) -> dict:
    with quiet():
        return dict(zarr.open_group(str(path), mode="r").attrs)


def read_marked(path: Path, what: str, marker: str, version) -> dict:
    """The attributes of the mxplain store ``path`` whose ``marker`` attribute is ``version``;
    a missing path, a folder that is no zarr store, or another zarr store is a :class:`UserError`
    naming the path and ``what`` it should be (e.g. ``"tile store"``)."""
    if not path.exists():
        raise UserError(f"{what} {str(path)!r} does not exist")
    try:
        attrs = read_attrs(path)
    except Exception:
        raise UserError(f"{str(path)!r} is not a zarr store") from None
    if attrs.get(marker) != version:
        raise UserError(f"{str(path)!r} is a zarr store but not an mxplain {what} "
                        f"(no {marker!r} attribute)")
    return attrs


def open_dataset(path: Path) -> xr.Dataset:
    with quiet():
        return xr.open_zarr(path, consolidated=True)


def _jsonable(obj):
    """Attributes must survive JSON: numpy scalars become Python numbers."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
