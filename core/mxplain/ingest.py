"""``mxplain data ingest``: real SEM tiles into a tile store.

Input: ``FOLDER/<lot id>/*.png|*.tif|*.tiff`` (grayscale tiles, all the same size) and a CSV with a
``lot`` column, one column per attribute (values in [0, 1]) and a property column. Everything is
checked while writing into a temporary store that is renamed into place only when complete, so a
failed ingest leaves nothing behind.
"""

from __future__ import annotations

import csv
import math
import stat
import sys
from pathlib import Path

import numpy as np

from mxplain.errors import UserError
from mxplain.outputs import check_path_text, prepare_store, refuse_output_in_input, remove_store
from mxplain.preflight import check_disk
from mxplain.store import LotTable, TileStore

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def read_labels(path: Path, property_column: str) -> tuple[list[str], tuple[str, ...], np.ndarray,
                                                            np.ndarray]:
    """Lot ids, attribute names, attribute values (n, K) and property (n,) from a labels CSV
    (UTF-8, a byte-order mark allowed; a header row of distinct column names)."""
    where = str(path)
    if path.is_dir():
        raise UserError(f"labels file {where!r} is a directory, not a file")
    if not path.is_file():
        raise UserError(f"labels file {where!r} does not exist" if not path.exists() else
                        f"labels file {where!r} is not a regular file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            table = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"labels file {where!r} is not a readable CSV: {exc}") from None
    fields = [c.strip() for c in table[0]] if table else []
    _check_header(fields, where, property_column)
    attributes = tuple(c for c in fields if c not in ("lot", property_column))
    ids, values, prop = [], [], []
    for n, cells in enumerate(table[1:], start=2):
        if len(cells) > len(fields):
            raise UserError(f"labels file {where!r} line {n}: {len(cells)} fields, the header has "
                            f"{len(fields)}")
        row = dict(zip(fields, cells))
        lot = (row.get("lot") or "").strip()
        if not lot:
            raise UserError(f"labels file {where!r} line {n}: empty lot id")
        ids.append(lot)
        values.append([_number(row.get(a), where, n, lot, a) for a in attributes])
        prop.append(_number(row.get(property_column), where, n, lot, property_column))
    if not ids:
        raise UserError(f"labels file {where!r} has no rows")
    return ids, attributes, np.array(values, float), np.array(prop, float)


def _check_header(fields: list[str], where: str, property_column: str) -> None:
    if not fields:
        raise UserError(f"labels file {where!r} has no rows")
    if "" in fields:
        raise UserError(f"labels file {where!r}: column {fields.index('') + 1} of the header has "
                        f"no name")
    dup = sorted({c for c in fields if fields.count(c) > 1})
    if dup:
        raise UserError(f"labels file {where!r}: column {dup[0]!r} appears "
                        f"{fields.count(dup[0])} times in the header")
    if "lot" not in fields:
        raise UserError(f"labels file {where!r} has no 'lot' column (columns: {fields})")
    if property_column not in fields:
        raise UserError(f"labels file {where!r} has no {property_column!r} column "
                        f"(columns: {fields}; choose one with --property-column)")
    if not [c for c in fields if c not in ("lot", property_column)]:
        raise UserError(f"labels file {where!r} has no attribute columns")


def lot_files(folder: Path, lot: str) -> list[Path]:
    """The tiles of one lot folder, sorted: regular files with an image suffix. Anything else
    with such a name (a FIFO, a socket, a device, a folder) is skipped with a note on stderr:
    opening a FIFO would wait forever."""
    out = []
    for p in sorted((folder / lot).iterdir()):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            mode = p.stat().st_mode
        except OSError:
            mode = 0  # a dangling link
        if stat.S_ISREG(mode):
            out.append(p)
        else:
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            print(f"note: skipped {str(p)!r} ({kind})", file=sys.stderr)
    return out


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
    out = check_path_text(out, "--out")
    folder, labels = Path(folder), Path(labels)
    refuse_output_in_input(out, {"tile folder": folder, "labels file": labels}, "--out")
    prepare_store(out, "mxplain_tile_store", "tile store", resume=False, delete=False)
    if not folder.is_dir():
        raise UserError(f"tile folder {str(folder)!r} is a file, not a folder" if folder.exists()
                        else f"tile folder {str(folder)!r} does not exist")
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
        fs = lot_files(folder, lot)
        if not fs:
            raise UserError(f"lot {lot!r}: no PNG or TIFF tiles in {str(folder / lot)!r}")
        files[lot] = fs
    if tile_size is None:
        tile_size = read_tile(files[ids[0]][0]).shape[0]
    n_files = sum(len(fs) for fs in files.values())
    check_disk(n_files * tile_size ** 2, out, f"the tile store ({n_files} tiles of {tile_size} px)",
               "; choose another --out")
    tmp = out.with_name(f".{out.name}.ingesting")
    prepare_store(tmp, "mxplain_tile_store", "unfinished ingest", resume=False)
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
        prepare_store(out, "mxplain_tile_store", "tile store", resume=False)
        tmp.rename(out)
    except BaseException:
        remove_store(tmp, "unfinished ingest")
        raise
    return TileStore.open(out)
