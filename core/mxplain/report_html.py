"""The report's HTML pieces: escaped text, numbers to 3 significant digits, flat two-column
tables and embedded figures (:mod:`mxplain.report` and its sections)."""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from mxplain.errors import UserError


def _e(x) -> str:
    return html.escape(_utf8(str(x)), quote=True)


def _utf8(s: str) -> str:
    """``s`` with what cannot be written as UTF-8 (a folder name's non-UTF-8 byte, decoded by
    Python as a lone surrogate) replaced, so the page can always be written."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        try:
            data = s.encode("utf-8", "surrogateescape")  # the original bytes back
        except UnicodeEncodeError:
            data = s.encode("utf-8", "replace")
        return data.decode("utf-8", "replace")


def _dict(x) -> dict:
    return x if isinstance(x, dict) else {}


def read_metrics(path: Path) -> dict:
    """``metrics.json`` as a dict; unreadable, not UTF-8, not JSON or not an object: a
    :class:`UserError` naming the file."""
    try:
        metrics = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{str(path)!r} is not UTF-8 text (a damaged metrics file)") from None
    except json.JSONDecodeError:
        raise UserError(f"{str(path)!r} is not valid JSON") from None
    if not isinstance(metrics, dict):
        raise UserError(f"{str(path)!r} holds a JSON {type(metrics).__name__}, not the object of "
                        f"a run's metrics")
    return metrics


def sig(x, digits: int = 3, signed: bool = False) -> str:
    """``x`` rounded to ``digits`` significant digits, written plainly (``2350``, ``-69.3``,
    ``0.0123``; scientific only beyond 1e7 or below 1e-4); ``–`` for none, NaN or not a number."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "–"
    sign = "+" if signed and x > 0 else ""
    if x == 0:
        return "0"
    x = float(f"{x:.{digits}g}")  # rounded first: 99.96 is 100, of magnitude 2
    mag = math.floor(math.log10(abs(x)))
    if mag >= 7 or mag < -4:
        return sign + f"{x:.{digits - 1}e}"
    decimals = digits - 1 - mag
    text = f"{round(x, decimals):.{max(decimals, 0)}f}"
    return sign + ("0" if float(text) == 0 else text)


def _value(v) -> str:
    """A metrics value for the page: numbers to 3 significant digits, lists of numbers shortened,
    everything else as text (escaped by the caller)."""
    if isinstance(v, bool) or v is None:
        return str(v).lower() if isinstance(v, bool) else "–"
    if isinstance(v, (int, float)):
        return str(v) if isinstance(v, int) else sig(v)
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) and v:
            shown = ", ".join(_value(x) for x in v[:6])
            return f"[{shown}{', …' if len(v) > 6 else ''}]" + (f" ({len(v)} values)"
                                                                if len(v) > 6 else "")
        return ", ".join(_value(x) for x in v[:12]) + (" …" if len(v) > 12 else "")
    return str(v)


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """A nested dict as ``(dotted key, leaf)`` rows: no table inside a table; empty dicts and
    lists are left out (no empty rows)."""
    rows: list[tuple[str, object]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows.extend(_flat(v, key + "."))
        elif v not in ([], (), "") and not (isinstance(v, float) and math.isnan(v)):
            rows.append((key, v))
    return rows


def _table(d: dict, depth: int = 0) -> str:
    """``d`` as one flat two-column table (nested keys dotted, numbers rounded; "" where empty)."""
    rows = _flat(d)
    if not rows:
        return ""
    return ("<div class='wide'><table class='numbers'>" + "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(_value(v))}</td></tr>" for k, v in rows) +
        "</table></div>")


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(path.name)}</figcaption></figure>")


def _num(x) -> str:
    return _e(f"{x:.3f}") if isinstance(x, (int, float)) and not isinstance(x, bool) else "?"


