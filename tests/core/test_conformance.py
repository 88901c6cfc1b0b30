"""Conformance suite: every registered component, built with its ``test_params``, is checked for
shapes, dtypes, determinism, save/load and differentiability where claimed. A new plugin is checked
by adding nothing but the plugin. The checks live in the package (:mod:`mxplain.conformance`), so a
plugin author runs the same with ``python -m mxplain.conformance PLUGIN`` from an installed
mxplain."""

import types

import numpy as np
import pytest
import torch

from mxplain import conformance, hookimpl, plugins
from mxplain.interfaces import NoLearnedState, Predictor


def components(kind):
    return [pytest.param(name, id=f"{kind}:{name}") for name in plugins.available(kind)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny synthetic store; the fitted tiny predictor and editor for the explainers."""
    return conformance.Tiny.build(tmp_path_factory.mktemp("conformance"))


@pytest.mark.parametrize("name", components("dataset"))
def test_dataset(name, tiny, tmp_path):
    conformance.check_dataset(name, tiny, tmp_path)


@pytest.mark.parametrize("name", components("predictor"))
def test_predictor(name, tiny, tmp_path):
    conformance.check_predictor(name, tiny, tmp_path)


@pytest.mark.parametrize("name", components("editor"))
def test_editor(name, tiny, tmp_path):
    conformance.check_editor(name, tiny, tmp_path)


@pytest.mark.parametrize("name", components("explainer"))
def test_explainer(name, tiny, tmp_path):
    conformance.check_explainer(name, tiny, tmp_path, runs=False)  # the runs: below, one a pair


def explainer_runs():
    """Every fitting pair; those where the explainer falls back for what the pair lacks (the
    backward search's SPSA, 20-80 s each on a shared CPU) marked slow."""
    return [pytest.param(name, pred, editor, id=f"{name}:{pred}+{editor or 'none'}",
                         marks=[pytest.mark.slow] if conformance.fallbacks(name, pred, editor)
                         else [])
            for name in plugins.available("explainer")
            for pred, editor in conformance.model_pairs(name)]


@pytest.mark.parametrize("name,pred,editor", explainer_runs())
def test_explainer_summary_and_report_section(name, pred, editor, tiny, tmp_path):
    """A small real run (every lot, 2 tiles, a results cube) with each predictor and editor whose
    declared capabilities meet the explainer's requirements; summarize and report_section."""
    conformance.check_summary_and_section(name, pred, editor, tiny, tmp_path)


def every_component():
    return [pytest.param(kind, name, id=f"{kind}:{name}")
            for kind in ("dataset", "predictor", "editor", "explainer")
            for name in plugins.available(kind)]


@pytest.mark.parametrize("kind,name", every_component())
def test_constructor_sets_only_its_parameters(kind, name):
    """scikit-learn's rule for every registered component (issue 18 item 7): the constructor
    sets its parameters and nothing else; learned state (``generator_``, ``tile_size_``, ...)
    comes with ``fit`` or ``load_state_dict``."""
    conformance.check_constructor(kind, name)


class Liar(NoLearnedState, Predictor):
    """Computes in numpy but claims gradients (issue 19)."""

    name = "conf-liar"

    def forward(self, tiles):
        arr = tiles.detach().cpu().numpy().astype(np.float64)
        return torch.from_numpy(arr.mean(axis=(1, 2, 3)) * 100).float()


class Honest(Liar):
    name = "conf-honest"
    differentiable = False


@pytest.fixture
def fakes():
    plugins.reset()
    mod = types.SimpleNamespace(mxplain_predictors=hookimpl(lambda: [Liar, Honest]))
    plugins.register(mod, name="conf-fakes")
    yield
    plugins.reset()


def test_the_command_names_a_predictor_that_claims_gradients_and_returns_none(fakes, capsys):
    assert conformance.main(["conf-fakes"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "ok   predictor conf-honest" in out
    fail = [ln for ln in out if ln.startswith("FAIL")]
    assert len(fail) == 1 and fail[0].startswith(
        "FAIL predictor conf-liar: the predictor 'conf-liar' declares differentiable = True but "
        "its output has no gradient with respect to the tiles")
    assert "RuntimeError" not in fail[0]
    assert out[-1] == "1 of 2 components conform"


def test_the_command_selects_by_component_name_and_refuses_unknown_plugins(fakes, capsys):
    assert conformance.main(["conf-honest"]) == 0
    assert capsys.readouterr().out.splitlines() == ["ok   predictor conf-honest",
                                                    "1 of 1 components conform"]
    assert conformance.main(["nothing-here"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no registered component belongs to nothing-here (plugins: ")


def test_dataset_knowledge_is_checked_against_what_the_class_declares(tmp_path):
    """``Dataset.provides()`` follows the overrides; a segmentation whose masks do not match its
    ``structures``, or structures without a segmentation, fail the conformance check."""
    from mxplain.interfaces import Dataset
    from mxplain_synthetic.dataset import SyntheticLots

    store = SyntheticLots(n_lots=2, tiles_per_lot=3, tile_size=32, seed=2).build(
        tmp_path / "s.zarr")

    class Plain(SyntheticLots):  # measures, segments nothing
        structures = {}
        segment = Dataset.segment

    class Lying(SyntheticLots):  # declares a structure its segmentation does not return
        structures = {"holes": "porosity", "pores": "porosity"}

    class Claims(Plain):  # structures without a segmentation
        structures = {"holes": "porosity"}

    assert Plain.provides() == {"measure", "edit_fidelity_ceiling"}
    conformance.check_dataset_knowledge(SyntheticLots(tile_size=32), store)
    conformance.check_dataset_knowledge(Plain(tile_size=32), store)
    with pytest.raises(conformance.ConformanceError, match="structures declares"):
        conformance.check_dataset_knowledge(Lying(tile_size=32), store)
    with pytest.raises(conformance.ConformanceError, match="segment is not overridden"):
        conformance.check_dataset_knowledge(Claims(tile_size=32), store)


def test_param_defaults_refuses_star_args_and_parameters_without_defaults():
    from mxplain.errors import PluginError

    class Star(Liar):
        def __init__(self, *layers, depth: int = 2):
            self.depth = depth

    class Kw(Liar):
        def __init__(self, depth: int = 2, **rest):
            self.depth = depth

    class NoDefault(Liar):
        def __init__(self, depth: int, width: int = 3):
            self.depth, self.width = depth, width

    class Fine(Liar):
        def __init__(self, depth: int = 2, width: int = 3):
            self.depth, self.width = depth, width

    with pytest.raises(PluginError, match=r"^Star.__init__ takes \*layers: "):
        Star.param_defaults()
    with pytest.raises(PluginError, match=r"^Kw.__init__ takes \*\*rest: "):
        Kw.param_defaults()
    with pytest.raises(PluginError, match="parameter 'depth' has no default"):
        NoDefault.param_defaults()
    assert Fine.param_defaults() == {"depth": 2, "width": 3} and Liar.param_defaults() == {}


class Stateful(Honest):
    """Sets learned-looking state in its constructor (scikit-learn's rule broken)."""

    name = "conf-stateful"

    def __init__(self, depth: int = 2):
        self.depth = depth
        self.weights = [0.0]


def test_check_constructor_names_what_is_set_beyond_the_parameters(fakes):
    plugins.register(types.SimpleNamespace(mxplain_predictors=hookimpl(lambda: [Stateful])),
                     name="conf-stateful")
    conformance.check_constructor("predictor", "conf-honest")
    with pytest.raises(conformance.ConformanceError,
                       match="^the constructor sets weights, which are not parameters$"):
        conformance.check_constructor("predictor", "conf-stateful")


def test_device_is_a_property_that_to_sets_not_a_constructor_attribute():
    """``TrainableModel.device``: the CPU on a new instance without the constructor setting it;
    ``to`` (and assignment) move this instance only."""
    a, b = Honest(), Honest()
    assert a.device == torch.device("cpu") and not vars(a)
    assert a.to("meta") is a and a.device == torch.device("meta")
    assert vars(a) == {"_device": torch.device("meta")} and b.device == torch.device("cpu")
    b.device = "meta"
    assert b.device == torch.device("meta") and Honest().device == torch.device("cpu")


def test_pairs_follow_declared_capabilities():
    """GradCAM (gradients and a torch module, no editor) pairs with no editor and never with the
    random forest; latent design (a differentiable editor) never with the synthetic oracle;
    backward (SPSA where gradients are missing) with every predictor."""
    gradcam = conformance.model_pairs("gradcam")
    assert gradcam and all(e is None for _, e in gradcam)
    assert "texture_rf" not in {p for p, _ in gradcam}
    design = conformance.model_pairs("latent_design")
    assert design and "synthetic_oracle" not in {e for _, e in design}
    assert {p for p, _ in conformance.model_pairs("backward")} == set(plugins.available("predictor"))
