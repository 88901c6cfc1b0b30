"""mxplain.figures: user text reaches matplotlib literally (``$`` escaped, invalid UTF-8 replaced)
in every figure mxplain saves, and honest axes (a property panel spans at least the lots' range,
draws the no-effect level and never stretches to a far measured value)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from mxplain.figures import (  # noqa: E402
    finite_range,
    honest_axis,
    literal,
    literal_text,
    property_spread,
    save_figure,
)


@pytest.mark.parametrize("text,shown", [
    ("lot $A$", "lot \\$A\\$"), ("already \\$ escaped", "already \\$ escaped"),
    ("no dollars", "no dollars"), (12.5, "12.5"),
    ("run-\udcff", "run-\ufffd"),  # os.fsdecode of a stray byte: not valid UTF-8
])
def test_literal(text, shown):
    assert literal(text) == shown


def test_literal_text_escapes_every_user_text_but_keeps_numeric_ticks():
    fig, (a, b) = plt.subplots(1, 2)
    a.set_title("lot $\\frac$")
    a.bar(["$a$", "b"], [1.0, 2.0])
    b.plot([1, 10], [1, 100], label="$x$")
    b.legend()
    b.set_yscale("log")
    literal_text(fig)
    assert a.get_title() == "lot \\$\\frac\\$"
    assert b.get_legend().get_texts()[0].get_text() == "\\$x\\$"
    fig.canvas.draw()
    assert [t.get_text() for t in a.get_xticklabels()] == ["\\$a\\$", "b"]
    assert any("$" in t.get_text() and "\\$" not in t.get_text() for t in b.get_yticklabels())
    plt.close(fig)


def test_save_figure_makes_the_folder_and_closes_the_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.set_xlabel("peak stress ($^$)")  # unbalanced mathtext: a ValueError if not made literal
    path = save_figure(fig, tmp_path / "new" / "f.png", dpi=40)
    assert path == tmp_path / "new" / "f.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert not plt.fignum_exists(fig.number)


def test_property_spread_is_the_measured_range_else_the_predictions():
    cube = xr.Dataset({"measured_property": ("lot", [1000.0, 1060.0, np.nan])})
    assert property_spread(cube, None) == 60.0
    pred = np.array([[1.0, 3.0, 99.0], [5.0, 7.0, 99.0]])
    mask = np.array([[True, True, False], [True, True, False]])
    cube = xr.Dataset({"measured_property": ("lot", [5.0, 5.0]),
                       "prediction": (("lot", "tile"), pred)})
    assert property_spread(cube, mask) == 4.0  # lot means 2 and 6, padding left out
    assert np.isnan(property_spread(xr.Dataset(), None))


def test_honest_axis_spans_the_lots_range_and_places_the_measured_value():
    fig, ax = plt.subplots()
    honest_axis(ax, 100.0, 101.0, spread=60.0, measured=500.0, zero=100.5, units="HV")
    assert ax.get_ylim() == pytest.approx((70.5, 130.5))
    texts = [t.get_text() for t in ax.texts]
    assert "measured 500 HV above the axis" in texts
    assert "axis 60 HV = 100 % of the lots' range" in texts
    assert [line.get_label() for line in ax.lines] == ["no effect"]

    fig, ax = plt.subplots()
    honest_axis(ax, 0.0, 10.0, spread=2.0, measured=4.0, note=False)
    assert ax.get_ylim() == pytest.approx((-0.75, 10.75))  # its own span, 15 % margin
    assert [line.get_label() for line in ax.lines] == ["measured"] and not ax.texts

    fig, ax = plt.subplots()
    before = ax.get_ylim()
    honest_axis(ax, np.nan, 1.0, spread=1.0)
    assert ax.get_ylim() == before
    plt.close("all")


def test_finite_range():
    assert finite_range([3.0, np.nan, -1.0, np.inf]) == (-1.0, 3.0)
    assert all(np.isnan(finite_range([np.nan])))
