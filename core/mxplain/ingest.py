"""``mxplain data ingest``: real SEM tiles into a tile store.

Input: ``FOLDER/<lot id>/*.png|*.tif|*.tiff`` (grayscale tiles, all the same size; 8- or 16-bit,
grey RGB accepted: :mod:`mxplain.images`) and a CSV with a ``lot`` column, a property column and
attribute columns (values in [0, 1]): every other column, or those ``attributes`` names (the rest
are ignored and listed in a note). Everything is checked while writing into a temporary store that
is renamed into place only when complete, so a failed ingest leaves nothing behind. How the tiles'
grey levels were mapped to ``uint8`` and which columns were used is printed and kept in the store's
provenance (root attribute ``source``).
"""

from __future__ import annotations

import csv
import difflib
import math
import stat
import sys
from pathlib import Path

import numpy as np

from mxplain.errors import UserError
from mxplain.images import Intensity, read_raw, survey
from mxplain.outputs import check_path_text, prepare_store, refuse_output_in_input, remove_store
from mxplain.preflight import check_disk
from mxplain.store import LotTable, TileStore

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


def read_labels(path: Path, property_column: str, attributes: list[str] | None = None,
                ignored: list[str] | None = None) -> tuple[list[str], tuple[str, ...],
                                                           np.ndarray, np.ndarray]:
    """Lot ids, attribute names, attribute values (n, K) and property (n,) from a labels CSV
    (UTF-8, a byte-order mark allowed; a header row of distinct column names). ``attributes``:
    the attribute columns (``None``: every column but ``lot`` and the property); the names of the
    columns left out are appended to ``ignored``."""
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
    chosen = attributes is not None
    attributes = _attribute_columns(fields, where, property_column, attributes)
    if ignored is not None:
        ignored += [c for c in fields if c not in ("lot", property_column, *attributes)]
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
        values.append([_number(row.get(a), where, n, lot, a, chosen) for a in attributes])
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


def _attribute_columns(fields: list[str], where: str, property_column: str,
                       chosen: list[str] | None) -> tuple[str, ...]:
    if chosen is None:
        return tuple(c for c in fields if c not in ("lot", property_column))
    names = [c.strip() for c in chosen]
    if not names or "" in names:
        raise UserError(f"--attributes {','.join(chosen)!r}: name the attribute columns, "
                        f"separated by commas (columns of {where!r}: {fields})")
    for c in names:
        if c in ("lot", property_column):
            raise UserError(f"--attributes: {c!r} is the {'lot' if c == 'lot' else 'property'} "
                            f"column of {where!r}, not an attribute")
        if c not in fields:
            hint = difflib.get_close_matches(c, fields, n=1)
            raise UserError(f"--attributes: labels file {where!r} has no {c!r} column"
                            + (f"; did you mean {hint[0]!r}?" if hint else f" (columns: {fields})"))
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise UserError(f"--attributes: {dup[0]!r} is named {names.count(dup[0])} times")
    return tuple(names)


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


def _number(text, where: str, line: int, lot: str, column: str, chosen: bool = True) -> float:
    if text is None or str(text).strip() == "":
        raise UserError(f"labels file {where!r} line {line}: lot {lot!r} has no {column!r} value")
    try:
        value = float(text)
    except ValueError:
        hint = "" if chosen else ("; if it is not an attribute, choose the attribute columns "
                                  "with --attributes a,b,c")
        raise UserError(f"labels file {where!r} line {line}: lot {lot!r} {column!r} = {text!r} "
                        f"is not a number{hint}") from None
    if not math.isfinite(value):
        raise UserError(f"labels file {where!r} line {line}: lot {lot!r} {column!r} is {text}")
    return value


def read_tile(path: Path, intensity: Intensity | None = None) -> np.ndarray:
    """One grayscale tile as ``uint8`` (H, W) by the ingest's ``intensity`` rule
    (:func:`mxplain.images.survey`; ``None``: this tile's own)."""
    raw = read_raw(path)
    return (intensity or survey([path])).to_uint8(raw, path)


def summary(store: TileStore) -> list[str]:
    """What an ingest did, in lines for the CLI to print after the store is written: the
    attribute columns and those ignored, the grey-level rule, grey RGB tiles (from the store's
    provenance, ``source``)."""
    src = store.attrs.get("source") or {}
    if src.get("dataset") != "ingest":
        return []
    lines = [f"attributes: {', '.join(src.get('attributes', []))}"]
    if src.get("ignored_columns"):
        why = ", not in --attributes" if src.get("attributes_chosen") else ""
        lines[0] += f" (columns ignored{why}: {', '.join(src['ignored_columns'])})"
    intensity = src.get("intensity") or {}
    if intensity.get("scale"):
        lines.append(f"grey levels: {intensity['scale']}")
    if intensity.get("rgb_as_grey"):
        lines.append(f"note: {intensity['rgb_as_grey']} RGB tiles with equal channels read as "
                     f"grey")
    return lines


def _lot_table(folder: Path, labels: Path, property_column: str, units: str,
               attributes: list[str] | None) -> tuple[LotTable, list[str]]:
    """The labels as a checked :class:`LotTable` (one folder per lot, one row per folder) and the
    CSV columns left out of it."""
    ignored: list[str] = []
    ids, names, values, prop = read_labels(labels, property_column, attributes, ignored)
    table = LotTable(ids, names, values, prop, property_name=property_column,
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
    return table, ignored


def ingest(folder: Path, labels: Path, out: Path, property_column: str = "property",
           units: str = "", tile_size: int | None = None,
           attributes: list[str] | None = None) -> TileStore:
    """Write the tile store ``out`` from ``folder``'s lot folders and the ``labels`` CSV;
    ``attributes``: the attribute columns (``None``: every column but ``lot`` and the property).
    The columns ignored, the grey-level rule and the grey-RGB tiles are kept in the store's
    provenance (``source``; :func:`summary` puts them in words)."""
    out = check_path_text(out, "--out")
    folder, labels = Path(folder), Path(labels)
    refuse_output_in_input(out, {"tile folder": folder, "labels file": labels}, "--out")
    prepare_store(out, "mxplain_tile_store", "tile store", resume=False, delete=False)
    if not folder.is_dir():
        raise UserError(f"tile folder {str(folder)!r} is a file, not a folder" if folder.exists()
                        else f"tile folder {str(folder)!r} does not exist")
    table, ignored = _lot_table(folder, labels, property_column, units, attributes)
    files = {}
    for lot in table.lot_ids:
        fs = lot_files(folder, lot)
        if not fs:
            raise UserError(f"lot {lot!r}: no PNG or TIFF tiles in {str(folder / lot)!r}")
        files[lot] = fs
    intensity = survey([f for fs in files.values() for f in fs])
    if tile_size is None:
        tile_size = read_raw(files[table.lot_ids[0]][0]).values.shape[0]
    n_files = sum(len(fs) for fs in files.values())
    check_disk(n_files * tile_size ** 2, out, f"the tile store ({n_files} tiles of {tile_size} px)",
               "; choose another --out")
    source = {"dataset": "ingest", "folder": str(folder), "labels": str(labels),
              "property_column": property_column, "attributes": list(table.attributes),
              "attributes_chosen": attributes is not None, "ignored_columns": ignored,
              "intensity": intensity.record()}
    _write(out, table, files, tile_size, intensity, source)
    return TileStore.open(out)


def _write(out: Path, table: LotTable, files: dict, tile_size: int, intensity: Intensity,
           source: dict) -> None:
    """Into a temporary store, renamed over ``out`` once every lot is written."""
    tmp = out.with_name(f".{out.name}.ingesting")
    prepare_store(tmp, "mxplain_tile_store", "unfinished ingest", resume=False)
    try:
        counts = [len(files[lot]) for lot in table.lot_ids]
        TileStore.create(tmp, table, counts, tile_size, attrs={"source": source})
        for i, lot in enumerate(table.lot_ids):
            tiles = np.empty((len(files[lot]), tile_size, tile_size), np.uint8)
            for j, f in enumerate(files[lot]):
                t = read_tile(f, intensity)
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
