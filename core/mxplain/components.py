"""The run's components, built from the config (parameters stored and checked, nothing learned),
and what the dataset knows, passed to the explainers' context: the one place the pipeline, a Dask
worker (:mod:`mxplain.distributed`) and ``mxplain report`` (:mod:`mxplain.redraw`) build them."""

from __future__ import annotations

from mxplain import plugins
from mxplain.interfaces import ExplainContext
from mxplain.run_inputs import _check_input_file
from mxplain.store import TileStore


def build_components(cfg: dict, skip=()) -> dict:
    """Every component the config names, constructed (parameters stored and checked, nothing
    learned): ``{"dataset": …, "predictor": …, "editor": …, "explain": {name: …}}``; a model
    loaded from a checkpoint is None here (its file is checked); explainers in ``skip`` are
    left out."""
    out: dict = {"explain": {}}
    for kind, table in (("dataset", "data"), ("predictor", "predictor"), ("editor", "editor")):
        if table not in cfg:
            continue
        params = {k: v for k, v in cfg[table].items() if k not in ("name", "checkpoint")}
        cls = plugins.get(kind, cfg[table]["name"])
        if "checkpoint" in cfg[table]:
            _check_input_file(cfg[table]["checkpoint"], f"[{table}] checkpoint")
            out[kind] = None
        else:
            out[kind] = cls(**params)
    out["explain"] = build_explainers(cfg.get("explain", {}), skip)
    return out


def build_explainers(tables: dict, skip=()) -> dict:
    """The explainers of the config's ``[explain.*]`` tables, constructed (those in ``skip`` left
    out): the one place both the pipeline and a Dask worker (:mod:`mxplain.distributed`) build
    them."""
    return {ename: plugins.get("explainer", ename)(**params) for ename, params in tables.items()
            if ename not in skip}


def dataset_knowledge(ctx: ExplainContext, dataset, store: TileStore) -> None:
    """What the dataset (and its tile store) knows, into the explainers' context: attribute and
    property names, true effects, simulator, measurement, segmentation and its structures."""
    ctx.attributes = store.attributes
    ctx.property_name, ctx.property_units = store.property_name, store.property_units
    ctx.true_sensitivity = dataset.true_sensitivity() or store.true_sensitivity()
    ctx.simulator = dataset.simulator()
    provides = type(dataset).provides()
    ctx.measure = dataset.measure if "measure" in provides else None
    ctx.segment = dataset.segment if "segment" in provides else None
    ctx.structures = dict(type(dataset).structures) if ctx.segment is not None else {}
