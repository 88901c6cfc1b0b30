"""``compare`` takes over what earlier explainers of the lot wrote (Explainer.reads_optional):
forward's sweep for ``edit_slope``, the pipeline's reconstruction as the reference, the gradcam
explainer's maps where its settings match; without them it computes its own, to the same
results."""

import numpy as np
import pytest
import torch
from gradcam_fakes import BrightnessEditor, RegionPredictor

from mxplain.components import build_explainers, explain_lot_values
from mxplain.interfaces import ExplainContext, Lot

ATTRS = ("size", "porosity", "polydispersity", "facetness")
COMPARE = {"max_tiles": 3, "curve_steps": 8, "ig_steps": 4, "sweep_steps": 3}


def grey_tiles(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, size // 4, size // 4, generator=g)
    return 0.25 + 0.5 * torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear")


class CountingEditor(BrightnessEditor):
    """Counts the rows it decodes."""

    rows = 0

    def decode(self, latent, attributes):
        CountingEditor.rows += len(attributes)
        return super().decode(latent, attributes)


def lot_values(tables: dict, attrs=(0.5, 0.3, 0.6, 0.5)):
    """The lot's cube values with the explainers of ``tables`` (the run's order), and the rows the
    editor decoded inside ``compare``."""
    explainers = build_explainers(tables)
    ctx = ExplainContext(predictor=RegionPredictor(size=32, lo=8, hi=16), editor=CountingEditor(),
                         attributes=ATTRS, progress=False, seed=3)
    if "forward" in explainers:
        ctx.cube_coords = {"value": explainers["forward"].values()}
    lot = Lot(0, "L0", grey_tiles(5, seed=2), np.asarray(attrs, np.float32), 2.0)
    compare, rows = explainers["compare"], {}
    orig = compare.explain_lot

    def counted(lot, ctx):
        CountingEditor.rows = 0
        out = orig(lot, ctx)
        rows["compare"] = CountingEditor.rows
        return out

    compare.explain_lot = counted
    per = dict.fromkeys(explainers, 0.0)
    values = explain_lot_values(0, None, ctx, explainers, {v: 0 for v in _names(explainers, ctx)},
                                5, per, lot=lot)
    return values, rows["compare"]


def _names(explainers, ctx):
    out = {"tile_mask", "prediction", "example_tile", "reconstruction_prediction"}
    for exp in explainers.values():
        out |= set(exp.variables(ctx))
    return out


OFF_GRID = (0.55, 0.32, 0.61, 0.85)  # +-0.3: only 0.85 + 0.3 (clipped to 1) is on an 11-grid


def test_edit_slope_from_forward_sweep_matches_its_own_and_decodes_less():
    own, own_rows = lot_values({"compare": COMPARE}, OFF_GRID)
    read, read_rows = lot_values({"compare": COMPARE, "forward": {"steps": 11}}, OFF_GRID)
    k, m = len(ATTRS), 3
    # without forward: its sweep (3 values an attribute) and the +-delta edits, 3 tiles each (the
    # reference is the pipeline's reconstruction_prediction)
    assert own_rows == (k * 3 + 2 * k) * m
    # with forward (run first, though listed after): only the +-delta edits off forward's grid
    assert read_rows == (2 * k - 1) * m
    # labels on the grid: every +-delta edit is one of forward's, nothing is decoded
    on_grid, rows = lot_values({"compare": COMPARE, "forward": {"steps": 11}},
                               (0.5, 0.3, 0.6, 0.9))
    assert rows == 0
    alone, _ = lot_values({"compare": COMPARE}, (0.5, 0.3, 0.6, 0.9))
    for name in ("attribute_gain_top", "attribute_gain_random"):
        np.testing.assert_allclose(on_grid[name], alone[name], atol=1e-6, err_msg=name)
    values = np.linspace(0, 1, 11)
    fwd = read["forward_prediction"][:m].astype(np.float64).mean(0)
    expect = [np.polyfit(values, fwd[j], 1)[0] for j in range(k)]
    np.testing.assert_allclose(read["edit_slope"], expect, rtol=1e-6, atol=1e-7)
    # the brightness editor is linear in each attribute: both grids give porosity's 0.5
    np.testing.assert_allclose(read["edit_slope"], [0, 0.5, 0, 0], atol=1e-5)
    np.testing.assert_allclose(read["edit_slope"], own["edit_slope"], atol=1e-5)
    for name in ("attribute_top", "attribute_gain_top", "attribute_gain_random",
                 "deletion_auc", "insertion_auc"):
        np.testing.assert_allclose(read[name], own[name], atol=1e-6, err_msg=name)
    assert int(read["attribute_top"]) == 1
    np.testing.assert_allclose(float(read["attribute_gain_top"]), 0.15, atol=1e-5)
    assert read["attribute_cost_ms"] >= 0


def test_gradcam_maps_taken_over_only_where_the_settings_match(monkeypatch):
    from mxplain_gradcam.gradcam import GradCAM

    calls = []
    for key in ("gradcam", "ig"):
        orig = getattr(GradCAM, key)

        def spy(self, tiles, predictor, progress=False, _orig=orig, _key=key):
            calls.append((_key, self.ig_steps, len(tiles)))
            return _orig(self, tiles, predictor, progress)

        monkeypatch.setattr(GradCAM, key, spy)
    alone, _ = lot_values({"compare": COMPARE})
    assert calls == [("gradcam", 4, 3), ("ig", 4, 3)]  # its own maps of its 3 tiles
    calls.clear()
    same, _ = lot_values({"compare": COMPARE, "gradcam": {"ig_steps": 4}})
    assert calls == [("gradcam", 4, 5), ("ig", 4, 5)]  # only the gradcam explainer's, 5 tiles
    np.testing.assert_array_equal(same["overlay_gradcam"], same["gradcam"][0])
    np.testing.assert_array_equal(same["overlay_ig"], same["integrated_gradients"][0])
    np.testing.assert_allclose(same["overlay_ig"], alone["overlay_ig"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(same["deletion_auc"], alone["deletion_auc"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(same["gradcam_mean"], alone["gradcam_mean"], rtol=1e-5, atol=1e-7)
    assert np.isfinite(same["pixel_cost_ms"]).all() and (same["pixel_cost_ms"] >= 0).all()
    calls.clear()
    # IG of 2 steps is not the comparison's 4: it computes its own IG, takes gradcam's GradCAM
    other, _ = lot_values({"compare": COMPARE, "gradcam": {"ig_steps": 2}})
    assert calls == [("gradcam", 2, 5), ("ig", 2, 5), ("ig", 4, 3)]
    np.testing.assert_array_equal(other["overlay_gradcam"], other["gradcam"][0])


@pytest.mark.parametrize("attrs", [(0.5, 0.3, 0.6, 0.5), (0.0, 1.0, 0.2, 0.95)])
def test_reference_from_the_pipeline_gives_the_same_gains(attrs):
    from mxplain_gradcam.compare import Compare

    read, _ = lot_values({"compare": COMPARE, "forward": {"steps": 3}}, attrs)
    # explain_lot on its own (no pipeline, nothing to read): its own sweep and reference
    ctx = ExplainContext(predictor=RegionPredictor(size=32, lo=8, hi=16), editor=CountingEditor(),
                         attributes=ATTRS, progress=False, seed=3)
    lot = Lot(0, "L0", grey_tiles(5, seed=2), np.asarray(attrs, np.float32), 2.0)
    CountingEditor.rows = 0
    own = Compare(**COMPARE).explain_lot(lot, ctx)
    assert CountingEditor.rows == (len(ATTRS) * 3 + 1 + 2 * len(ATTRS)) * 3
    for name in ("edit_slope", "attribute_gain_top", "attribute_gain_random", "deletion_auc"):
        np.testing.assert_allclose(read[name], own[name], atol=1e-6, err_msg=name)
