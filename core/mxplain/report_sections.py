"""Report sections from the components themselves.

Every explainer's part of the report's evidence comes from its
:meth:`~mxplain.interfaces.Explainer.report_section`: given what the run folder holds about it
(:class:`ReportInput`: its block of ``metrics.json``'s ``explain``, the results cube, the run's
figures), it returns a :class:`ReportSection` (a title, paragraphs, tables as rows, figure paths)
and the report renders it; nothing is run again. The default (:func:`default_section`) gives a
section titled with the explainer's name, its summary's top-level numbers as a table (rounded to 3
significant digits when shown) and the figures whose names start with ``<name>_``. Sections that
share a title are shown as one (GradCAM and the pixel-vs-attribute comparison)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ReportSection:
    """One section of the report's evidence. ``tables``: each a list of rows, a row a tuple whose
    first cell is its label (shown as a header cell) and the rest values (numbers rounded to 3
    significant digits on the page); ``figures``: PNG files of the run folder, embedded."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[list[tuple]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


@dataclass
class ReportInput:
    """What the run folder holds about one explainer, for its report section."""

    #: the explainer's name in the run's config (its ``[explain.<name>]`` table)
    name: str
    #: its block of ``metrics.json``'s ``explain`` (what its ``summarize`` returned)
    metrics: dict
    #: the run folder
    run_dir: Path
    #: every figure of the run folder (``figures/*.png``), sorted by name
    figures: list[Path] = field(default_factory=list)
    #: the names of the run's ``data``, ``predictor`` and ``editor`` ("" where none)
    components: dict[str, str] = field(default_factory=dict)
    #: the whole of ``metrics.json``
    run_metrics: dict = field(default_factory=dict)
    #: the run's results cube (an ``xarray.Dataset`` opened lazily from ``results.zarr``),
    #: ``None`` where the run has none
    cube: Any = None

    def figures_named(self, *prefixes: str) -> list[Path]:
        """The run's figures whose file names start with one of ``prefixes``."""
        return [f for f in self.figures if f.name.startswith(prefixes)]

    @property
    def via_editor(self) -> str:
        """`` through the <editor> editor`` where the run has an editor, else ""."""
        editor = self.components.get("editor")
        return f" through the {editor} editor" if editor else ""


def scalar_rows(block: Any) -> list[tuple[str, Any]]:
    """A summary's headline numbers as ``(key, value)`` rows: its top-level numbers, strings and
    booleans (nested ones are in the report's raw metrics), without ``figures``, empty strings or
    NaN."""
    if not isinstance(block, dict):
        return []
    return [(k, v) for k, v in block.items() if isinstance(v, (int, float, str, bool))
            and k != "figures" and v != "" and not (isinstance(v, float) and math.isnan(v))]


def default_section(run: ReportInput, title: str | None = None,
                    prefixes: tuple[str, ...] | None = None) -> ReportSection | None:
    """``title`` (default: the explainer's name), the summary's headline numbers as one table and
    the figures named ``prefixes`` (default: ``<name>_``); ``None`` where there is neither a number
    nor a figure."""
    rows = scalar_rows(run.metrics)
    figures = run.figures_named(*(prefixes or (f"{run.name}_",)))
    if not rows and not figures:
        return None
    return ReportSection(title=title or run.name, tables=[rows] if rows else [], figures=figures)
