"""mxplain.ingest: ``mxplain data ingest`` from a tile folder and a labels CSV; ``--attributes``
chooses the label columns (the others are ignored and listed), the labels are read and checked
before any tile, and the user's files are never changed (issue 19 item 6)."""

from __future__ import annotations

import numpy as np
import pytest
from microscope_files import (
    HEADER,
    ROWS,
    digest,
    grey_tiles,
    ingest,
    labels,
    one_error,
    ramp,
    run_cli,
)
from PIL import Image

from mxplain.errors import UserError
from mxplain.ingest import lot_files, read_labels, read_tile, summary
from mxplain.store import TileStore


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


def test_read_labels_reads_ids_attributes_and_property(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes("\ufefflot, size ,porosity,note,hv\nA,0.25,0.5,x,300\n\n , , , ,\nB,1,0,y,"
                     "312.5\n".encode())
    ignored: list[str] = []
    ids, names, values, prop = read_labels(path, "hv", ["size", "porosity"], ignored)
    assert ids == ["A", "B"] and names == ("size", "porosity") and ignored == ["note"]
    assert values.tolist() == [[0.25, 0.5], [1.0, 0.0]] and prop.tolist() == [300.0, 312.5]
    with pytest.raises(UserError, match="'note' = 'x' is not a number; if it is not an attribute"):
        read_labels(path, "hv")


@pytest.mark.parametrize("text,needle", [
    ("lot,a,a,hv\nA,1,1,1\n", "column 'a' appears 2 times in the header"),
    ("lot,,hv\nA,1,1\n", "column 2 of the header has no name"),
    ("name,a,hv\nA,1,1\n", "has no 'lot' column"),
    ("lot,a,p\nA,1,1\n", "has no 'hv' column"),
    ("lot,hv\nA,1\n", "has no attribute columns"),
    ("lot,a,hv\n", "has no rows"),
    ("lot,a,hv\nA,1,1,9\n", "line 2: 4 fields, the header has 3"),
    ("lot,a,hv\n,1,1\n", "line 2: empty lot id"),
    ("lot,a,hv\nA,,1\n", "line 2: lot 'A' has no 'a' value"),
    ("lot,a,hv\nA,1,inf\n", "line 2: lot 'A' 'hv' is inf"),
])
def test_read_labels_refuses_a_bad_csv_in_one_sentence(tmp_path, text, needle):
    path = tmp_path / "l.csv"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        read_labels(path, "hv")
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_read_labels_refuses_a_folder_and_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="is a directory, not a file"):
        read_labels(tmp_path, "hv")
    with pytest.raises(UserError, match="does not exist"):
        read_labels(tmp_path / "none.csv", "hv")


def test_lot_files_keeps_regular_image_files_sorted_and_notes_the_rest(tmp_path, capsys):
    lot = tmp_path / "L1"
    lot.mkdir()
    for name in ("b.TIF", "a.png", "c.tiff", "notes.txt"):
        (lot / name).write_bytes(b"")
    (lot / "d.png").mkdir()
    assert [p.name for p in lot_files(tmp_path, "L1")] == ["a.png", "b.TIF", "c.tiff"]
    assert capsys.readouterr().err.strip() == f"note: skipped {str(lot / 'd.png')!r} (a folder)"


def test_read_tile_alone_uses_its_own_rule(tmp_path):
    png = tmp_path / "t.png"
    Image.fromarray(ramp(1000, 0, 0)).save(png)
    t = read_tile(png)
    assert t.dtype == np.uint8 and t.max() == round(1000 * 255 / 1023) and t.min() == 0


def test_summary_is_empty_for_a_store_not_made_by_ingest(small_store):
    assert summary(small_store) == []


def test_a_lot_folder_without_a_label_row_is_one_line(tmp_path, capsys):
    root = grey_tiles(tmp_path)
    (root / "L3").mkdir()
    csv = labels(tmp_path)
    code, _, err, out = ingest(tmp_path, capsys, root, csv)
    one_error(code, err, "lot folder 'L3'", "has no row in")
    assert not out.exists()
    csv.write_text("\n".join([HEADER, *ROWS, "L4,0.1,0.1,0.1,cy,300"]) + "\n")
    (root / "L3").rmdir()
    code, _, err, out = ingest(tmp_path, capsys, root, csv)
    one_error(code, err, "lot 'L4'", "has no folder in")


def test_ingest_leaves_the_users_files_as_they_were(tmp_path, capsys):
    root, csv = grey_tiles(tmp_path), labels(tmp_path)
    before = digest(tmp_path)
    code, stdout, err, out = ingest(tmp_path, capsys, root, csv)
    assert code == 0, err
    assert {k: v for k, v in digest(tmp_path).items() if not k.startswith("s.zarr")} == before
    store = TileStore.open(out)
    assert store.n_lots == 2 and store.counts.tolist() == [2, 2] and store.tile_size == 32
    lines = summary(store)
    assert lines == ["attributes: grain_size, density, roughness (columns ignored, not in "
                     "--attributes: operator)", "grey levels: 8-bit tiles, stored as read"]
    assert all(line in stdout.splitlines() for line in lines)
