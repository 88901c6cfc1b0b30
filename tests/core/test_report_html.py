"""mxplain.report_html: the report's HTML pieces: numbers to 3 significant digits, escaped text,
flat two-column tables, embedded figures, and metrics.json read or refused in one line."""

from __future__ import annotations

import base64
import json

import pytest

from mxplain.errors import UserError
from mxplain.report_html import _e, _figure, _flat, _table, _value, read_metrics, sig


@pytest.mark.parametrize("x, text", [
    (2345.6, "2350"), (-69.34, "-69.3"), (0.012345, "0.0123"), (99.96, "100"), (0, "0"),
    (0.0004999, "0.000500"), (1.5e-5, "1.50e-05"), (1e8, "1.00e+08"), (123456, "123000"),
    (True, "–"), (None, "–"), (float("nan"), "–"), (float("inf"), "–"), ("7", "–"),
])
def test_three_significant_digits_written_plainly(x, text):
    assert sig(x) == text


def test_signs_and_other_digits():
    assert (sig(5, signed=True), sig(-5, signed=True), sig(0, signed=True)) == ("+5.00", "-5.00", "0")
    assert sig(3.14159, digits=5) == "3.1416" and sig(-0.0001, digits=1) == "-0.0001"


def test_values_lists_and_flat_tables():
    assert _value([1, 2.34567, 3, 4, 5, 6, 7]) == "[1, 2.35, 3, 4, 5, 6, …] (7 values)"
    assert _value([0.5, 2]) == "[0.500, 2]"
    assert (_value(True), _value(None), _value(7), _value(2.34567)) == ("true", "–", "7", "2.35")
    assert _value(list("abcdefghijklmn")).endswith("l …")
    nested = {"a": {"b": 1, "c": {}}, "d": [], "e": float("nan"), "f": "<x>", "g": ""}
    assert _flat(nested) == [("a.b", 1), ("f", "<x>")]  # nothing empty, no table in a table
    html = _table(nested)
    assert html.count("<tr>") == 2 and "<th>a.b</th><td>1</td>" in html
    assert "<td>&lt;x&gt;</td>" in html and _table({"x": {}}) == ""


def test_escaping_survives_a_non_utf8_name():
    assert _e("<a href='x'>") == "&lt;a href=&#x27;x&#x27;&gt;"
    lone = b"run-\xff".decode("utf-8", "surrogateescape")
    out = _e(lone)
    out.encode("utf-8")  # writable as UTF-8
    assert out == "run-\ufffd"


def test_figures_are_embedded(tmp_path):
    png = tmp_path / "a<b.png"
    png.write_bytes(b"\x89PNG fake")
    html = _figure(png)
    assert base64.b64encode(b"\x89PNG fake").decode() in html
    assert 'alt="a&lt;b"' in html and "<figcaption>a&lt;b.png</figcaption>" in html


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe", "is not UTF-8 text"),
    (b"{broken", "is not valid JSON"),
    (b"[1, 2]", "holds a JSON list, not the object of a run's metrics"),
])
def test_metrics_that_are_no_object_are_one_error(tmp_path, content, words):
    path = tmp_path / "metrics.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=words):
        read_metrics(path)
    path.write_text(json.dumps({"data": {"lots": 2}}))
    assert read_metrics(path) == {"data": {"lots": 2}}
