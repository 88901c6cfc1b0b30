"""The run's models between training and the explain stage, and the trust gates after it: the
gradient probe of a model explainers take gradients of, the editor's evaluation (reconstruction,
fidelity by the dataset's own measurement, realism, the independent attribute probe), ``[run]
batch_size = "auto"`` and ``compile``, and ``metrics["trust"]``. Steps of
:func:`mxplain.pipeline.run`."""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from mxplain import config as config_mod
from mxplain.device import auto_batch_size
from mxplain.errors import UserError
from mxplain.interfaces import NEEDS, ExplainContext
from mxplain.runfolder import RunFolder
from mxplain.store import TileStore


def probe_gradients(cfg: dict, store: TileStore, ctx: ExplainContext, components: dict,
                     kind: str) -> None:
    """Once the predictor (or editor) is trained or loaded, before anything else runs: where an
    explainer still to run needs or uses its gradients, a probe on two tiles
    (:func:`mxplain.gradients.probe`) that a model claiming them returns them. One that does not
    is an error naming it; with ``[run] on_unsupported = "skip"`` the explainers that need them
    are skipped with the reason and the model is treated as not differentiable (``backward``'s
    ``optimizer = "auto"`` then takes SPSA)."""
    from mxplain.gradients import probe

    need = "gradients" if kind == "predictor" else "editor_gradients"
    model = getattr(ctx, kind)
    found = {e: type(exp).requirements(exp.get_params()) for e, exp in
             components["explain"].items() if need in type(exp).uses(exp.get_params())}
    if not found or not model.differentiable:
        return
    first = int(np.flatnonzero(store.counts > 0)[0])
    why = probe(model, store.lot(first).tiles[:2], kind, attributes=store.lot_attributes[first])
    if why is None:
        return
    if cfg["run"]["on_unsupported"] != "skip":
        raise UserError(f"[explain.{next(iter(found))}] cannot run: {why}")
    model.differentiable = False  # this run's instance only: gradient-free paths from here on
    components.setdefault("gradient_probe", {})[kind] = why
    print(f"note: {why}; this run treats it as not differentiable", file=sys.stderr)
    for ename, needs in found.items():
        if need in needs:
            components["explain"].pop(ename)
            components["skipped"][ename] = f"needs {NEEDS[need]}: {why}"
            print(f"note: [explain.{ename}] skipped ([run] on_unsupported = \"skip\"): "
                  f"{components['skipped'][ename]}", file=sys.stderr)


def prepare_models(run_cfg: dict, store: TileStore, ctx: ExplainContext, info: dict,
                    timings: dict) -> None:
    """Before the explain stage: ``[run] batch_size = "auto"`` (a probe of editor decode +
    predictor on CUDA, :func:`mxplain.device.auto_batch_size`) and ``[run] compile``. What was
    chosen goes to ``info`` (``metrics.json``'s provenance)."""
    if run_cfg["batch_size"] == "auto":
        t0 = time.perf_counter()
        ctx.batch_size, probe = auto_batch_size(
            ctx.predictor, ctx.editor, store.tile_size, len(store.attributes), ctx.device,
            cpu_value=config_mod.CPU_AUTO_BATCH)
        timings["batch_size_probe"] = time.perf_counter() - t0
        info["batch_size"] = ctx.batch_size
        info["batch_size_auto"] = probe
    if run_cfg["compile"]:
        compiled = []
        for kind in ("predictor", "editor"):
            model = getattr(ctx, kind)
            if model is None:
                continue
            try:
                compiled += list(model.compile() or [])
            except Exception as exc:  # no compiler, an unsupported module: run eagerly
                warnings.warn(f"[run] compile: the {kind} {model.name!r} runs eagerly "
                              f"({type(exc).__name__}: {exc})", stacklevel=2)
        if compiled:  # compilation happens at the first call: a failure there falls back to eager
            try:
                import torch._dynamo

                torch._dynamo.config.suppress_errors = True
            except Exception:  # pragma: no cover (a torch without dynamo fails in compile())
                pass
        info["compiled"] = compiled


def evaluate_editor(editor, dataset, store: TileStore, ctx: ExplainContext) -> dict:
    """Reconstruction error, the edit grid, realism (a classifier two-sample test, no ground truth
    needed: :mod:`mxplain.realism`), and, where the dataset can measure attributes from images
    (synthetic lots), edit fidelity judged by that independent measurement. Where the dataset has a
    reference editor (its own generator) realism is also run with it: the realism ceiling."""
    from mxplain import editor_eval

    n = int(ctx.editor_eval_tiles)
    out = {"reconstruction": editor_eval.reconstruction_error(editor, store, n_tiles_per_lot=n,
                                                              seed=ctx.seed)}
    provides = type(dataset).provides()
    if "measure" in provides:
        kwargs = {"n_tiles_per_lot": n, "ctx": ctx, "seed": ctx.seed,
                  "measure_attributes": store.attributes}
        out["fidelity"] = editor_eval.edit_fidelity(editor, store, dataset.measure, **kwargs)
        if "edit_fidelity_ceiling" in provides:  # the same protocol, the data's own generator
            out["fidelity_ceiling"] = dataset.edit_fidelity_ceiling(store, dataset.measure,
                                                                    **kwargs)
    n_real = int(ctx.editor_realism_tiles)
    if n_real:
        out["realism"] = editor_eval.realism(editor, store, n_per_class=n_real, seed=ctx.seed,
                                             device=ctx.device)
        reference = dataset.reference_editor(store)
        if reference is not None:
            out["realism_ceiling"] = editor_eval.realism(reference, store, n_per_class=n_real,
                                                         seed=ctx.seed, device=ctx.device)
    _probe_editor(editor, store, ctx, out)
    if ctx.figures_dir is not None:
        editor_eval.edit_grid_figure(editor, store, ctx.figures_dir / "editor_grid.png",
                                     seed=ctx.seed)
        if "fidelity" in out or "realism" in out:
            editor_eval.fidelity_figure(out.get("fidelity"), ctx.figures_dir /
                                        "editor_fidelity.png", out.get("fidelity_ceiling"),
                                        out.get("realism"), out.get("realism_ceiling"))
    return out


def _probe_editor(editor, store: TileStore, ctx: ExplainContext, out: dict) -> None:
    """The independent attribute probe (:mod:`mxplain.probe`): trained on ``[trust] probe_tiles``
    real tiles per lot, leave-lots-out skill, then the judge of the editor's +/-delta edits of the
    editor-evaluation tiles (``out["probe"]``)."""
    from mxplain.probe import fit_probe, probe_edits

    n = int((ctx.trust or {}).get("probe_tiles", 0))
    if n <= 0:
        return
    probe, info = fit_probe(store, n_tiles_per_lot=n, seed=ctx.seed,
                            attributes=tuple(editor.attributes or store.attributes))
    out["probe"] = info if probe is None else probe_edits(
        editor, store, probe, info, n_tiles_per_lot=int(ctx.editor_eval_tiles), seed=ctx.seed,
        ctx=ctx)


def trust_gates(cfg: dict, store: TileStore, ctx: ExplainContext, components: dict, metrics: dict,
           folder: RunFolder) -> None:
    """``metrics["trust"]`` (:func:`mxplain.trust.trust_gates`) and, where the cube was written,
    its trust marks."""
    from mxplain import trust

    gated = [e for e, exp in components["explain"].items()
             if "editor" in type(exp).uses(exp.get_params())]
    checks = ctx.editor.health(metrics.get("editor", {}), store)
    metrics["trust"] = trust.trust_gates(metrics, ctx.trust, store.attributes, gated, checks)
    cube = folder.path / "results.zarr"
    if "explain" in metrics and cube.exists():
        trust.mark_cube(cube, metrics["trust"])
