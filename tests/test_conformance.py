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
    conformance.check_explainer(name, tiny, tmp_path)


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
