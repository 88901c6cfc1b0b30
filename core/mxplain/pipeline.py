"""``mxplain run``: data -> predictor -> editor -> explainers -> results cube -> metrics -> report.

Every stage goes through whatever plugins the config names. With ``resume`` a stage that finished
is not redone: the tile store and the cube continue lot by lot, trained models are reloaded.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import mxplain
from mxplain import config as config_mod
from mxplain import failpoints, plugins, preflight, resources, zarrio
from mxplain.components import (
    _stage_seed,
    build_components,
    build_explainers,
    check_reads,
    config_hash,
    dataset_knowledge,
    explain_lot_values,
    summarize_all,
)
from mxplain.cube import BASE_VARIABLES, EDITOR_VARIABLES, CubeWriter, cube_layout, open_results
from mxplain.device import resolve_device
from mxplain.errors import UserError
from mxplain.interfaces import ExplainContext, RunContext
from mxplain.model_stages import evaluate_editor, prepare_models, probe_gradients, trust_gates
from mxplain.outputs import check_path_text
from mxplain.run_inputs import check_paths
from mxplain.runfolder import RunFolder, write_atomic
from mxplain.store import TileStore
from mxplain.training import remove_training_states, seed_everything


def _load_or_fit(kind: str, cfg: dict, store: TileStore, ctx: RunContext, folder: RunFolder,
                 metrics: dict, timings: dict, model=None):
    params = {k: v for k, v in cfg.items() if k not in ("name", "checkpoint")}
    cls = plugins.get(kind, cfg["name"])
    path = folder.path / "models" / f"{kind}.pt"
    t0 = time.perf_counter()
    if "checkpoint" in cfg:  # a path or "package:<package>/<file>" (mxplain.resources)
        prov = resources.check_trained_on(cfg["checkpoint"], store, kind)
        model = cls.load(resources.resolve_checkpoint(cfg["checkpoint"]), device=ctx.device,
                         params=params)  # beside a checkpoint: its inference_params only
        metrics[kind] = {"checkpoint": cfg["checkpoint"], "provenance": prov}
        _check_model_attributes(model, store, kind)
    elif folder.is_done(kind) and path.exists():
        model = cls.load(path, device=ctx.device)
        metrics[kind] = json.loads((folder.path / "models" / f"{kind}_fit.json").read_text())
    else:
        model = cls(**params) if model is None else model
        model.to(ctx.device)
        # a killed training resumes from its last epoch (mxplain.training); the global generators
        # are reseeded so a stage starts alike whether or not the stages before it were resumed
        train_state = folder.path / "models" / f"{kind}.training.pt"
        seed_everything(_stage_seed(ctx.seed, kind))
        ctx.training_state_path = train_state
        try:
            fit_metrics = model.fit(store, ctx)
        finally:
            ctx.training_state_path = None
        model.save(path)
        write_atomic(folder.path / "models" / f"{kind}_fit.json", json.dumps(fit_metrics))
        folder.mark(kind)
        remove_training_states(train_state)
        metrics[kind] = fit_metrics
    timings[kind] = time.perf_counter() - t0
    return model


def _check_model_attributes(model, store: TileStore, kind: str) -> None:
    if kind != "editor":
        return
    attrs = tuple(model.attributes or ())
    if attrs and attrs != store.attributes:
        raise UserError(f"editor checkpoint edits attributes {list(attrs)}, the tile store has "
                        f"{list(store.attributes)}")


IMPORTED_SECTIONS = ("review",)  # written into metrics.json after a run (mxplain review --import)


def _keep_imported(path: Path, metrics: dict) -> None:
    """A resumed run rewrites ``metrics.json``: the sections other commands imported into it (the
    experts' review of this run's editor, the same config's) are carried over, not dropped."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(old, dict):
        metrics.update({k: old[k] for k in IMPORTED_SECTIONS if k in old})


def run(cfg: dict | str | Path | None = None, out: str | Path = "mxplain-run",
        device: str | None = None, resume: bool = False, overwrite: bool = False,
        progress: bool = True, scheduler: str | None = None, workers: int | None = None) -> Path:
    """Run the whole pipeline; returns the run folder. ``cfg`` is a resolved config, a path, or None
    for the packaged quickstart. ``scheduler`` (a Dask scheduler address) or ``workers`` (a local
    Dask cluster of that many processes) override ``[run]``'s and explain lots on Dask workers
    (:mod:`mxplain.distributed`).

    Everything is validated before anything is written: the config (types, ranges), every
    component's parameters (constructed here), the output against the inputs; only then is the
    run folder opened (and, with ``overwrite``, the previous run's files deleted)."""
    from mxplain.distributed import check_options

    cfg_path = None
    if cfg is None or isinstance(cfg, (str, Path)):
        cfg_path = config_mod.quickstart_path() if cfg is None else Path(cfg)
        cfg = config_mod.load(cfg)
    else:
        cfg = config_mod.resolve(cfg)
    out = check_path_text(out, "--out")
    run_cfg = cfg["run"]
    dev = resolve_device(device or run_cfg["device"])
    if scheduler is None and workers is None:
        scheduler, workers = run_cfg.get("scheduler"), run_cfg.get("workers")
    scheduler, workers = check_options(scheduler, workers)
    preflight.check(cfg, out, device, resume=resume, where=str(cfg_path or "config"),
                    scheduler=scheduler, workers=workers)  # checkpoints, sizes vs the machine
    # explainers the config cannot run: an error unless [run] on_unsupported = "skip"
    skipped = preflight.check_requirements(cfg, str(cfg_path or "config"))
    components = build_components(cfg, skip=skipped)
    components["skipped"] = dict(skipped)
    for ename, why in skipped.items():
        print(f"note: [explain.{ename}] skipped ([run] on_unsupported = \"skip\"): {why}",
              file=sys.stderr)
    check_paths(cfg, cfg_path, out, overwrite)
    folder = RunFolder(out, resume=resume, overwrite=overwrite, config_hash=config_hash(cfg))
    dask_explain = None
    try:
        if scheduler is not None or workers is not None:  # connect first: a bad address fails early
            from mxplain.distributed import DaskExplain

            dask_explain = DaskExplain(scheduler, workers, device or run_cfg["device"])
        _run_stages(cfg, cfg_path, folder, components, dev, device, resume, progress,
                    dask_explain)
        return folder.path
    finally:
        if dask_explain is not None:
            dask_explain.close()
        try:
            folder.record()
        finally:
            folder.release()


def _run_stages(cfg, cfg_path, folder: RunFolder, components: dict, dev, device, resume: bool,
                progress: bool, dask_explain) -> None:
    from tqdm.auto import tqdm

    run_cfg = cfg["run"]
    torch.manual_seed(int(run_cfg["seed"]))
    from mxplain.realism import check_tiles
    from mxplain.trust import resolve_trust

    ctx = ExplainContext(device=dev, out_dir=folder.path, seed=int(run_cfg["seed"]),
                         progress=progress, batch_size=config_mod.fixed_batch_size(run_cfg),
                         editor_eval_tiles=int(run_cfg["editor_eval_tiles"]),
                         editor_realism_tiles=check_tiles(run_cfg["editor_realism_tiles"]),
                         trust=cfg.get("trust") or resolve_trust(None))
    ctx.figures_dir.mkdir(parents=True, exist_ok=True)
    ctx.models_dir.mkdir(parents=True, exist_ok=True)
    config_file = folder.path / "config.toml"
    if cfg_path is None or not (config_file.exists() and config_file.samefile(cfg_path)):
        write_atomic(config_file, config_mod.to_toml(cfg))  # never over the input config itself
    metrics: dict = {}
    timings: dict = {}

    t0 = time.perf_counter()
    dataset = components["dataset"]
    folder.claim("tiles.zarr")
    store = dataset.build(folder.path / "tiles.zarr", ctx, resume=resume)
    timings["data"] = time.perf_counter() - t0
    metrics["data"] = {"tile_store": str(store.path), "lots": store.n_lots,
                       "tiles": store.n_tiles, "tile_size": store.tile_size,
                       "attributes": list(store.attributes),
                       "property": store.property_name, "units": store.property_units}
    dataset_knowledge(ctx, dataset, store)

    if "predictor" in cfg:
        ctx.predictor = _load_or_fit("predictor", cfg["predictor"], store, ctx, folder,
                                     metrics, timings, components["predictor"])
        probe_gradients(cfg, store, ctx, components, "predictor")
        t0 = time.perf_counter()
        from mxplain.evaluate import evaluate_predictor

        metrics["predictor"]["evaluation"] = evaluate_predictor(ctx.predictor, store, ctx)
        timings["predictor_evaluation"] = time.perf_counter() - t0
    if "editor" in cfg:
        ctx.editor = _load_or_fit("editor", cfg["editor"], store, ctx, folder, metrics,
                                  timings, components["editor"])
        probe_gradients(cfg, store, ctx, components, "editor")
        t0 = time.perf_counter()
        metrics["editor"]["evaluation"] = evaluate_editor(ctx.editor, dataset, store, ctx)
        timings["editor_evaluation"] = time.perf_counter() - t0
        if "probe" in metrics["editor"]["evaluation"]:  # part of editor_evaluation
            timings["editor_probe"] = metrics["editor"]["evaluation"]["probe"].get("seconds", 0.0)
    folder.record()

    run_info = {"batch_size": ctx.batch_size}
    if ctx.predictor is not None:
        prepare_models(run_cfg, store, ctx, run_info, timings)
        _explain(cfg, store, ctx, folder, metrics, timings, resume, tqdm, dask_explain,
                 components["explain"])

    if ctx.editor is not None:
        trust_gates(cfg, store, ctx, components, metrics, folder)
    metrics["explain_skipped"] = components.get("skipped", {})
    for kind, why in components.get("gradient_probe", {}).items():
        metrics[kind]["gradient_probe"] = why  # treated as not differentiable in this run
    metrics["timings_seconds"] = timings
    metrics["provenance"] = {**provenance(cfg, dev), **run_info}
    if resume:
        _keep_imported(folder.path / "metrics.json", metrics)
    write_atomic(folder.path / "metrics.json", json.dumps(metrics, indent=1, default=float))
    folder.record()
    if run_cfg["report"]:
        from mxplain.report import write_report

        write_report(folder.path, redraw=False)  # the figures were drawn just now


def _declarations(explainers: dict, store: TileStore, n_tiles: int, ctx: ExplainContext
                  ) -> tuple[dict, dict, dict]:
    """The cube's sizes, coordinates and variables: the pipeline's and every explainer's; the
    explainers' declared reads are checked against them and the coordinates go to
    ``ctx.cube_coords``."""
    sizes, coords = cube_layout(store, n_tiles, ctx)
    variables = dict(BASE_VARIABLES)
    if ctx.editor is not None:
        variables.update(EDITOR_VARIABLES)
    for ename, exp in explainers.items():
        for dim, values in exp.extra_dims().items():
            values = np.asarray(values)
            if dim in sizes and sizes[dim] != len(values):
                raise UserError(f"[explain.{ename}] dimension {dim!r} clashes with another")
            sizes[dim] = len(values)
            coords[dim] = values
        for cname, (dim, values) in exp.extra_coords().items():
            coords[cname] = (dim, np.asarray(values))
        for vname, var in exp.variables(ctx).items():
            if vname in variables:
                raise UserError(f"cube variable {vname!r} of [explain.{ename}] is written by "
                                f"another component")
            variables[vname] = var
    if not any("structure" in v.dims for v in variables.values()):  # nothing segmented
        sizes.pop("structure", None)
        coords.pop("structure", None)
    check_reads(explainers, variables)
    ctx.cube_coords = {k: np.asarray(v[1] if isinstance(v, tuple) else v)
                       for k, v in coords.items()}
    return sizes, coords, variables


def _explain(cfg, store, ctx, folder, metrics, timings, resume, tqdm, dask_explain=None,
             explainers: dict | None = None) -> None:
    if explainers is None:
        explainers = build_explainers(cfg["explain"])
    # what each explainer needs was checked when the config was resolved (mxplain.preflight)
    # and the models' gradients probed once trained (probe_gradients); skipped ones are not here
    job_cfg = {**cfg, "explain": {e: p for e, p in cfg["explain"].items() if e in explainers}}
    n_tiles = int(store.counts.max())
    limit = int(cfg["run"]["explain_tiles"] or 0)
    if limit > 0:
        n_tiles = min(n_tiles, limit)
    sizes, coords, variables = _declarations(explainers, store, n_tiles, ctx)
    tables = {
        "lot_attributes": xr.DataArray(store.lot_attributes, dims=("lot", "attribute")),
        "measured_property": xr.DataArray(store.properties, dims=("lot",)),
        "tile_count": xr.DataArray(np.minimum(store.counts, n_tiles).astype(np.int32),
                                   dims=("lot",)),
    }
    if ctx.true_sensitivity:
        truth = np.array([ctx.true_sensitivity.get(a, np.nan) for a in store.attributes])
        tables["true_sensitivity"] = xr.DataArray(
            np.tile(truth, (store.n_lots, 1)).astype(np.float32), dims=("lot", "attribute"))
    attrs = {"mxplain_config_hash": config_hash(cfg), "property_name": store.property_name,
             "property_units": store.property_units, **provenance(cfg, ctx.device)}
    folder.claim("results.zarr")
    writer = CubeWriter(folder.path / "results.zarr", variables, sizes, coords, tables, attrs,
                        resume=resume, owned=True)
    if writer.repaired:
        metrics["resume_repaired"] = {"results.zarr": writer.repaired}
    done = writer.done()
    t0 = time.perf_counter()
    per_explainer = dict.fromkeys(explainers, 0.0)
    todo = [i for i in range(store.n_lots) if not done[i]]
    if dask_explain is not None:  # lots on Dask workers, each writing its regions of the cube
        with tqdm(total=len(todo), desc="explain (dask)", unit="lot",
                  disable=not ctx.progress) as bar:
            by_worker = dask_explain.explain(job_cfg, folder.path, store, ctx, variables, sizes,
                                             n_tiles, writer.path, todo, per_explainer, bar)
        metrics["explain_dask"] = {"scheduler": dask_explain.address, "lots_by_worker": by_worker}
    else:
        with tqdm(total=store.n_lots, initial=store.n_lots - len(todo), desc="explain",
                  unit="lot", disable=not ctx.progress) as bar:
            explain_overlapped(todo, store, ctx, explainers, variables, n_tiles, per_explainer,
                               writer, bar)
    writer.finish()
    timings["explain"] = time.perf_counter() - t0
    timings["explain_by_explainer"] = per_explainer
    cube = open_results(writer.path)
    metrics["explain"] = summarize_all(explainers, cube, ctx, timings)
    if ctx.editor is not None:
        metrics["editor"].setdefault("evaluation", {})["reconstruction_prediction_shift"] = \
            reconstruction_shift(cube)


def reconstruction_shift(cube) -> dict:
    """The predictor's shift on the editor's reconstructions over every real tile: mean, mean
    absolute, mean absolute percent."""
    pred = cube.prediction.where(cube.tile_mask)
    rec = cube.reconstruction_prediction.where(cube.tile_mask)
    shift = (rec - pred)
    return {"mean": float(shift.mean()), "mean_abs": float(abs(shift).mean()),
            "mean_abs_percent": float((abs(shift) / abs(pred)).mean() * 100)}


def explain_overlapped(todo: list[int], store: TileStore, ctx: ExplainContext, explainers: dict,
                       variables: dict, n_tiles: int, per_explainer: dict, writer: CubeWriter,
                       bar=None) -> None:
    """Explain and write lots ``todo`` in order, with the I/O off the compute thread: lot i+1's
    tiles are read in a background thread while lot i is explained, and lot i's cube regions are
    written in another while lot i+1 is explained (one write in flight at most). The values and
    the order of the writes are those of the sequential loop: a lot's write (its data, then its
    done-flag) finishes before the next lot's starts, and before the ``explain:lot`` point of the
    next lot, so a run killed there has every earlier lot flagged and the current one not. An
    exception in either thread is raised here, the write's first (it happened first)."""
    if not todo:
        return
    with zarrio.quiet_for_threads(), \
            ThreadPoolExecutor(1, thread_name_prefix="mxplain-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="mxplain-write") as write_pool:
        read = reader.submit(store.lot, todo[0])
        write = None
        try:
            for pos, i in enumerate(todo):
                lot = read.result()
                read = reader.submit(store.lot, todo[pos + 1]) if pos + 1 < len(todo) else None
                values = explain_lot_values(i, store, ctx, explainers, variables, n_tiles,
                                            per_explainer, lot=lot)
                if write is not None:
                    write.result()
                    write = None
                    if bar is not None:
                        bar.update(1)
                failpoints.hit("explain:lot")
                write = write_pool.submit(writer.write_lot, i, values)
            write.result()
            write = None
            if bar is not None:
                bar.update(1)
        except BaseException:
            if read is not None:
                read.cancel()
            if write is not None and write.exception() is not None:  # waits for the write
                raise write.exception()  # noqa: B904 (the explain error is its __context__)
            raise


def provenance(cfg: dict, device) -> dict:
    used = {}
    reg = plugins.registry()
    for kind, table in (("dataset", "data"), ("predictor", "predictor"), ("editor", "editor")):
        if table in cfg:
            e = reg[kind][cfg[table]["name"]]
            used[f"{kind}:{e.name}"] = f"{e.distribution} {e.version}"
    for ename in cfg.get("explain", {}):
        e = reg["explainer"][ename]
        used[f"explainer:{e.name}"] = f"{e.distribution} {e.version}"
    return {
        "mxplain_version": mxplain.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "plugins": used,
        "config": json.loads(json.dumps(cfg, default=str)),
        "seed": int(cfg["run"]["seed"]),
        "device": str(device),
    }
