"""Saving matplotlib figures: the one shared tail (literal text, tight layout, parent folder, PNG,
close).

Text in mxplain's figures is literal: lot ids, attribute names, units and folder names come from
users, and a ``$`` in them would start matplotlib's mathtext (``$x$`` set as math, an unbalanced
one a traceback at save time). :func:`literal_text` escapes every ``$`` of a figure's text (an
already escaped ``\\$`` stays) and replaces what is not valid UTF-8 (a folder name's stray byte) just
before it is saved; :func:`save_figure` calls it, and so must any figure saved another way.
Numeric tick labels that matplotlib formats itself (e.g. ``10^2`` on a log axis) keep their math.
"""

from __future__ import annotations

import re
from pathlib import Path

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
