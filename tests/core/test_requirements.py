"""Issue 19 item 4: what every explainer needs (``Explainer.requirements``) is checked against the
predictor's and editor's declared capabilities when the config is resolved, before anything is
written or trained: one ``error:`` line, or with ``[run] on_unsupported = "skip"`` the explainer is
skipped with its reason in metrics.json and the report. A model that claims gradients and returns
none is found by a probe once it exists: one clear line instead of torch's RuntimeError."""

from __future__ import annotations

import json
import time
import types

import numpy as np
import pytest
import torch

from mxplain import config, hookimpl, plugins, preflight
from mxplain.cli import main
from mxplain.errors import UserError
from mxplain.gradients import grad, probe
from mxplain.interfaces import Editor, NoLearnedState, Predictor

DATA = '[data]\nname = "synthetic"\nn_lots = 3\ntiles_per_lot = 4\ntile_size = 32\nseed = 3\n'
RUN = "[run]\nexplain_tiles = 2\neditor_realism_tiles = 0\neditor_eval_tiles = 1\n"


class Mean(NoLearnedState, Predictor):
    """Mean grey level in numpy: honestly not differentiable."""

    name = "req-mean"
    differentiable = False

    def __init__(self, scale: float = 1000.0):
        self.scale = scale

    def forward(self, tiles):
        arr = tiles.detach().cpu().numpy().astype(np.float64)
        return torch.from_numpy(arr.mean(axis=(1, 2, 3)) * self.scale).float()


class Liar(Mean):
    """The same numpy model, wrongly declared differentiable."""

    name = "req-liar"
    differentiable = True


class Shift(Editor):
    """Brightens a tile by its mean attribute: differentiable, nothing to learn but the names."""

    name = "req-shift"

    def fit(self, store, ctx):
        self.attributes = tuple(store.attributes)
        return {}

    def state_dict(self):
        return {"attributes": list(self.attributes)}

    def load_state_dict(self, state):
        self.attributes = tuple(state["attributes"])

    def encode(self, tiles):
        return tiles

    def decode(self, latent, attributes):
        shift = 0.1 * (attributes.float().mean(1) - 0.5)
        return (latent + shift[:, None, None, None].to(latent.device)).clamp(0, 1)


class FrozenShift(Shift):
    name = "req-frozen"
    differentiable = False


@pytest.fixture(autouse=True)
def fakes():
    plugins.reset()
    mod = types.SimpleNamespace(
        mxplain_predictors=hookimpl(lambda: [Mean, Liar]),
        mxplain_editors=hookimpl(lambda: [Shift, FrozenShift]))
    plugins.register(mod, name="req-fakes")
    yield
    plugins.reset()


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code, err, *needles):
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("note:")
             and "Warning" not in ln and not ln.startswith("  ")]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def resolve(predictor, editor=None, on_unsupported="error", **explain):
    raw = {"data": {"name": "synthetic", "n_lots": 3, "tiles_per_lot": 4, "tile_size": 32},
           "predictor": {"name": predictor}, "explain": explain,
           "run": {"on_unsupported": on_unsupported}}
    if editor:
        raw["editor"] = {"name": editor}
    return config.resolve(raw, where="c.toml")


# ---- what each built-in needs, against what each model offers ----------------------------------
@pytest.mark.parametrize("predictor,editor,explain,needle", [
    ("req-mean", None, {"gradcam": {}}, "needs a differentiable predictor; [predictor] 'req-mean' "
                                        "is not (differentiable = False)"),
    ("req-mean", "req-shift", {"compare": {}}, "needs a differentiable predictor"),
    ("req-liar", None, {"gradcam": {}}, "needs a predictor with a torch module; [predictor] "
                                        "'req-liar' has none"),
    ("wideresnet", None, {"forward": {}}, "[explain.forward] needs an [editor]"),
    ("wideresnet", "req-frozen", {"latent_design": {}},
     "needs a differentiable editor; [editor] 'req-frozen' is not"),
    ("wideresnet", "req-frozen", {"backward": {"optimizer": "gradient"}},
     "[explain.backward] needs a differentiable editor"),
    ("req-mean", "req-shift", {"backward": {"optimizer": "gradient"}},
     "[explain.backward] needs a differentiable predictor"),
])
def test_unmet_needs_are_refused_when_the_config_is_resolved(predictor, editor, explain, needle):
    with pytest.raises(UserError) as exc:
        resolve(predictor, editor, **explain)
    msg = str(exc.value)
    assert msg.startswith("c.toml: [explain.") and needle in msg and "\n" not in msg
    assert 'on_unsupported = "skip"' in msg


@pytest.mark.parametrize("predictor,editor,explain", [
    ("req-mean", "req-shift", {"forward": {}, "backward": {}}),  # gradient-free paths
    ("req-mean", "req-frozen", {"backward": {"optimizer": "spsa"}}),
    ("wideresnet", "req-shift", {"gradcam": {}, "compare": {}, "latent_design": {}}),
    ("wideresnet", None, {"gradcam": {}, "compare": {}}),  # compare's editor part is optional
])
def test_met_needs_resolve(predictor, editor, explain):
    assert preflight.unsupported(resolve(predictor, editor, **explain)) == {}


def test_skip_returns_the_reasons_instead():
    cfg = resolve("req-mean", "req-shift", "skip", forward={}, gradcam={}, latent_design={})
    skipped = preflight.unsupported(cfg)
    assert set(skipped) == {"gradcam", "latent_design"}
    assert preflight.check_requirements(cfg) == skipped


def test_bad_on_unsupported_value(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + RUN + 'on_unsupported = "ignore"\n')
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "run"], capsys)
    one_error(code, err, "[run] on_unsupported", '"error" or "skip"')
    assert not (tmp_path / "run").exists()


def test_default_requirements_follow_the_old_flags():
    from mxplain.interfaces import Explainer

    class Old(Explainer):
        name = "old"
        requires_editor = True
        requires_gradients = True

        def variables(self, ctx):
            return {}

        def explain_lot(self, lot, ctx):
            return {}

    assert Old.requirements({}) == {"predictor", "editor", "gradients"}
    assert Old.uses({}) == Old.requirements({})


def test_capabilities_come_from_the_classes():
    from mxplain_vgg.predictor import TextureForestPredictor
    from mxplain_wideresnet.predictor import WideResNetPredictor

    assert WideResNetPredictor.capabilities({}) == {"gradients", "torch_module"}
    assert TextureForestPredictor.capabilities({}) == frozenset()
    assert Liar.capabilities({}) == {"gradients"}
    assert Shift.capabilities({}) == {"editor_gradients"}
    assert FrozenShift.capabilities({}) == frozenset()


# ---- the case: a non-differentiable predictor with [explain.gradcam] --------------------
def test_gradcam_with_a_non_differentiable_predictor_fails_before_anything_trains(tmp_path,
                                                                                   capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + '[predictor]\nname = "req-mean"\n[explain.gradcam]\n' + RUN)
    t0 = time.perf_counter()
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "run", "--quiet"], capsys)
    seconds = time.perf_counter() - t0
    one_error(code, err, "c.toml: [explain.gradcam] needs a differentiable predictor",
              "'req-mean'", 'on_unsupported = "skip"')
    assert not (tmp_path / "run").exists()  # no run folder, no tile store, nothing trained
    assert seconds < 10, seconds


def test_skip_runs_the_rest_and_records_why(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + '[predictor]\nname = "req-mean"\n[editor]\nname = "req-shift"\n'
                   "[explain.forward]\nsteps = 3\n[explain.gradcam]\n" + RUN +
                   'on_unsupported = "skip"\n')
    out = tmp_path / "run"
    code, _, err = run_cli(["run", cfg, "--out", out, "--quiet", "--device", "cpu"], capsys)
    assert code == 0, err
    assert 'note: [explain.gradcam] skipped ([run] on_unsupported = "skip"): needs a ' \
           "differentiable predictor" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["explain"]) == ["forward"]
    assert set(metrics["explain_skipped"]) == {"gradcam"}
    assert "req-mean" in metrics["explain_skipped"]["gradcam"]
    report = (out / "report" / "index.html").read_text()
    assert "skipped: needs a differentiable predictor" in report
    from mxplain.cube import open_results

    cube = open_results(out)
    assert "forward_prediction" in cube and "gradcam" not in cube


# ---- a predictor that claims gradients and returns none -----------------------------------------
def test_probe_finds_a_model_that_claims_gradients_and_returns_none():
    tiles = torch.rand(3, 1, 16, 16)
    why = probe(Liar(), tiles)
    assert "the predictor 'req-liar' declares differentiable = True" in why
    assert "set differentiable = False" in why and "\n" not in why
    assert probe(Mean(), tiles) is None  # claims nothing
    editor = Shift()
    editor.attributes = ("a", "b")
    assert probe(editor, tiles, "editor", attributes=np.array([0.2, np.nan])) is None


def test_grad_of_an_output_without_gradient_is_one_clear_error():
    x = torch.rand(2, 3, requires_grad=True)
    with pytest.raises(UserError, match=r"^\[explain\.backward\]: no gradient came back: the "
                                        r"predictor 'req-liar' declares differentiable = True"):
        grad(Liar().forward(x[:, None, None, :]).sum(), x, "[explain.backward]", (Liar(),))
    (g,) = grad((x ** 2).sum(), x, "x")
    assert torch.allclose(g, 2 * x)


def test_backward_with_a_lying_predictor_is_one_line_before_the_editor_trains(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + '[predictor]\nname = "req-liar"\n[editor]\nname = "req-shift"\n'
                   "[explain.backward]\nmax_iter = 2\n" + RUN)
    out = tmp_path / "run"
    code, _, err = run_cli(["run", cfg, "--out", out, "--quiet", "--device", "cpu"], capsys)
    one_error(code, err, "[explain.backward] cannot run: the predictor 'req-liar' declares "
                         "differentiable = True", "set differentiable = False")
    assert "RuntimeError" not in err
    assert not (out / "models" / "editor.pt").exists()


def test_skip_treats_a_lying_predictor_as_not_differentiable(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + '[predictor]\nname = "req-liar"\n[editor]\nname = "req-shift"\n'
                   "[explain.backward]\nmax_iter = 2\n" + RUN + "report = false\n"
                   'on_unsupported = "skip"\n')
    out = tmp_path / "run"
    code, _, err = run_cli(["run", cfg, "--out", out, "--quiet", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "this run treats it as not differentiable" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert "declares differentiable = True" in metrics["predictor"]["gradient_probe"]
    assert list(metrics["explain"]) == ["backward"]  # gradient-free (SPSA) from there on
    assert metrics["explain_skipped"] == {}


# ---- attribute names: an editor checkpoint of other attributes, before the run ---------------
def test_editor_checkpoint_of_other_attributes_is_refused_before_the_run(tmp_path, capsys):
    from mxplain.checkpoint import FORMAT

    ckpt = tmp_path / "e.pt"
    torch.save({"format": FORMAT, "kind": "editor", "name": "req-shift", "params": {},
                "state": {"attributes": ["grain_size", "density"]}}, ckpt)
    cfg = tmp_path / "c.toml"
    cfg.write_text(DATA + f'[predictor]\nname = "req-mean"\n[editor]\nname = "req-shift"\n'
                   f'checkpoint = "{ckpt}"\n[explain.forward]\n' + RUN)
    code, _, err = run_cli(["run", cfg, "--out", tmp_path / "run"], capsys)
    one_error(code, err, "e.pt", "edits the attributes ['grain_size', 'density']", "'size'")
    assert not (tmp_path / "run").exists()
