"""The run's components, built from the config (parameters stored and checked, nothing learned),
and what the dataset knows, passed to the explainers' context: the one place the pipeline, a Dask
worker (:mod:`mxplain.distributed`) and ``mxplain report`` (:mod:`mxplain.redraw`) build them;
and what both the single-process loop and a Dask worker run on them: a lot's cube values
(:func:`explain_lot_values`), the explainers' summaries, the config hash and the stage seeds."""

from __future__ import annotations

import copy
import hashlib
import json
import time

import numpy as np
import torch

from mxplain import plugins
from mxplain.cube import BASE_VARIABLES, EDITOR_VARIABLES
from mxplain.errors import UserError
from mxplain.interfaces import ExplainContext, Lot
from mxplain.run_inputs import _check_input_file
from mxplain.store import TileStore, to_uint8
from mxplain.training import seed_everything


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


def checkpoint_params(table: dict) -> dict | None:
    """The parameters a resolved ``[predictor]`` / ``[editor]`` table sets next to its
    ``checkpoint`` (the class's ``inference_params`` only: :mod:`mxplain.config` refuses others),
    for :meth:`~mxplain.interfaces.TrainableModel.load`; None without a checkpoint."""
    if "checkpoint" not in table:
        return None
    return {k: v for k, v in table.items() if k not in ("name", "checkpoint")}


def build_explainers(tables: dict, skip=()) -> dict:
    """The explainers of the config's ``[explain.*]`` tables, constructed (those in ``skip`` left
    out) and ordered so that each runs after the explainers whose variables it reads
    (:func:`order_explainers`): the one place both the pipeline and a Dask worker
    (:mod:`mxplain.distributed`) build them, so both run them in the same order."""
    return order_explainers({ename: plugins.get("explainer", ename)(**params)
                             for ename, params in tables.items() if ename not in skip})


#: the variables the pipeline writes before any explainer runs (readable by every explainer)
PIPELINE_VARIABLES = frozenset(BASE_VARIABLES) | frozenset(EDITOR_VARIABLES)


def _writers(explainers: dict) -> dict[str, str]:
    """``{variable: explainer}`` for what each explainer declares for a bare context."""
    bare = ExplainContext()
    return {v: ename for ename, exp in explainers.items() for v in exp.variables(bare)}


def order_explainers(explainers: dict) -> dict:
    """``explainers`` (``{name: explainer}``, in the config's order) reordered so that the producer
    of every variable an explainer declares in ``reads`` or ``reads_optional``
    (:class:`~mxplain.interfaces.Explainer`) runs before it, the config's order kept otherwise.
    A read that neither an explainer of the run nor the pipeline writes, or reads in a cycle, is a
    :class:`UserError` (when the config is resolved: nothing is written or trained yet)."""
    if not any(exp.reads or exp.reads_optional for exp in explainers.values()):
        return explainers
    writers = _writers(explainers)
    after: dict[str, set[str]] = {}
    for ename, exp in explainers.items():
        for v in exp.reads:
            if v not in writers and v not in PIPELINE_VARIABLES:
                raise UserError(f"[explain.{ename}] reads the cube variable {v!r}, which no "
                                f"explainer of the run writes (the run has "
                                f"{', '.join(explainers)}); add the explainer that writes it")
        after[ename] = {writers[v] for v in (*exp.reads, *exp.reads_optional)
                        if v in writers and writers[v] != ename}
    ordered: list[str] = []
    while len(ordered) < len(explainers):
        ready = next((e for e in explainers if e not in ordered and after[e] <= set(ordered)),
                     None)
        if ready is None:
            left = [e for e in explainers if e not in ordered]
            raise UserError(f"explainers {', '.join(left)} read each other's variables (a "
                            f"cycle): none of them can run first")
        ordered.append(ready)
    return {e: explainers[e] for e in ordered}


def check_reads(explainers: dict, variables: dict) -> None:
    """Every variable an explainer ``reads`` is in the run's cube (``variables``: the pipeline's
    and every explainer's, for the run's context), once the models are known: a producer may
    declare a variable only for some runs (one with an editor)."""
    for ename, exp in explainers.items():
        for v in exp.reads:
            if v not in variables:
                raise UserError(f"[explain.{ename}] reads the cube variable {v!r}, which no "
                                f"explainer of this run writes")


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


def config_hash(cfg: dict) -> str:
    stable = {k: v for k, v in cfg.items() if k not in ("run", "trust")}  # trust: recomputed
    stable["run"] = {k: v for k, v in cfg["run"].items()
                     if k not in ("device", "report", "scheduler", "workers", "compile")}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_seed(seed: int, stage: str | int) -> int:
    """A seed for one stage (or lot) derived from the run's seed."""
    digest = hashlib.sha256(f"{int(seed)}:{stage}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


_stage_seed = stage_seed  # the name mxplain.ddp and older callers use


def base_values(lot: Lot, ctx: ExplainContext) -> dict[str, np.ndarray]:
    """The pipeline's own variables of a lot (``tile_mask``, ``prediction``, ``example_tile`` and,
    with an editor, ``reconstruction_prediction``), written before any explainer runs."""
    size = lot.tiles.shape[-2:]
    out = {"tile_mask": np.ones(len(lot.tiles), bool),
           "prediction": ctx.predictor.predict(lot.tiles, batch_size=ctx.batch_size),
           "example_tile": to_uint8(lot.tiles[:1])[0] if len(lot.tiles) else
           np.zeros(tuple(size), np.uint8)}
    if ctx.editor is not None:
        rec = []
        attrs = torch.as_tensor(lot.attributes, dtype=torch.float32)
        with torch.no_grad():
            for i in range(0, len(lot.tiles), ctx.batch_size):
                t = lot.tiles[i : i + ctx.batch_size].to(ctx.device)
                a = attrs.to(ctx.device).expand(len(t), -1)
                rec.append(ctx.predictor.predict(ctx.editor.edit(t, a), batch_size=ctx.batch_size))
        out["reconstruction_prediction"] = np.concatenate(rec)
    return out


def _check_finite(name: str, lot_id: str, arr: np.ndarray) -> None:
    arr = np.asarray(arr)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise RuntimeError(f"{name} for lot {lot_id!r} holds NaN or Inf values")


def explain_lot_values(i: int, store: TileStore, ctx: ExplainContext, explainers: dict,
                       variables: dict, n_tiles: int, per_explainer: dict,
                       lot: Lot | None = None) -> dict:
    """Lot ``i``'s cube values (base variables and every explainer's), checked finite; what the
    single-process loop and a Dask worker (:mod:`mxplain.distributed`) both run. ``lot``: the
    lot already read (``store.lot(i)``, prefetched), else it is read here."""
    # explainers seed their own generators per lot; the global ones are reseeded per lot too, so
    # a lot's values never depend on which lots ran before it (resume, parallel runs)
    seed_everything(stage_seed(ctx.seed, f"lot:{i}"))
    if lot is None:
        lot = store.lot(i)
    lot.tiles = lot.tiles[:n_tiles]
    values = base_values(lot, ctx)
    written_by = dict.fromkeys(values, "pipeline")
    spent: dict[str, float] = {}
    for ename, exp in explainers.items():
        te = time.perf_counter()
        part = exp.explain_lot(lot, reader_context(ctx, exp, values, written_by, explainers,
                                                   spent))
        spent[ename] = time.perf_counter() - te
        per_explainer[ename] += spent[ename]
        for vname, arr in part.items():
            if vname not in variables:
                raise RuntimeError(f"explainer {ename!r} returned undeclared {vname!r}")
            _check_finite(vname, lot.lot_id, arr)
        values.update(part)
        written_by.update(dict.fromkeys(part, ename))
    return values


def reader_context(ctx: ExplainContext, exp, values: dict, written_by: dict,
                   explainers: dict, spent: dict) -> ExplainContext:
    """``ctx`` itself for an explainer that reads nothing; else a shallow copy holding what the
    lot has so far of the variables it declares (``lot_results``), who wrote each one and the
    seconds those explainers took on the lot."""
    names = (*exp.reads, *exp.reads_optional)
    if not names:
        return ctx
    out = copy.copy(ctx)
    out.lot_results = {v: values[v] for v in names if v in values}
    out.lot_producers = {v: (written_by[v], {} if written_by[v] == "pipeline"
                             else explainers[written_by[v]].get_params())
                         for v in out.lot_results}
    out.lot_seconds = {e: spent[e] for e, _ in out.lot_producers.values() if e in spent}
    return out


def summarize_all(explainers: dict, cube, ctx: ExplainContext, timings: dict | None = None
                  ) -> dict:
    """Every explainer's :meth:`~mxplain.interfaces.Explainer.summarize` of the cube (its metrics;
    its figures go to ``ctx.figures_dir``): what ends a run, and what ``mxplain report``
    redraws from the run folder alone (:func:`mxplain.report.redraw_figures`)."""
    out = {}
    for ename, exp in explainers.items():
        te = time.perf_counter()
        out[ename] = exp.summarize(cube, ctx)
        if timings is not None:
            timings[f"summarize_{ename}"] = time.perf_counter() - te
    return out
