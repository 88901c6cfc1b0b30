"""Issue 19 item 6: ingest for real microscopes. Bit depth read from the files (12-bit data in
16-bit TIFF/PNG scaled by its declared or observed range, the rule printed and kept in the store's
provenance), grey RGB accepted (colour refused in one line), ``--attributes a,b,c`` choosing the
label columns (the others ignored and listed). The user's files are never changed."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from mxplain.cli import main
from mxplain.store import TileStore

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


def test_12_bit_data_in_16_bit_tiffs_is_scaled_by_its_observed_range(tmp_path, capsys):
    root = tiles(tmp_path, lambda p, i, j: tifffile.imwrite(p.with_suffix(".tif"),
                                                            ramp(4080, i, j)))
    csv = labels(tmp_path)
    before = digest(tmp_path)
    code, stdout, err, out = ingest(tmp_path, capsys, root, csv)
    assert code == 0, err
    assert digest(tmp_path / "tiles") == {k.removeprefix("tiles/"): v for k, v in before.items()
                                          if k.startswith("tiles/")}
    assert (tmp_path / "lots.csv").read_bytes() == csv.read_bytes()
    store = TileStore.open(out)
    t = store.tiles("L1")[0]
    expected = np.rint(ramp(4080, 0, 0).astype(float) * 255 / 4095).astype(np.uint8)
    assert np.array_equal(t, expected) and t.max() == 254  # not 0..15 of 255 (x // 257)
    rule = store.attrs["source"]["intensity"]
    assert rule["rule"] == "observed" and rule["data_bits"] == 12 and rule["full_scale"] == 4095
    assert rule["container_bits"] == 16 and rule["max_value"] == 4080
    assert "grey levels: 16-bit files holding 12-bit data (observed: the largest value is 4080" \
           in stdout and "round(x * 255 / 4095)" in stdout
    assert err == ""


def test_a_declared_range_wins_over_the_observed_one(tmp_path, capsys):
    def write(p, i, j):  # 0..1000 would look 10-bit; the files say 12
        tifffile.imwrite(p.with_suffix(".tif"), ramp(1000, i, j),
                         extratags=[(281, "H", 1, 4095, True)])

    code, stdout, err, out = ingest(tmp_path, capsys, tiles(tmp_path, write), labels(tmp_path))
    assert code == 0, err
    rule = TileStore.open(out).attrs["source"]["intensity"]
    assert (rule["rule"], rule["full_scale"], rule["max_value"]) == ("declared", 4095, 1000)
    assert TileStore.open(out).tiles("L1")[0].max() == round(1000 * 255 / 4095)
    assert "12-bit data (declared in the files)" in stdout


def test_png_sbit_declares_the_bit_depth(tmp_path, capsys):
    root = tiles(tmp_path, lambda p, i, j: png_with_sbit(p.with_suffix(".png"),
                                                         ramp(3000, i, j), 12))
    code, _, err, out = ingest(tmp_path, capsys, root, labels(tmp_path))
    assert code == 0, err
    rule = TileStore.open(out).attrs["source"]["intensity"]
    assert (rule["rule"], rule["full_scale"]) == ("declared", 4095)


def test_full_16_bit_data_stays_16_bit(tmp_path, capsys):
    root = tiles(tmp_path, lambda p, i, j: tifffile.imwrite(p.with_suffix(".tif"),
                                                            ramp(60000, i, j)))
    code, _, err, out = ingest(tmp_path, capsys, root, labels(tmp_path))
    assert code == 0, err
    rule = TileStore.open(out).attrs["source"]["intensity"]
    assert (rule["rule"], rule["data_bits"], rule["full_scale"]) == ("observed", 16, 65535)


def test_values_above_the_declared_range_are_one_line(tmp_path, capsys):
    def write(p, i, j):
        tifffile.imwrite(p.with_suffix(".tif"), ramp(5000, i, j),
                         extratags=[(281, "H", 1, 4095, True)])

    code, _, err, out = ingest(tmp_path, capsys, tiles(tmp_path, write), labels(tmp_path))
    one_error(code, err, "t0.tif", "values up to 5000", "above the 4095 its file declares")
    assert not out.exists()


def test_mixed_bit_depths_are_one_line(tmp_path, capsys):
    def write(p, i, j):
        if i == 0:
            Image.fromarray(ramp(200, i, j).astype(np.uint8)).save(p.with_suffix(".png"))
        else:
            tifffile.imwrite(p.with_suffix(".tif"), ramp(4000, i, j))

    code, _, err, out = ingest(tmp_path, capsys, tiles(tmp_path, write), labels(tmp_path))
    one_error(code, err, "different bit depths", "is 8-bit", "is 16-bit")
    assert not out.exists()


def test_grey_rgb_tiles_are_read_as_grey(tmp_path, capsys):
    grey = {}

    def write(p, i, j):
        g = (ramp(250, i, j)).astype(np.uint8)
        grey[(i, j)] = g
        mode = ("RGB", "RGBA")[j]
        planes = [g, g, g] + ([np.full_like(g, 255)] if mode == "RGBA" else [])
        Image.fromarray(np.stack(planes, -1), mode).save(p.with_suffix(".png"))

    code, stdout, err, out = ingest(tmp_path, capsys, tiles(tmp_path, write), labels(tmp_path))
    assert code == 0, err
    store = TileStore.open(out)
    assert np.array_equal(store.tiles("L2")[1], grey[(1, 1)])
    rule = store.attrs["source"]["intensity"]
    assert rule["rgb_as_grey"] == 4 and rule["tiles"] == 4 and rule["rule"] == "8-bit"
    assert "note: 4 RGB tiles with equal channels read as grey" in stdout


@pytest.mark.parametrize("kind,needles", [
    ("colour", ["t0.png", "RGB with channels that differ", "not grayscale"]),
    ("transparent", ["t0.png", "transparent pixels"]),
])
def test_colour_and_transparent_tiles_are_one_line(tmp_path, capsys, kind, needles):
    def write(p, i, j):
        g = ramp(250, i, j).astype(np.uint8)
        if kind == "colour" and (i, j) == (0, 0):
            arr, mode = np.stack([g, g // 2, g], -1), "RGB"
        elif kind == "transparent" and (i, j) == (0, 0):
            arr, mode = np.stack([g, g, g, np.zeros_like(g)], -1), "RGBA"
        else:
            arr, mode = g, "L"
        Image.fromarray(arr, mode).save(p.with_suffix(".png"))

    code, _, err, out = ingest(tmp_path, capsys, tiles(tmp_path, write), labels(tmp_path))
    one_error(code, err, *needles)
    assert not out.exists()


def grey_tiles(tmp_path) -> Path:
    return tiles(tmp_path, lambda p, i, j: Image.fromarray(
        ramp(250, i, j).astype(np.uint8)).save(p.with_suffix(".png")))


def test_attributes_choose_the_label_columns(tmp_path, capsys):
    code, stdout, err, out = ingest(tmp_path, capsys, grey_tiles(tmp_path), labels(tmp_path))
    assert code == 0, err
    store = TileStore.open(out)
    assert store.attributes == ("grain_size", "density", "roughness")
    assert store.property_name == "hardness" and store.property_units == "HV"
    src = store.attrs["source"]
    assert src["ignored_columns"] == ["operator"] and src["attributes_chosen"] is True
    assert "attributes: grain_size, density, roughness (columns ignored, not in --attributes: " \
           "operator)" in stdout


def test_without_attributes_a_text_column_says_how_to_choose(tmp_path, capsys):
    root, csv = grey_tiles(tmp_path), labels(tmp_path)
    out = tmp_path / "s.zarr"
    code, _, err = run_cli(["data", "ingest", root, "--labels", csv, "--out", out,
                            "--property-column", "hardness"], capsys)
    one_error(code, err, "'operator' = 'ann' is not a number",
              "choose the attribute columns with --attributes a,b,c")
    assert not out.exists()


@pytest.mark.parametrize("names,needles", [
    ("grain_size,densty", ["has no 'densty' column", "did you mean 'density'?"]),
    ("grain_size,hardness", ["'hardness' is the property column"]),
    ("grain_size,,density", ["name the attribute columns"]),
    ("density,density", ["'density' is named 2 times"]),
])
def test_bad_attribute_lists_are_one_line(tmp_path, capsys, names, needles):
    root, csv = grey_tiles(tmp_path), labels(tmp_path)
    out = tmp_path / "s.zarr"
    code, _, err = run_cli(["data", "ingest", root, "--labels", csv, "--out", out,
                            "--property-column", "hardness", "--attributes", names], capsys)
    one_error(code, err, "--attributes", *needles)
    assert not out.exists()
