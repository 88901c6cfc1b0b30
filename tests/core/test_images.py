"""mxplain.images: microscope tiles' bit depth (12-bit data in 16-bit TIFF/PNG scaled by its
declared or observed range, the rule printed and kept in the store's provenance) and grey RGB
(accepted; colour and transparency refused in one line), read directly and through
``mxplain data ingest`` (issue 19 item 6)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from microscope_files import digest, ingest, labels, one_error, png_with_sbit, ramp, tiles
from PIL import Image

from mxplain.errors import UserError
from mxplain.images import Intensity, RawTile, read_raw, survey
from mxplain.store import TileStore


def test_read_raw_gives_values_container_and_declared_range(tmp_path):
    grey = ramp(250, 0, 0).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "a.png")
    raw = read_raw(tmp_path / "a.png")
    assert (raw.container, raw.declared, raw.rgb_as_grey) == (8, None, False)
    assert raw.values.dtype == np.uint8 and np.array_equal(raw.values, grey)

    png_with_sbit(tmp_path / "b.png", ramp(3000, 0, 0), 12)
    raw = read_raw(tmp_path / "b.png")
    assert (raw.container, raw.declared) == (16, 4095)
    assert raw.values.dtype == np.uint16 and int(raw.values.max()) == 3000

    tifffile.imwrite(tmp_path / "c.tif", ramp(1000, 0, 0), extratags=[(281, "H", 1, 4095, True)])
    assert read_raw(tmp_path / "c.tif").declared == 4095
    tifffile.imwrite(tmp_path / "d.tif", ramp(1000, 0, 0))
    assert read_raw(tmp_path / "d.tif").declared is None


def test_read_raw_maps_one_bit_to_0_and_255_and_grey_alpha_to_grey(tmp_path):
    bits = np.zeros((8, 8), bool)
    bits[2:5, 3] = True
    Image.fromarray(bits).save(tmp_path / "bw.png")
    raw = read_raw(tmp_path / "bw.png")
    assert raw.container == 1 and raw.values.dtype == np.uint8
    assert np.array_equal(raw.values, bits.astype(np.uint8) * 255)

    g = ramp(200, 0, 0).astype(np.uint8)
    Image.fromarray(np.stack([g, np.full_like(g, 255)], -1), "LA").save(tmp_path / "la.png")
    raw = read_raw(tmp_path / "la.png")
    assert np.array_equal(raw.values, g) and raw.rgb_as_grey is False


@pytest.mark.parametrize("write,needle", [
    (lambda p: p.write_bytes(b"not an image"), "is not a readable image"),
    (lambda p: tifffile.imwrite(p, np.zeros((5, 8, 8), np.uint8)), "has shape (5, 8, 8)"),
    (lambda p: tifffile.imwrite(p, np.zeros((8, 8), np.float32)), "has dtype float32"),
])
def test_read_raw_refuses_what_is_not_a_grey_tile(tmp_path, write, needle):
    path = tmp_path / "t.tif"
    write(path)
    with pytest.raises(UserError, match="^tile ") as info:
        read_raw(path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_intensity_scales_by_its_full_scale_and_says_so():
    rule = Intensity(16, 1023, "observed", 1000, {"tiles": 2, "rgb_as_grey": 0})
    raw = RawTile(np.array([[0, 512, 1000, 1023]], np.uint16), 16)
    assert rule.bits == 10
    assert rule.to_uint8(raw, None).tolist() == [[0, 128, 249, 255]]
    assert rule.text() == ("16-bit files holding 10-bit data (observed: the largest value is 1000, "
                           "no range declared in the files), scaled to 0-255 by "
                           "round(x * 255 / 1023)")
    rec = rule.record()
    assert (rec["container_bits"], rec["data_bits"], rec["full_scale"], rec["tiles"]) == \
        (16, 10, 1023, 2)
    eight = Intensity(8, 255, "8-bit", 255)
    assert eight.text() == "8-bit tiles, stored as read" and eight.record()["data_bits"] == 8
    assert eight.to_uint8(RawTile(np.array([[7, 200]], np.uint8), 8), None).tolist() == [[7, 200]]


def test_survey_chooses_one_rule_for_all_tiles(tmp_path):
    for n, top in enumerate((700, 1000)):
        tifffile.imwrite(tmp_path / f"o{n}.tif", ramp(top, 0, 0))
    rule = survey(sorted(tmp_path.glob("o*.tif")))
    assert (rule.rule, rule.full_scale, rule.max_value) == ("observed", 1023, 1000)
    assert rule.files == {"tiles": 2, "rgb_as_grey": 0}

    tifffile.imwrite(tmp_path / "d0.tif", ramp(900, 0, 0), extratags=[(281, "H", 1, 4095, True)])
    tifffile.imwrite(tmp_path / "d1.tif", ramp(900, 0, 0), extratags=[(281, "H", 1, 16383, True)])
    with pytest.raises(UserError, match="tiles declare different ranges"):
        survey([tmp_path / "d0.tif", tmp_path / "d1.tif"])
    rule = survey([tmp_path / "d0.tif"])
    assert (rule.rule, rule.full_scale, rule.bits) == ("declared", 4095, 12)


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


