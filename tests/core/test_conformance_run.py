"""mxplain.conformance_run, the conformance suite's small real runs and its constructor rule
(tests/core/test_conformance.py runs them over every registered component): a throw-away
predictor and explainer registered here pair by what they declare, run over the tiny store's
lots into a real cube, and a section showing a figure the run did not draw is refused."""

from __future__ import annotations

import types

import numpy as np
import pytest

from mxplain import hookimpl, plugins
from mxplain.conformance import Tiny
from mxplain.conformance_run import (
    RUN_TILES,
    ConformanceError,
    check_constructor,
    check_summary_and_section,
    expect,
    fallbacks,
    make,
    model_pairs,
    offered_by,
    small_run,
)
from mxplain.interfaces import Explainer, NoLearnedState, Predictor, Variable
from mxplain.report_sections import ReportSection


class Grey(NoLearnedState, Predictor):
    """``gain`` times the mean grey level: differentiable, no torch module."""

    name = "cr-grey"
    test_params = {"gain": 3.0}

    def __init__(self, gain: float = 1.0):
        self.gain = gain

    def forward(self, tiles):
        return self.gain * tiles.mean(dim=(1, 2, 3))


class Counted(NoLearnedState, Predictor):
    """Not differentiable; its constructor leaves out a parameter and sets another attribute."""

    name = "cr-counted"
    differentiable = False

    def __init__(self, alpha: float = 1.0):
        self.model = None

    def forward(self, tiles):
        return tiles.mean(dim=(1, 2, 3)).detach()


class LotMean(Explainer):
    """Each lot's mean prediction (needs gradients, so that it pairs only with cr-grey)."""

    name = "cr-lotmean"
    requires_gradients = True

    def variables(self, ctx):
        return {"cr_lot_mean": Variable(("lot",))}

    def explain_lot(self, lot, ctx):
        return {"cr_lot_mean": np.float32(ctx.predictor.predict(lot.tiles).mean())}

    def summarize(self, cube, ctx):
        return {"mean_over_lots": float(cube["cr_lot_mean"].mean())}


class Boasts(LotMean):
    """Its section shows a figure the run never drew."""

    name = "cr-boasts"

    def report_section(self, run):
        return ReportSection("boasts", figures=[run.run_dir / "figures" / "never.png"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    plugins.reset()
    plugins.register(types.SimpleNamespace(
        mxplain_predictors=hookimpl(lambda: [Grey, Counted]),
        mxplain_explainers=hookimpl(lambda: [LotMean, Boasts])), name="cr-plugin")
    yield Tiny.build(tmp_path_factory.mktemp("tiny"))
    plugins.reset()


def test_expect_raises_a_conformance_error_saying_what():
    expect(True, "never shown")
    with pytest.raises(ConformanceError, match="^the cube has no lot$") as info:
        expect(False, "the cube has no lot")
    assert isinstance(info.value, AssertionError)


def test_make_builds_with_the_test_params(tiny):
    assert make("predictor", "cr-grey").gain == 3.0
    assert make("predictor", "cr-grey", gain=0.5).gain == 0.5


def test_pairs_follow_what_the_models_declare(tiny):
    assert offered_by("cr-grey", None) == {"predictor", "attributes", "gradients"}
    assert offered_by("cr-counted", None) == {"predictor", "attributes"}
    pairs = model_pairs("cr-lotmean")
    assert ("cr-grey", None) in pairs and not any(p == "cr-counted" for p, _ in pairs)
    assert all(e is None for _, e in pairs)
    assert fallbacks("cr-lotmean", "cr-grey", None) == frozenset()
    assert fallbacks("cr-lotmean", "cr-counted", None) == {"gradients"}


def test_check_constructor_names_extra_and_missing_parameters(tiny):
    check_constructor("predictor", "cr-grey")
    with pytest.raises(ConformanceError, match="^the constructor sets model, which are not "
                                               "parameters; does not set the parameters alpha$"):
        check_constructor("predictor", "cr-counted")


def test_a_small_run_writes_every_lot_into_a_real_cube(tiny, tmp_path):
    cube, ctx, exp = small_run("cr-lotmean", "cr-grey", None, tiny, tmp_path)
    store = tiny.store
    assert (tmp_path / "results.zarr").is_dir() and isinstance(exp, LotMean)
    assert ctx.predictor.gain == 3.0 and ctx.attributes == store.attributes
    expected = [3.0 * (store.tiles(i)[:RUN_TILES].astype(np.float64) / 255).mean()
                for i in range(store.n_lots)]
    np.testing.assert_allclose(cube["cr_lot_mean"].values, expected, rtol=1e-5)
    assert cube["tile_count"].values.tolist() == [min(RUN_TILES, c) for c in store.counts]
    np.testing.assert_allclose(cube["measured_property"].values, store.properties)


def test_summary_and_section_are_checked(tiny, tmp_path):
    check_summary_and_section("cr-lotmean", "cr-grey", None, tiny, tmp_path / "ok")
    with pytest.raises(ConformanceError, match="the section shows figures the run did not draw"):
        check_summary_and_section("cr-boasts", "cr-grey", None, tiny, tmp_path / "boasts")
