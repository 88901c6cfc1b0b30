"""The conformance suite's small real runs and its constructor rule (:mod:`mxplain.conformance`).

Every registered explainer runs, with every predictor and editor whose declared capabilities
(:meth:`~mxplain.interfaces.Predictor.capabilities`, :meth:`~mxplain.interfaces.Editor.capabilities`)
meet its :meth:`~mxplain.interfaces.Explainer.requirements`, over the tiny tile store's lots (2
tiles each) into a real results cube (:class:`~mxplain.cube.CubeWriter`, the pipeline's per-lot
values); its ``summarize`` of that cube and its ``report_section`` of what the run folder then
holds are checked. scikit-learn's rule: after ``cls(**test_params)`` the instance's public
attributes are exactly its constructor's parameters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from mxplain import plugins
from mxplain.interfaces import ExplainContext

RUN_TILES = 2  # tiles per lot in the small runs


class ConformanceError(AssertionError):
    """A component that does not do what its interface promises (the message says what)."""


def expect(condition, message: str) -> None:
    if not condition:
        raise ConformanceError(message)


def make(kind: str, name: str, **extra):
    """A registered component built with its ``test_params`` (and ``extra``)."""
    cls = plugins.get(kind, name)
    return cls(**{**cls.test_params, **extra})


def _offered(kind: str, name: str) -> frozenset[str]:
    cls = plugins.get(kind, name)
    return frozenset(cls.capabilities({**cls.param_defaults(), **cls.test_params}))


def _needs_and_uses(name: str) -> tuple[frozenset[str], frozenset[str]]:
    cls = plugins.get("explainer", name)
    params = {**cls.param_defaults(), **cls.test_params}
    return frozenset(cls.requirements(params)), frozenset(cls.uses(params))


def offered_by(pred: str, editor: str | None) -> frozenset[str]:
    """What a predictor and an editor (or none) offer an explainer (names of
    :data:`~mxplain.interfaces.NEEDS`; the tiny store names its attributes)."""
    offered = {"predictor", "attributes"} | _offered("predictor", pred)
    if editor is not None:
        offered |= {"editor"} | _offered("editor", editor)
    return frozenset(offered)


def model_pairs(name: str) -> list[tuple[str, str | None]]:
    """``(predictor, editor)`` pairs that fit explainer ``name`` (with its ``test_params``) by
    what they declare: every editor where it needs or uses one (``None`` otherwise)."""
    needs, uses = _needs_and_uses(name)
    editors = plugins.available("editor") if "editor" in needs | uses else [None]
    return [(pred, editor) for pred in plugins.available("predictor") for editor in editors
            if needs <= offered_by(pred, editor)]


def fallbacks(name: str, pred: str, editor: str | None) -> frozenset[str]:
    """What explainer ``name`` uses where offered but the pair does not offer (its slower
    fallback runs instead, e.g. the backward search's SPSA without gradients)."""
    return _needs_and_uses(name)[1] - offered_by(pred, editor)


def check_constructor(kind: str, name: str) -> None:
    """``param_defaults`` reads the constructor (no ``*args``/``**kwargs``, a default for every
    parameter: a :class:`~mxplain.errors.PluginError` otherwise) and ``cls(**test_params)`` sets
    exactly those parameters as public attributes (learned state comes later, by ``fit``)."""
    cls = plugins.get(kind, name)
    params = set(cls.param_defaults())
    obj = cls(**cls.test_params)
    public = {a for a in vars(obj) if not a.startswith("_")}
    extra, missing = sorted(public - params), sorted(params - public)
    expect(not extra and not missing, "the constructor " + "; ".join(
        ([f"sets {', '.join(extra)}, which are not parameters"] if extra else []) +
        ([f"does not set the parameters {', '.join(missing)}"] if missing else [])))


def small_run(name: str, pred: str, editor: str | None, tiny, out: Path):
    """Explainer ``name`` over every lot of the tiny store with the fitted ``pred`` and
    ``editor``: its results cube (``out/results.zarr``), context and the explainer."""
    from mxplain.components import dataset_knowledge, explain_lot_values
    from mxplain.cube import BASE_VARIABLES, EDITOR_VARIABLES, CubeWriter, cube_layout, open_results

    store, exp = tiny.store, make("explainer", name)
    ctx = ExplainContext(out_dir=out, progress=False, batch_size=16,
                         predictor=tiny.fitted("predictor", pred),
                         editor=tiny.fitted("editor", editor) if editor else None)
    dataset_knowledge(ctx, tiny.dataset, store)
    sizes, coords = cube_layout(store, RUN_TILES, ctx)
    sizes.update({d: len(v) for d, v in exp.extra_dims().items()})
    coords.update({d: np.asarray(v) for d, v in exp.extra_dims().items()})
    coords.update({c: (d, np.asarray(v)) for c, (d, v) in exp.extra_coords().items()})
    variables = {**BASE_VARIABLES, **(EDITOR_VARIABLES if editor else {}), **exp.variables(ctx)}
    if not any("structure" in v.dims for v in variables.values()):
        sizes.pop("structure", None)
        coords.pop("structure", None)
    tables = {"lot_attributes": xr.DataArray(store.lot_attributes, dims=("lot", "attribute")),
              "measured_property": xr.DataArray(store.properties, dims=("lot",)),
              "tile_count": xr.DataArray(np.minimum(store.counts, RUN_TILES).astype(np.int32),
                                         dims=("lot",))}
    if ctx.true_sensitivity:
        truth = [ctx.true_sensitivity.get(a, np.nan) for a in store.attributes]
        tables["true_sensitivity"] = xr.DataArray(
            np.tile(truth, (store.n_lots, 1)).astype(np.float32), dims=("lot", "attribute"))
    writer = CubeWriter(out / "results.zarr", variables, sizes, coords, tables,
                        {"property_name": store.property_name,
                         "property_units": store.property_units}, resume=False)
    timings = {name: 0.0}
    for i in range(store.n_lots):
        writer.write_lot(i, explain_lot_values(i, store, ctx, {name: exp}, variables, RUN_TILES,
                                               timings))
    writer.finish()
    return open_results(writer.path), ctx, exp


def check_summary_and_section(name: str, pred: str, editor: str | None, tiny, out: Path) -> None:
    """The small run's ``summarize`` returns a dict ``metrics.json`` can hold and writes its
    figures under ``figures/``; ``report_section`` of the run folder returns ``None`` or a
    :class:`~mxplain.report_sections.ReportSection` (a section wherever the summary has headline
    numbers) whose figures are the run's and which renders."""
    from mxplain.report_evidence import render_section
    from mxplain.report_sections import ReportInput, ReportSection, scalar_rows

    cube, ctx, exp = small_run(name, pred, editor, tiny, out)
    ctx.figures_dir.mkdir(exist_ok=True)
    summary = exp.summarize(cube, ctx)
    expect(isinstance(summary, dict), f"summarize() returns {type(summary).__name__}, not a dict")
    try:
        block = json.loads(json.dumps(summary, default=float))  # as metrics.json holds it
    except (TypeError, ValueError) as exc:
        raise ConformanceError(f"summarize() returns what metrics.json cannot hold: {exc}") from None
    figures = sorted(ctx.figures_dir.glob("*.png"))
    comp = {"data": "synthetic", "predictor": pred, "editor": editor or ""}
    run = ReportInput(name=name, metrics=block, run_dir=out, figures=figures, components=comp,
                      run_metrics={"explain": {name: block}}, cube=cube)
    section = exp.report_section(run)
    if section is None:
        expect(not scalar_rows(block), "report_section() is None but the summary has headline "
               "numbers")
        return
    expect(isinstance(section, ReportSection), f"report_section() returns "
           f"{type(section).__name__}, not a ReportSection")
    expect(isinstance(section.title, str) and section.title.strip(), "the section has no title")
    expect(all(Path(f) in figures for f in section.figures), f"the section shows figures the run "
           f"did not draw: {[str(f) for f in section.figures if Path(f) not in figures]}")
    expect(all(isinstance(r, tuple) and r for t in section.tables for r in t),
           "a table row is not a non-empty tuple")
    html = "".join(render_section(section))
    expect(html.count("<img") == len(section.figures), "the section's figures do not render")
