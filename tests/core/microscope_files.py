"""Microscope tile folders and labels CSVs for the ingest tests (tests/core/test_images.py,
tests/core/test_ingest.py): two lots ``L1``, ``L2`` of 32 x 32 ramps, written as TIFF or PNG."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from mxplain.cli import main

HEADER = "lot,grain_size,density,roughness,operator,hardness"
ROWS = ["L1,0.2,0.3,0.9,ann,310", "L2,0.8,0.1,0.4,bob,345"]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code, err, *needles):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def labels(tmp_path, header=HEADER, rows=ROWS) -> Path:
    path = tmp_path / "lots.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def tiles(tmp_path, write, n=2) -> Path:
    """``FOLDER/L1, L2`` with ``n`` tiles each, written by ``write(path_stem, lot, j)``."""
    root = tmp_path / "tiles"
    for i, lot in enumerate(("L1", "L2")):
        (root / lot).mkdir(parents=True)
        for j in range(n):
            write(root / lot / f"t{j}", i, j)
    return root


def ramp(top: int, i: int, j: int) -> np.ndarray:
    """A 32 x 32 ramp from 0 to ``top`` (the first tile of L1 reaches it), as uint16."""
    v = np.linspace(0, top, 32 * 32).reshape(32, 32) * (1 - 0.1 * (i + j))
    return np.rint(v).astype(np.uint16)


def png_with_sbit(path: Path, arr: np.ndarray, bits: int) -> None:
    """A 16-bit grey PNG with an sBIT chunk declaring ``bits`` significant bits."""
    Image.fromarray(arr).save(path)
    data = path.read_bytes()
    chunk = b"sBIT" + bytes([bits])
    sbit = struct.pack(">I", 1) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    end_ihdr = 8 + 8 + 13 + 4
    path.write_bytes(data[:end_ihdr] + sbit + data[end_ihdr:])


def ingest(tmp_path, capsys, root, csv, *extra):
    out = tmp_path / "s.zarr"
    code, stdout, err = run_cli(["data", "ingest", root, "--labels", csv, "--out", out,
                                 "--property-column", "hardness", "--units", "HV",
                                 "--attributes", "grain_size,density,roughness", *extra], capsys)
    return code, stdout, err, out


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}




def grey_tiles(tmp_path) -> Path:
    return tiles(tmp_path, lambda p, i, j: Image.fromarray(
        ramp(250, i, j).astype(np.uint8)).save(p.with_suffix(".png")))
