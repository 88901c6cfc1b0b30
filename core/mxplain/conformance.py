"""The conformance suite: every component of a plugin, built with its ``test_params``, checked for
shapes, dtypes, determinism, save/load and the gradients it claims.

From an installed mxplain, for the components of one plugin (its entry-point name, its
distribution, or a component's name)::

    python -m mxplain.conformance tinycnn
    python -m mxplain.conformance --all

prints one line per component (``ok`` or ``FAIL`` and why) and exits 0 when all pass, 1 when one
fails, 2 when nothing matches. mxplain's own tests (``tests/core/test_conformance.py``) run the same
checks over every registered component. The checks run on a tiny synthetic tile store (4 lots of
6 tiles, 32 px): every component's constructor sets only its parameters (scikit-learn's rule,
:func:`check_constructor`); explainers are given a tiny fitted ``wideresnet`` and ``attgan`` for
one lot, then make a small real run (every lot, 2 tiles each, a results cube, ``summarize``,
``report_section``) with every registered predictor and editor that fits them
(:mod:`mxplain.conformance_run`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mxplain import plugins
from mxplain.conformance_run import (  # noqa: F401 (the suite's names, re-exported)
    ConformanceError,
    check_constructor,
    check_summary_and_section,
    expect,
    fallbacks,
    make,
    model_pairs,
)
from mxplain.cube import cube_layout
from mxplain.errors import UserError
from mxplain.interfaces import ExplainContext, RunContext
from mxplain.store import TileStore


@dataclass
class Tiny:
    """The tiny tile store the checks run on; the fitted predictor and editor explainers get are
    trained on first use."""

    root: Path
    store: TileStore
    ctx: RunContext
    dataset: Any = None
    _models: dict = field(default_factory=dict)

    @classmethod
    def build(cls, root: str | Path) -> Tiny:
        root = Path(root)
        ctx = RunContext(out_dir=root, progress=False, batch_size=16)
        dataset = plugins.create("dataset", "synthetic", n_lots=4, tiles_per_lot=6, tile_size=32,
                                 seed=1)
        store = dataset.build(root / "tiles.zarr", ctx)
        return cls(root, store, ctx, dataset)

    def model(self, kind: str):
        """The tiny fitted ``wideresnet`` or ``attgan``."""
        return self.fitted(kind, {"predictor": "wideresnet", "editor": "attgan"}[kind])

    def fitted(self, kind: str, name: str):
        """The registered predictor or editor ``name`` with its ``test_params``, fitted on the
        tiny store once."""
        if (kind, name) not in self._models:
            m = make(kind, name)
            m.fit(self.store, self.ctx)
            self._models[kind, name] = m
        return self._models[kind, name]


def check_dataset(name: str, tiny: Tiny, tmp: Path) -> None:
    """Two builds: tile stores of ``uint8`` tiles, labels in [0, 1], finite properties, equal."""
    cls = plugins.get("dataset", name)
    extra = {"path": str(tiny.store.path)} if "path" in cls.param_defaults() and \
        "path" not in cls.test_params else {}
    ctx = RunContext(out_dir=tmp, progress=False)
    stores = [make("dataset", name, **extra).build(tmp / f"s{i}.zarr", ctx) for i in range(2)]
    for s in stores:
        expect(isinstance(s, TileStore) and s.n_lots >= 2, "build() returns no TileStore of "
               ">= 2 lots")
        t = s.tiles(0)
        expect(t.dtype == np.uint8 and t.ndim == 3 and t.shape[1:] == (s.tile_size, s.tile_size),
               f"tiles are {t.dtype} {t.shape}, not uint8 (n, {s.tile_size}, {s.tile_size})")
        expect(np.all((s.lot_attributes >= 0) & (s.lot_attributes <= 1)),
               "lot attributes outside [0, 1]")
        expect(np.all(np.isfinite(s.properties)), "non-finite lot properties")
    expect(np.array_equal(stores[0].tiles(1), stores[1].tiles(1)), "build() is not deterministic")
    check_dataset_knowledge(make("dataset", name, **extra), stores[0])


def check_dataset_knowledge(ds, store: TileStore) -> None:
    """What :meth:`~mxplain.interfaces.Dataset.provides` declares returns what the interface
    promises: ``measure`` ``(N, K)`` floats, ``segment`` one ``(N, H, W)`` bool mask per name of
    ``structures`` (and ``structures`` naming the store's attributes or ``None``); what it does not
    declare returns ``None``."""
    provides = type(ds).provides()
    tiles = store.tiles(0)[:3]
    m = ds.measure(tiles)
    if "measure" in provides:
        m = np.asarray(m)
        expect(m.shape == (len(tiles), len(store.attributes)) and m.dtype.kind == "f",
               f"measure() of {len(tiles)} tiles gives {m.dtype} {m.shape}, not float "
               f"({len(tiles)}, {len(store.attributes)})")
    else:
        expect(m is None, "measure() returns a value but the class does not override it")
    masks = ds.segment(tiles)
    if "segment" not in provides:
        expect(masks is None and not type(ds).structures,
               "segment() returns masks or structures are declared, but segment is not overridden")
        return
    structures = type(ds).structures
    expect(bool(structures), "segment() is overridden but structures declares none")
    expect(set(masks) >= set(structures), f"segment() returns {sorted(masks)}, structures "
           f"declares {sorted(structures)}")
    for sname, attr in structures.items():
        mk = np.asarray(masks[sname])
        expect(mk.dtype == bool and mk.shape == tiles.shape, f"segment()[{sname!r}] is {mk.dtype} "
               f"{mk.shape}, not bool {tiles.shape}")
        expect(attr is None or attr in store.attributes, f"structure {sname!r} carries "
               f"{attr!r}, not an attribute of the store {store.attributes}")


def check_predictor(name: str, tiny: Tiny, tmp: Path) -> None:
    """fit, forward ``(N,)`` float32, deterministic, predict == forward, the gradients it claims
    (:func:`mxplain.gradients.probe`: one clear line where none come back), save/load."""
    from mxplain.gradients import probe

    p = make("predictor", name)
    expect(isinstance(p.fit(tiny.store, tiny.ctx), dict), "fit() returns no dict of metrics")
    x = tiny.store.lot(0).tiles[:4]
    with torch.no_grad():
        y1, y2 = p.forward(x), p.forward(x)
    expect(isinstance(y1, torch.Tensor) and y1.shape == (4,) and y1.dtype == torch.float32,
           f"forward() of 4 tiles gives {getattr(y1, 'dtype', type(y1))} "
           f"{tuple(getattr(y1, 'shape', ()))}, not float32 (4,)")
    expect(bool(torch.isfinite(y1).all()), "forward() gives non-finite values")
    expect(torch.equal(y1, y2), "forward is not deterministic")
    expect(np.allclose(p.predict(x, batch_size=3), y1.numpy(), rtol=1e-5, atol=1e-4),
           "predict() in batches differs from forward()")
    why = probe(p, x, "predictor")
    expect(why is None, why or "")
    if p.differentiable:
        xg = x.clone().requires_grad_(True)
        p.forward(xg).sum().backward()
        expect(xg.grad.abs().sum() > 0, "differentiable, but every gradient is zero")
    expect(isinstance(type(p).differentiable, bool), "differentiable is not a bool")
    layer = type(p).gradcam_layer
    if layer is not None:
        module = p.torch_module()
        names = {n for n, _ in module.named_modules()} if module is not None else set()
        expect(isinstance(layer, str) and layer in names, f"gradcam_layer {layer!r} is not a "
               f"module of torch_module()")
    p.save(tmp / "p.pt")
    q = type(p).load(tmp / "p.pt")
    with torch.no_grad():
        expect(torch.equal(q.forward(x), y1), "save/load changes predictions")


def check_editor(name: str, tiny: Tiny, tmp: Path) -> None:
    """fit, attributes, decode shapes and range, edit == decode(encode), the gradients it claims,
    save/load."""
    from mxplain.gradients import probe

    store = tiny.store
    e = make("editor", name)
    e.fit(store, tiny.ctx)
    expect(tuple(e.attributes) == store.attributes, f"attributes {tuple(e.attributes)} are not "
           f"the store's {store.attributes}")
    lot = store.lot(1)
    x = lot.tiles[:3]
    a = torch.as_tensor(np.tile(lot.attributes, (3, 1)), dtype=torch.float32)
    with torch.no_grad():
        out = e.decode(e.encode(x), a)
        expect(out.shape == x.shape and out.dtype == torch.float32,
               f"decode() gives {out.dtype} {tuple(out.shape)}, not float32 {tuple(x.shape)}")
        expect(out.min() >= 0 and out.max() <= 1, "decode() leaves [0, 1]")
        expect(torch.equal(out, e.edit(x, a)), "edit != decode(encode)")
        expect(torch.equal(out, e.decode(e.encode(x), a)), "not deterministic in eval")
    why = probe(e, x, "editor", attributes=lot.attributes)
    expect(why is None, why or "")
    if e.differentiable:
        ag = a.clone().requires_grad_(True)
        e.decode(e.encode(x), ag).sum().backward()
        expect(ag.grad.abs().sum() > 0, "differentiable, but every gradient is zero")
    expect(isinstance(type(e).differentiable, bool), "differentiable is not a bool")
    if "generate" in type(e).capabilities(e.get_params()):
        with torch.no_grad():
            g = e.generate(e.encode(x), size=x.shape[-1])
        expect(isinstance(g, torch.Tensor) and g.shape == x.shape and g.min() >= 0
               and g.max() <= 1, f"generate() gives {tuple(getattr(g, 'shape', ()))}, not tiles "
               f"in [0, 1] of shape {tuple(x.shape)}")
    e.save(tmp / "e.pt")
    f = type(e).load(tmp / "e.pt")
    with torch.no_grad():
        expect(torch.equal(f.edit(x, a), out), "save/load changes edits")


def check_explainer(name: str, tiny: Tiny, tmp: Path, runs: bool = True) -> None:
    """explain_lot of 3 tiles returns every declared variable, of its declared dims, finite; the
    context holds what the synthetic dataset knows (measurement, segmentation). ``runs``: then
    a small real run with every predictor and editor that fits it (:func:`model_pairs`),
    checking ``summarize`` and ``report_section`` (:func:`check_summary_and_section`)."""
    from mxplain.components import dataset_knowledge

    store = tiny.store
    exp = make("explainer", name)
    ctx = ExplainContext(out_dir=tiny.root, progress=False, batch_size=16,
                         predictor=tiny.model("predictor"), editor=tiny.model("editor"))
    dataset_knowledge(ctx, tiny.dataset, store)
    sizes, _ = cube_layout(store, 3, ctx)
    sizes.update({d: len(v) for d, v in exp.extra_dims().items()})
    variables = exp.variables(ctx)
    lot = store.lot(0)
    lot.tiles = lot.tiles[:3]
    out = exp.explain_lot(lot, ctx)
    expect(set(out) == set(variables), f"explain_lot() returns {sorted(out)}, variables() "
           f"declares {sorted(variables)}")
    for vname, var in variables.items():
        expect(var.dims[0] == "lot", f"{vname}: first dim {var.dims[0]!r}, not 'lot'")
        arr = np.asarray(out[vname])
        want = tuple(sizes[d] for d in var.dims[1:])
        expect(arr.ndim == len(want), f"{vname}: {arr.ndim} dims, declared {len(want)}")
        for d, got, size in zip(var.dims[1:], arr.shape, want):
            # an explainer may cover a prefix of the lot's tiles; the cube pads the rest
            expect(got == size or (d == "tile" and 0 < got <= size),
                   f"{vname}: {d} has {got}, expected {size}")
        if arr.dtype.kind == "f":
            expect(np.isfinite(arr).all(), f"{vname}: non-finite values")
    pairs = model_pairs(name) if runs else []
    expect(pairs or not runs, "no registered predictor and editor meet its requirements")
    for pred, editor in pairs:
        try:
            check_summary_and_section(name, pred, editor, tiny, tmp / f"{pred}-{editor}")
        except ConformanceError as exc:
            raise ConformanceError(f"with {pred} and {editor or 'no editor'}: {exc}") from None


CHECKS = {"dataset": check_dataset, "predictor": check_predictor, "editor": check_editor,
          "explainer": check_explainer}


def components_of(plugin: str | None) -> list[tuple[str, str]]:
    """``(kind, name)`` of the components of ``plugin`` (an entry-point name, a distribution or a
    component name; ``None``: every registered one)."""
    out = []
    for kind, entries in plugins.registry().items():
        for name, e in entries.items():
            if plugin is None or plugin in (e.plugin, e.distribution, e.name):
                out.append((kind, name))
    return out


def run_checks(selected: list[tuple[str, str]], root: Path, echo=print) -> int:
    """Run the checks of ``selected``; one line each; the number that failed."""
    tiny = Tiny.build(root / "tiny")
    failed = 0
    for kind, name in selected:
        tmp = root / f"{kind}-{name}"
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            check_constructor(kind, name)
            CHECKS[kind](name, tiny, tmp)
        except (ConformanceError, UserError) as exc:
            failed += 1
            echo(f"FAIL {kind} {name}: {exc}")
            continue
        except Exception as exc:  # the component crashed: say where, in one line
            failed += 1
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            echo(f"FAIL {kind} {name}: {type(exc).__name__}: {first}")
            continue
        echo(f"ok   {kind} {name}")
    return failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mxplain.conformance",
                                     description="Check the components of an mxplain plugin.")
    parser.add_argument("plugin", nargs="*", help="entry-point name, distribution or component "
                        "name (several allowed)")
    parser.add_argument("--all", action="store_true", help="every registered component")
    args = parser.parse_args(argv)
    if not args.plugin and not args.all:
        parser.error("name a plugin (or --all)")
    selected = components_of(None) if args.all else [
        c for p in args.plugin for c in components_of(p)]
    if not selected:
        known = sorted({e.plugin for es in plugins.registry().values() for e in es.values()})
        print(f"error: no registered component belongs to {', '.join(args.plugin)} (plugins: "
              f"{', '.join(known)})", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mxplain-conformance-") as tmp:
        failed = run_checks(list(dict.fromkeys(selected)), Path(tmp))
    print(f"{len(selected) - failed} of {len(selected)} components conform")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
