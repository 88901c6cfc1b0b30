"""Saving matplotlib figures: the one shared tail (literal text, tight layout, parent folder, PNG,
close).

Text in mxplain's figures is literal: lot ids, attribute names, units and folder names come from
users, and a ``$`` in them would start matplotlib's mathtext (``$x$`` set as math, an unbalanced
one a traceback at save time). :func:`literal_text` escapes every ``$`` of a figure's text (an
already escaped ``\\$`` stays) and replaces what is not valid UTF-8 (a folder name's stray byte) just
before it is saved; :func:`save_figure` calls it, and so must any figure saved another way.
Numeric tick labels that matplotlib formats itself (e.g. ``10^2`` on a log axis) keep their math.

Honest axes (:func:`honest_axis`): a panel of the property against an edit spans at least the
property's range across lots (:func:`property_spread`), draws the no-effect level and never
stretches its axis to a far measured value.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def literal(text) -> str:
    """``text`` as matplotlib shows it literally: ``$`` escaped, invalid UTF-8 replaced."""
    s = str(text)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (os.fsdecode of a non-UTF-8 name)
        s = s.encode("utf-8", "surrogateescape" if _escapable(s) else "replace").decode(
            "utf-8", "replace")
    return _UNESCAPED_DOLLAR.sub(r"\\$", s)


def _escapable(s: str) -> bool:
    try:
        s.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def literal_text(fig) -> None:
    """Make every text of ``fig`` literal: titles, labels, legends, annotations, and tick labels
    from formatters other than matplotlib's numeric ones (strings given as tick labels,
    categories)."""
    from matplotlib import ticker
    from matplotlib.text import Text

    numeric = (ticker.ScalarFormatter, ticker.LogFormatter, ticker.EngFormatter,
               ticker.PercentFormatter, ticker.NullFormatter, _literal_class())
    for t in fig.findobj(Text):
        text = t.get_text()
        if text and literal(text) != text:
            t.set_text(literal(text))
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for get, put in ((axis.get_major_formatter, axis.set_major_formatter),
                             (axis.get_minor_formatter, axis.set_minor_formatter)):
                fmt = get()
                if not isinstance(fmt, numeric):
                    put(_literal_class()(fmt))


_LITERAL_CLASS = []


def _literal_class():
    """The tick formatter class whose labels are made literal (built once, matplotlib imported
    only when a figure is saved)."""
    if _LITERAL_CLASS:
        return _LITERAL_CLASS[0]
    from matplotlib import ticker

    class LiteralFormatter(ticker.Formatter):
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, x, pos=None):
            return literal(self.inner(x, pos))

        def format_ticks(self, values):
            return [literal(s) for s in self.inner.format_ticks(values)]

        def set_locs(self, locs):
            self.inner.set_locs(locs)

        def get_offset(self):
            return literal(self.inner.get_offset())

        def set_axis(self, axis):
            super().set_axis(axis)
            self.inner.set_axis(axis)

        def format_data(self, value):
            return self.inner.format_data(value)

        def format_data_short(self, value):
            return self.inner.format_data_short(value)

    _LITERAL_CLASS.append(LiteralFormatter)
    return LiteralFormatter


def save_figure(fig, path, dpi: int = 110, **savefig_kwargs) -> Path:
    """Literal text, tight_layout, create the parent folder, save as PNG, close the figure;
    returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    literal_text(fig)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **savefig_kwargs)
    plt.close(fig)
    return path


# ---- honest axes (issue 19 item 3) ---------------------------------------------------------
def property_spread(cube, mask: np.ndarray) -> float:
    """The property's spread across lots: the range of the measured property, else of the lots'
    mean predictions (NaN where neither is known)."""
    for name in ("measured_property", "prediction"):
        if name not in cube:
            continue
        v = np.asarray(cube[name].values, np.float64)
        if v.ndim == 2:
            v = np.where(mask, v, np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                v = np.nanmean(v, 1)
        v = v[np.isfinite(v)]
        if v.size > 1 and np.ptp(v) > 0:
            return float(np.ptp(v))
    return float("nan")


def honest_axis(ax, lo: float, hi: float, spread: float, measured: float = float("nan"),
                zero: float = float("nan"), units: str = "", note: bool = True) -> None:
    """y limits at least as wide as the property's ``spread`` across lots (a change of 0.7 HV does
    not look steep where the lots span 60 HV), a dashed no-effect line at ``zero``, the measured
    value drawn where it lies on the axis and written where not (it never stretches the axis),
    and the axis span relative to the spread noted in the corner."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return
    span = max(hi - lo, 1e-9) * 1.15
    want = max(span, spread) if np.isfinite(spread) and spread > 0 else span
    mid = (lo + hi) / 2
    ax.set_ylim(mid - want / 2, mid + want / 2)
    u = f" {units}" if units else ""
    if np.isfinite(zero):
        ax.axhline(zero, ls="--", color="0.55", lw=0.8, label="no effect")
    if np.isfinite(measured):
        if abs(measured - mid) <= want / 2:
            ax.axhline(measured, ls=":", color="k", label="measured")
        else:
            up = measured > mid
            ax.text(0.99, 0.98 if up else 0.02, f"measured {measured:.4g}{u} {'above' if up else 'below'}"
                    f" the axis", transform=ax.transAxes, ha="right", va="top" if up else "bottom",
                    fontsize=6, color="0.3")
    if note and np.isfinite(spread) and spread > 0:
        ax.text(0.01, 0.98, f"axis {want:.3g}{u} = {100 * want / spread:.0f} % of the lots' range",
                transform=ax.transAxes, ha="left", va="top", fontsize=6, color="0.4")


def finite_range(data) -> tuple[float, float]:
    d = np.asarray(data, np.float64)
    d = d[np.isfinite(d)]
    return (float(d.min()), float(d.max())) if d.size else (float("nan"), float("nan"))
