"""mxplain.review_page: the self-contained review page: its data block cannot end its script, the
tiles are PNG data URIs, and only a page this module wrote is recognised as one."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
from PIL import Image

from mxplain.review_page import MARKER, is_review_page, png_data_uri, render, script_json


def test_tiles_are_grey_pngs_that_decode_to_the_same_pixels():
    tile = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    uri = png_data_uri(tile)
    assert uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.mode == "L" and im.size == (8, 8)
        np.testing.assert_array_equal(np.asarray(im), tile)


def test_script_json_cannot_close_or_comment_its_block():
    evil = {"lot": "</script><!-- & é", "n": [1, 2]}
    text = script_json(evil)
    assert not re.search(r"[<>&]", text) and "\\u00e9" in text and text.endswith(',"n":[1,2]}')
    assert json.loads(text) == evil


def test_the_page_carries_the_data_the_marker_and_no_outside_resource(tmp_path):
    data = {"format": "mxplain-review-answers", "run_id": "r1", "set_id": "s'1",
            "pairs": [{"id": "p1", "lot": "<L0>", "attribute": "size", "definition": "d",
                       "left": png_data_uri(np.zeros((4, 4), np.uint8)),
                       "right": png_data_uri(np.full((4, 4), 255, np.uint8))}]}
    page = render(data, "run <a>")
    assert page.startswith("<!doctype html>\n" + MARKER)
    assert "<title>mxplain review: run &lt;a&gt;</title>" in page
    assert "content='s&#x27;1'" in page and "<L0>" not in page
    block = re.search(r'id="mxplain-review-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(block) == data
    assert "default-src 'none'" in page and not re.search(r"(src|href)=['\"]https?:", page)
    (tmp_path / "page.html").write_text(page)
    (tmp_path / "other.html").write_text("<!doctype html>\n<p>" + MARKER)
    assert is_review_page(tmp_path / "page.html")
    assert not is_review_page(tmp_path / "other.html") and not is_review_page(tmp_path / "none")
