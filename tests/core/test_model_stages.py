"""mxplain.model_stages, the pipeline's steps between training and the explain stage and after
it: the gradient probe (an error, or with ``on_unsupported = "skip"`` the explainers that need the
gradients skipped), ``batch_size = "auto"`` and ``compile``, the editor's evaluation, and the
trust gates over the explainers that edit through the editor."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from mxplain import model_stages, trust
from mxplain.builtins import StoreDataset
from mxplain.config import CPU_AUTO_BATCH
from mxplain.errors import UserError
from mxplain.interfaces import Editor, ExplainContext, Explainer, NoLearnedState, Predictor


class Mean(NoLearnedState, Predictor):
    """The mean grey level; ``lie``: claims gradients and detaches its output."""

    name = "stage-mean"

    def __init__(self, lie: bool = False, compiles: str = "none"):
        self.lie = lie
        self.compiles = compiles

    def forward(self, tiles):
        out = tiles.mean(dim=(1, 2, 3))
        return out.detach() if self.lie else out

    def compile(self):
        if self.compiles == "fails":
            raise RuntimeError("no compiler here")
        return ["net"] if self.compiles == "net" else []


class Dim(NoLearnedState, Editor):
    """Every edit halves the grey levels, whatever the attributes."""

    name = "stage-dim"
    attributes = ("size", "porosity")

    def encode(self, tiles):
        return tiles

    def decode(self, latent, attributes):
        return latent * 0.5


class NeedsGradients(Explainer):
    name = "stage-grad"
    requires_gradients = True

    def variables(self, ctx):
        return {}

    def explain_lot(self, lot, ctx):
        return {}


class UsesGradients(NeedsGradients):
    """Takes gradients where offered, a gradient-free path otherwise (backward's ``auto``)."""

    name = "stage-uses"
    requires_gradients = False

    @classmethod
    def uses(cls, params):
        return cls.requirements(params) | {"gradients"}


class Edits(NeedsGradients):
    name = "stage-edits"
    requires_gradients = False
    requires_editor = True


class Plain(Edits):
    name = "stage-plain"
    requires_editor = False


def components(*explainers) -> dict:
    return {"explain": {type(e).name: e for e in explainers}, "skipped": {}}


def test_a_model_that_gives_its_gradients_changes_nothing(small_store):
    comps = components(NeedsGradients(), Plain())
    ctx = ExplainContext(predictor=Mean())
    model_stages.probe_gradients({"run": {"on_unsupported": "error"}}, small_store, ctx, comps,
                                 "predictor")
    assert list(comps["explain"]) == ["stage-grad", "stage-plain"] and comps["skipped"] == {}
    assert ctx.predictor.differentiable and "gradient_probe" not in comps


def test_a_lying_predictor_is_one_error_naming_the_explainer(small_store):
    ctx = ExplainContext(predictor=Mean(lie=True))
    with pytest.raises(UserError, match=r"^\[explain.stage-grad\] cannot run: the predictor "
                                        r"'stage-mean' declares differentiable = True"):
        model_stages.probe_gradients({"run": {"on_unsupported": "error"}}, small_store, ctx,
                                     components(Plain(), NeedsGradients()), "predictor")
    # no explainer needs or uses its gradients: it is not probed
    model_stages.probe_gradients({"run": {"on_unsupported": "error"}}, small_store, ctx,
                                 components(Plain()), "predictor")
    # one that only uses them is probed too; the refusal names it
    with pytest.raises(UserError, match=r"^\[explain.stage-uses\] cannot run"):
        model_stages.probe_gradients({"run": {"on_unsupported": "error"}}, small_store, ctx,
                                     components(UsesGradients()), "predictor")


def test_skip_drops_the_explainers_that_need_the_gradients(small_store, capsys):
    comps = components(NeedsGradients(), UsesGradients(), Plain())
    ctx = ExplainContext(predictor=Mean(lie=True))
    model_stages.probe_gradients({"run": {"on_unsupported": "skip"}}, small_store, ctx, comps,
                                 "predictor")
    why = comps["gradient_probe"]["predictor"]
    assert "does not require grad" in why
    assert list(comps["explain"]) == ["stage-uses", "stage-plain"]  # its fallback runs
    assert comps["skipped"] == {"stage-grad": f"needs a differentiable predictor: {why}"}
    assert ctx.predictor.differentiable is False and Mean.differentiable is True
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"note: {why}; this run treats it as not differentiable"
    assert err[1].startswith('note: [explain.stage-grad] skipped ([run] on_unsupported = "skip")')


def test_prepare_models_auto_batch_on_the_cpu_and_compile(small_store, monkeypatch):
    dynamo = types.SimpleNamespace(config=types.SimpleNamespace(suppress_errors=False))
    monkeypatch.setitem(sys.modules, "torch._dynamo", dynamo)  # torch's own stays untouched
    monkeypatch.setattr(torch, "_dynamo", dynamo, raising=False)
    ctx = ExplainContext(predictor=Mean(compiles="net"), editor=None, batch_size=7)
    info, timings = {}, {}
    model_stages.prepare_models({"batch_size": "auto", "compile": True}, small_store, ctx, info,
                                timings)
    assert ctx.batch_size == CPU_AUTO_BATCH and info["batch_size"] == CPU_AUTO_BATCH
    assert info["batch_size_auto"] == {"method": "cpu fixed value"}
    assert info["compiled"] == ["net"] and timings["batch_size_probe"] >= 0
    assert dynamo.config.suppress_errors is True  # a failure at the first call falls back to eager

    ctx = ExplainContext(predictor=Mean(compiles="fails"), batch_size=7)
    info = {}
    with pytest.warns(UserWarning, match=r"\[run\] compile: the predictor 'stage-mean' runs "
                                         r"eagerly \(RuntimeError: no compiler here\)"):
        model_stages.prepare_models({"batch_size": 32, "compile": True}, small_store, ctx, info,
                                    {})
    assert ctx.batch_size == 7 and info == {"compiled": []}


def test_evaluate_editor_without_measurement_or_realism_reconstructs(small_store):
    ctx = ExplainContext(editor=Dim())
    ctx.editor_eval_tiles, ctx.editor_realism_tiles, ctx.trust = 5, 0, {"probe_tiles": 0}
    out = model_stages.evaluate_editor(Dim(), StoreDataset(path=str(small_store.path)),
                                       small_store, ctx)
    assert set(out) == {"reconstruction"}
    tiles, _ = small_store.all_tiles()
    x = tiles.astype(np.float64) / 255
    rec = out["reconstruction"]
    assert rec["n_tiles"] == 12
    assert rec["l1"] == pytest.approx(0.5 * x.mean(), rel=1e-5)
    assert rec["mse"] == pytest.approx(0.25 * (x ** 2).mean(), rel=1e-5)
    assert rec["psnr"] == pytest.approx(10 * np.log10(1 / rec["mse"]))


def test_trust_gates_gate_the_explainers_that_edit(small_store, tmp_path, monkeypatch):
    seen = {}

    def gates(metrics, cfg, attributes, gated, checks):
        seen.update(attributes=attributes, gated=gated, checks=checks)
        return {"verdict": "trusted"}

    monkeypatch.setattr(trust, "trust_gates", gates)
    monkeypatch.setattr(trust, "mark_cube", lambda *a: seen.setdefault("marked", a))
    ctx = ExplainContext(editor=Dim())
    ctx.trust = {}
    metrics = {"editor": {}}
    folder = types.SimpleNamespace(path=tmp_path)  # all trust_gates reads of the RunFolder
    model_stages.trust_gates({}, small_store, ctx, components(Plain(), Edits()), metrics, folder)
    assert metrics["trust"] == {"verdict": "trusted"} and seen["gated"] == ["stage-edits"]
    assert seen["attributes"] == ("size", "porosity") and seen["checks"] == []
    assert "marked" not in seen  # no cube was written
    (tmp_path / "results.zarr").mkdir()
    metrics["explain"] = {}
    model_stages.trust_gates({}, small_store, ctx, components(Edits()), metrics, folder)
    assert seen["marked"] == (tmp_path / "results.zarr", {"verdict": "trusted"})
    assert torch.is_grad_enabled()
