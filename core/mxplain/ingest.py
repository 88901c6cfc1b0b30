"""``mxplain data ingest``: real SEM tiles into a tile store.

Input: ``FOLDER/<lot id>/*.png|*.tif|*.tiff`` (grayscale tiles, all the same size) and a CSV with a
``lot`` column, one column per attribute (values in [0, 1]) and a property column. Everything is
checked while writing into a temporary store that is renamed into place only when complete, so a
failed ingest leaves nothing behind.
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np

from mxplain.errors import UserError
from mxplain.store import LotTable, TileStore

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def read_labels(path: Path, property_column: str) -> tuple[list[str], tuple[str, ...], np.ndarray,
                                                            np.ndarray]:
    """Lot ids, attribute names, attribute values (n, K) and property (n,) from a labels CSV."""
    where = str(path)
    if not path.is_file():
        raise UserError(f"labels file {where!r} does not exist")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            fields = list(rows[0].keys()) if rows else []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"labels file {where!r} is not a readable CSV: {exc}") from None
    if not rows:
        raise UserError(f"labels file {where!r} has no rows")
    if "lot" not in fields:
        raise UserError(f"labels file {where!r} has no 'lot' column (columns: {fields})")
    if property_column not in fields:
        raise UserError(f"labels file {where!r} has no {property_column!r} column "
                        f"(columns: {fields}; choose one with --property-column)")
    attributes = tuple(c for c in fields if c not in ("lot", property_column))
    if not attributes:
        raise UserError(f"labels file {where!r} has no attribute columns")
    ids, values, prop = [], [], []
    for n, row in enumerate(rows, start=2):
        lot = (row.get("lot") or "").strip()
        if not lot:
            raise UserError(f"labels file {where!r} line {n}: empty lot id")
        ids.append(lot)
        vals = []
        for a in attributes:
            vals.append(_number(row.get(a), where, n, lot, a))
        values.append(vals)
        prop.append(_number(row.get(property_column), where, n, lot, property_column))
    return ids, attributes, np.array(values, float), np.array(prop, float)


def _number(text, where: str, line: int, lot: str, column: str) -> float:
    if text is None or str(text).strip() == "":
        raise UserError(f"labels file {where!r} line {line}: lot {lot!r} has no {column!r} value")
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"labels file {where!r} line {line}: lot {lot!r} {column!r} = {text!r} "
                        f"is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"labels file {where!r} line {line}: lot {lot!r} {column!r} is {text}")
    return value


def read_tile(path: Path) -> np.ndarray:
    """One grayscale tile as ``uint8`` (H, W); 16-bit tiles are scaled down."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                if im.mode not in ("L", "I;16", "I;16B", "I", "1"):
                    raise UserError(f"tile {str(path)!r} is {im.mode}, not grayscale")
                arr = np.asarray(im)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"tile {str(path)!r} is not a readable image ({type(exc).__name__})") \
            from None
    if arr.ndim != 2:
        raise UserError(f"tile {str(path)!r} has shape {arr.shape}: grayscale (H, W) expected, "
                        f"not RGB or a stack")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype in (np.uint16, np.int32) and arr.min() >= 0 and arr.max() <= 65535:
        return (arr.astype(np.uint32) // 257).astype(np.uint8)
    raise UserError(f"tile {str(path)!r} has dtype {arr.dtype}: 8- or 16-bit grayscale expected")


def ingest(folder: Path, labels: Path, out: Path, property_column: str = "property",
           units: str = "", tile_size: int | None = None) -> TileStore:
    folder, labels, out = Path(folder), Path(labels), Path(out)
    if not folder.is_dir():
        raise UserError(f"tile folder {str(folder)!r} does not exist")
    ids, attributes, values, prop = read_labels(labels, property_column)
    table = LotTable(ids, attributes, values, prop, property_name=property_column,
                     property_units=units)
    table.validate(str(labels))
    subdirs = {p.name for p in folder.iterdir() if p.is_dir()}
    for lot in ids:
        if lot not in subdirs:
            raise UserError(f"lot {lot!r} of {str(labels)!r} has no folder in {str(folder)!r}")
    extra = sorted(subdirs - set(ids))
    if extra:
        raise UserError(f"lot folder {extra[0]!r} in {str(folder)!r} has no row in "
                        f"{str(labels)!r}")
    files = {}
    for lot in ids:
        fs = sorted(p for p in (folder / lot).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not fs:
            raise UserError(f"lot {lot!r}: no PNG or TIFF tiles in {str(folder / lot)!r}")
        files[lot] = fs
    if tile_size is None:
        tile_size = read_tile(files[ids[0]][0]).shape[0]
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        counts = [len(files[lot]) for lot in ids]
        TileStore.create(tmp, table, counts, tile_size,
                         attrs={"source": {"dataset": "ingest", "folder": str(folder),
                                           "labels": str(labels)}})
        for i, lot in enumerate(ids):
            tiles = np.empty((len(files[lot]), tile_size, tile_size), np.uint8)
            for j, f in enumerate(files[lot]):
                t = read_tile(f)
                if t.shape != (tile_size, tile_size):
                    raise UserError(f"tile {str(f)!r} is {t.shape[1]}x{t.shape[0]} px, expected "
                                    f"{tile_size}x{tile_size}")
                tiles[j] = t
            TileStore.write_lot(tmp, i, tiles, max(counts))
        TileStore.mark_complete(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TileStore.open(out)
