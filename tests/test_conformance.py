"""Conformance suite: every registered component, built with its ``test_params``, is checked for
shapes, dtypes, determinism, save/load and differentiability where claimed. A new plugin is checked
by adding nothing but the plugin."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mxplain import plugins
from mxplain.interfaces import ExplainContext, RunContext
from mxplain.store import TileStore


def components(kind):
    return [pytest.param(name, id=f"{kind}:{name}") for name in plugins.available(kind)]


def make(kind, name, **extra):
    cls = plugins.get(kind, name)
    return cls(**{**cls.test_params, **extra})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny synthetic store, and one fitted tiny predictor and editor for the explainers."""
    root = tmp_path_factory.mktemp("conformance")
    ctx = RunContext(out_dir=root, progress=False, batch_size=16)
    store = plugins.create("dataset", "synthetic", n_lots=4, tiles_per_lot=6, tile_size=32,
                           seed=1).build(root / "tiles.zarr", ctx)
    predictor = make("predictor", "wideresnet")
    predictor.fit(store, ctx)
    editor = make("editor", "attgan")
    editor.fit(store, ctx)
    return store, ctx, predictor, editor


@pytest.mark.parametrize("name", components("dataset"))
def test_dataset(name, tiny, tmp_path):
    store0 = tiny[0]
    cls = plugins.get("dataset", name)
    extra = {"path": str(store0.path)} if "path" in cls.param_defaults() and \
        "path" not in cls.test_params else {}
    ctx = RunContext(out_dir=tmp_path, progress=False)
    stores = [make("dataset", name, **extra).build(tmp_path / f"s{i}.zarr", ctx) for i in range(2)]
    for s in stores:
        assert isinstance(s, TileStore) and s.n_lots >= 2
        t = s.tiles(0)
        assert t.dtype == np.uint8 and t.ndim == 3 and t.shape[1:] == (s.tile_size, s.tile_size)
        assert np.all((s.lot_attributes >= 0) & (s.lot_attributes <= 1))
        assert np.all(np.isfinite(s.properties))
    assert np.array_equal(stores[0].tiles(1), stores[1].tiles(1)), "not deterministic"


@pytest.mark.parametrize("name", components("predictor"))
def test_predictor(name, tiny, tmp_path):
    store, ctx, _, _ = tiny
    p = make("predictor", name)
    metrics = p.fit(store, ctx)
    assert isinstance(metrics, dict)
    x = store.lot(0).tiles[:4]
    with torch.no_grad():
        y1, y2 = p.forward(x), p.forward(x)
    assert y1.shape == (4,) and y1.dtype == torch.float32 and torch.isfinite(y1).all()
    assert torch.equal(y1, y2), "forward is not deterministic"
    assert np.allclose(p.predict(x, batch_size=3), y1.numpy(), rtol=1e-5, atol=1e-4)
    if p.differentiable:
        xg = x.clone().requires_grad_(True)
        p.forward(xg).sum().backward()
        assert xg.grad is not None and xg.grad.abs().sum() > 0
    p.save(tmp_path / "p.pt")
    q = type(p).load(tmp_path / "p.pt")
    with torch.no_grad():
        assert torch.equal(q.forward(x), y1), "save/load changes predictions"


@pytest.mark.parametrize("name", components("editor"))
def test_editor(name, tiny, tmp_path):
    store, ctx, _, _ = tiny
    e = make("editor", name)
    e.fit(store, ctx)
    assert tuple(e.attributes) == store.attributes
    lot = store.lot(1)
    x = lot.tiles[:3]
    a = torch.as_tensor(np.tile(lot.attributes, (3, 1)), dtype=torch.float32)
    with torch.no_grad():
        z = e.encode(x)
        out = e.decode(z, a)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, e.edit(x, a)), "edit != decode(encode)"
        assert torch.equal(out, e.decode(e.encode(x), a)), "not deterministic in eval"
    if e.differentiable:
        ag = a.clone().requires_grad_(True)
        e.decode(e.encode(x), ag).sum().backward()
        assert ag.grad is not None and ag.grad.abs().sum() > 0
    e.save(tmp_path / "e.pt")
    f = type(e).load(tmp_path / "e.pt")
    with torch.no_grad():
        assert torch.equal(f.edit(x, a), out), "save/load changes edits"


@pytest.mark.parametrize("name", components("explainer"))
def test_explainer(name, tiny):
    store, rctx, predictor, editor = tiny
    exp = make("explainer", name)
    ctx = ExplainContext(out_dir=rctx.out_dir, progress=False, batch_size=16, predictor=predictor,
                         editor=editor, attributes=store.attributes,
                         true_sensitivity=store.true_sensitivity())
    sizes = {"tile": 3, "attribute": len(store.attributes), "direction": 2,
             "y": store.tile_size, "x": store.tile_size}
    sizes.update({d: len(v) for d, v in exp.extra_dims().items()})
    variables = exp.variables(ctx)
    lot = store.lot(0)
    lot.tiles = lot.tiles[:3]
    out = exp.explain_lot(lot, ctx)
    assert set(out) == set(variables)
    for vname, var in variables.items():
        assert var.dims[0] == "lot"
        arr = np.asarray(out[vname])
        expected = tuple(sizes[d] for d in var.dims[1:])
        assert arr.ndim == len(expected), vname
        for d, got, want in zip(var.dims[1:], arr.shape, expected):
            # an explainer may cover a prefix of the lot's tiles; the cube pads the rest
            assert got == want or (d == "tile" and 0 < got <= want), (vname, d, got, want)
        if arr.dtype.kind == "f":
            assert np.isfinite(arr).all(), vname
    assert Path(rctx.out_dir).exists()
