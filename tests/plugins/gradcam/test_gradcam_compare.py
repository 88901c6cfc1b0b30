"""The ``compare`` explainer: perturbation curves, attribute faithfulness, summary table."""

import numpy as np
import pytest
import torch
import xarray as xr
from gradcam_cube import build_cube
from gradcam_fakes import BrightnessEditor, ForestLike, RegionPredictor, TinyConvPredictor

from mxplain.errors import UserError
from mxplain.interfaces import ExplainContext, Lot
from mxplain_gradcam.compare import (
    PIXEL_METHODS,
    Compare,
    normalised_curves,
    perturbation_curves,
    reference_tiles,
    subset_indices,
)

ATTRS = ("size", "porosity", "polydispersity", "facetness")


def grey_tiles(n, size=32, seed=0):
    """Tiles in [0.25, 0.75] with smooth structure (no clipping under the brightness editor)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, size // 4, size // 4, generator=g)
    t = torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear")
    return 0.25 + 0.5 * t


def test_subset_indices():
    assert subset_indices(5, 3).tolist() == [0, 1, 2]
    assert subset_indices(2, 8).tolist() == [0, 1]
    assert subset_indices(10, 1).tolist() == [0]


def test_deletion_of_true_attribution_beats_random():
    p = RegionPredictor(size=32, lo=8, hi=16)
    x = grey_tiles(4, seed=1)
    ref = reference_tiles(x, "blur")
    w = p.mask[0, 0].numpy() / p.mask.sum().item()
    true_map = ((x - ref)[:, 0].numpy() * w).astype(np.float32)  # exact for a linear model
    rand_map = np.random.default_rng(0).standard_normal(true_map.shape).astype(np.float32)

    def predict(t):
        return p.predict(t).astype(np.float64)

    raw_t = perturbation_curves(predict, x, true_map, 16, ref)
    raw_r = perturbation_curves(predict, x, rand_map, 16, ref)
    scale = np.abs(raw_t["p0"] - raw_t["pr"])
    dt, it, dauc_t, iauc_t = normalised_curves(raw_t, scale)
    dr, ir, dauc_r, iauc_r = normalised_curves(raw_r, scale)
    assert (dauc_t < dauc_r - 0.25).all() and (iauc_t > iauc_r + 0.25).all()
    assert dauc_t.mean() < dauc_r.mean() - 1.0
    # curves start at 0 and end at the reference / original change
    np.testing.assert_allclose(dt[:, 0], 0, atol=1e-12)
    np.testing.assert_allclose(dt[:, -1], (raw_t["pr"] - raw_t["p0"]) / scale, atol=1e-9)
    # deleting every positively attributed pixel removes exactly their summed attribution
    npos = (true_map > 0).reshape(4, -1).sum(1)
    assert (npos < 32 * 32 / 16).all()  # all positives are inside the first step (1/16)
    pos_sum = np.where(true_map > 0, true_map, 0).reshape(4, -1).sum(1)
    d1 = raw_t["p_del"][:, 1] - raw_t["p0"]
    np.testing.assert_allclose(d1, -pos_sum, rtol=1e-3, atol=1e-6)


def test_explain_lot_region_model_with_editor():
    p, e = RegionPredictor(size=32, lo=8, hi=16), BrightnessEditor()
    ctx = ExplainContext(predictor=p, editor=e, attributes=ATTRS, progress=False, seed=3)
    lot = Lot(0, "L0", grey_tiles(5, seed=2), np.full(4, 0.5), 2.0)
    ex = Compare(max_tiles=3, curve_steps=8, ig_steps=4, sweep_steps=3)
    out = ex.explain_lot(lot, ctx)
    vars_ = ex.variables(ctx)
    assert set(out) == set(vars_) and "structure_mass" not in out  # not synthetic
    for name, arr in out.items():  # the pipeline rejects NaN/Inf from explainers
        assert np.isfinite(arr).all(), name
        assert np.asarray(arr).ndim == len(vars_[name].dims) - 1
    assert out["deletion_auc"].shape == (3, len(PIXEL_METHODS))  # the writer pads to 5 tiles
    ig, rnd = PIXEL_METHODS.index("integrated_gradients"), PIXEL_METHODS.index("random")
    assert (out["deletion_auc"][:, ig] < out["deletion_auc"][:, rnd]).all()
    assert (out["insertion_auc"][:, ig] > out["insertion_auc"][:, rnd]).all()
    assert out["deletion_curve"].shape == (3, 9)
    np.testing.assert_allclose(out["deletion_curve"][:, 0], 0, atol=1e-9)
    # only porosity (band rows 8..15 = the region) moves the prediction: slope 0.5 per unit
    np.testing.assert_allclose(out["edit_slope"], [0, 0.5, 0, 0], atol=1e-5)
    assert int(out["attribute_top"]) == 1
    np.testing.assert_allclose(float(out["attribute_gain_top"]), 0.15, atol=1e-5)
    np.testing.assert_allclose(float(out["attribute_gain_random"]), 0.0, atol=1e-5)
    np.testing.assert_array_equal(out["overlay_image"], lot.tiles[0, 0].numpy())
    assert (out["pixel_cost_ms"] >= 0).all()


def test_end_to_end_tiny_conv_no_editor(tmp_path):
    p = TinyConvPredictor(seed=0)
    ctx = ExplainContext(out_dir=tmp_path, predictor=p, attributes=ATTRS, progress=False)
    lots = [Lot(i, f"L{i}", grey_tiles(2 + i, seed=i), np.full(4, 0.5), 1.0) for i in range(2)]
    ex = Compare(max_tiles=2, curve_steps=4, ig_steps=4, overlay_tiles=3)
    cube = build_cube([ex], lots, ctx)
    assert "edit_slope" not in cube and "structure_mass" not in cube
    assert np.isnan(cube["deletion_auc"].values[0, 2:]).all()  # padded beyond max_tiles
    m = ex.summarize(cube, ctx)
    assert m["pixel"]["gradcam"]["tiles"] == 4
    assert any("no editor" in s for s in m["skipped"])
    assert any("ground truth" in s for s in m["skipped"])
    assert [r["method"] for r in m["table"]] == ["GradCAM", "Integrated Gradients", "random map"]
    figs = {f.name for f in (tmp_path / "figures").iterdir()}
    assert figs == {"compare_table.png", "compare_faithfulness.png", "overlay_L0_0.png",
                    "overlay_L1_0.png", "gradcam_lot_mean.png"}


def test_non_differentiable_and_bad_params():
    ctx = ExplainContext(predictor=ForestLike(), attributes=ATTRS, progress=False)
    lot = Lot(0, "L0", grey_tiles(2), np.full(4, 0.5), 1.0)
    with pytest.raises(UserError, match="compare needs a differentiable predictor"):
        Compare().explain_lot(lot, ctx)
    ctx = ExplainContext(predictor=TinyConvPredictor(), attributes=ATTRS, progress=False)
    with pytest.raises(UserError, match="reference"):
        Compare(reference="white", ig_steps=2).explain_lot(lot, ctx)
    with pytest.raises(UserError, match="delta"):
        Compare(delta=0).explain_lot(lot, ctx)


def hand_cube():
    nl, nt, k, y = 2, 3, 4, 8
    meths = list(PIXEL_METHODS)
    dauc = np.zeros((nl, nt, 3))
    dauc[..., 0], dauc[..., 1], dauc[..., 2] = -0.5, -0.2, 0.1
    iauc = np.zeros((nl, nt, 3))
    iauc[..., 0], iauc[..., 1], iauc[..., 2] = 0.4, 0.9, -0.1
    dauc[1, 2] = np.nan  # a tile outside the subset
    iauc[1, 2] = np.nan
    curve = np.tile(np.linspace(0, -1, 5), (nl, 3, 1))
    la = np.full((nl, k), 0.5)
    ba = np.full((nl, nt, 2, k), 0.5)
    ba[0, :, 0] = [0.7, 0.3, 0.5, 0.9]  # increase: agrees on size, porosity
    ba[0, :, 1] = [0.3, 0.7, 0.6, 0.5]  # decrease: agrees on size, porosity, polydispersity
    ba[1, :, 0] = [0.3, 0.5, 0.5, 0.5]  # increase: disagrees on size
    truth = np.tile([1.0, -2.0, -1.0, 0.0], (nl, 1))
    rng = np.random.default_rng(0)
    d = {
        "deletion_auc": (("lot", "tile", "pixel_method"), dauc),
        "insertion_auc": (("lot", "tile", "pixel_method"), iauc),
        "deletion_curve": (("lot", "pixel_method", "curve_fraction"), curve),
        "insertion_curve": (("lot", "pixel_method", "curve_fraction"), -curve),
        "pixel_cost_ms": (("lot", "pixel_method"), np.array([[2.0, 10.0, 0.0], [4.0, 12, 0]])),
        "pixel_scale": (("lot",), np.array([1.0, 2.0])),
        "edit_slope": (("lot", "attribute"), np.tile([1.0, -1.0, 1.0, 1.0], (nl, 1))),
        "attribute_top": (("lot",), np.array([1, 1], np.int32)),
        "attribute_gain_top": (("lot",), np.array([0.2, 0.4])),
        "attribute_gain_random": (("lot",), np.array([0.0, 0.1])),
        "attribute_cost_ms": (("lot",), np.array([30.0, 50.0])),
        "structure_mass": (("lot", "structure"), np.tile([0.3, 0.2, 0.5], (nl, 1))),
        "structure_area": (("lot", "structure"), np.tile([0.1, 0.2, 0.6], (nl, 1))),
        "overlay_image": (("lot", "y", "x"), rng.random((nl, y, y))),
        "overlay_gradcam": (("lot", "y", "x"), rng.standard_normal((nl, y, y))),
        "overlay_ig": (("lot", "y", "x"), rng.standard_normal((nl, y, y))),
        "gradcam_mean": (("lot", "y", "x"), rng.standard_normal((nl, y, y))),
        "sensitivity": (("lot", "attribute"),
                        np.array([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, 1.0, -1.0]])),
        "true_sensitivity": (("lot", "attribute"), truth),
        "lot_attributes": (("lot", "attribute"), la),
        "backward_attributes": (("lot", "tile", "direction", "attribute"), ba),
        "prediction": (("lot", "tile"), np.ones((nl, nt))),
        "backward_target": (("lot", "tile", "direction"), np.tile([2.0, 0.0], (nl, nt, 1))),
        "backward_prediction": (("lot", "tile", "direction"),
                                np.tile([1.5, 0.5], (nl, nt, 1))),
        "forward_prediction": (("lot", "tile", "attribute", "step"),
                               rng.random((nl, nt, k, 3))),
        "value": (("step",), np.linspace(0, 1, 3)),
        "measured_property": (("lot",), np.array([1.0, 2.0])),
        "tile_mask": (("lot", "tile"), np.ones((nl, nt), bool)),
    }
    coords = {"lot": ["a/1", "b"], "tile": np.arange(nt), "attribute": list(ATTRS),
              "pixel_method": meths, "curve_fraction": np.linspace(0, 1, 5),
              "structure": ["holes", "boundaries", "crystals"],
              "direction": ["increase", "decrease"], "y": np.arange(y), "x": np.arange(y)}
    return xr.Dataset(d, coords=coords)


#: the structures a segmenting dataset declares (the synthetic lots' three)
STRUCTURES = {"holes": "porosity", "boundaries": "size", "crystals": None}


def test_summarize_hand_built_cube(tmp_path):
    ctx = ExplainContext(out_dir=tmp_path, attributes=ATTRS, progress=False,
                         structures=STRUCTURES)
    m = Compare(curve_steps=4).summarize(hand_cube(), ctx)
    g = m["pixel"]["gradcam"]
    assert g["tiles"] == 5 and g["deletion_auc"] == pytest.approx(-0.5)
    assert g["deletion_gain_vs_random"] == pytest.approx(0.6)
    assert g["insertion_gain_vs_random"] == pytest.approx(0.5)
    assert g["deletion_beats_random"] == 1.0 and g["cost_ms_per_tile"] == pytest.approx(3.0)
    assert m["pixel"]["integrated_gradients"]["insertion_gain_vs_random"] == pytest.approx(1.0)
    a = m["attribute"]
    assert a["gain_top_normalised"] == pytest.approx(0.2)
    assert a["gain_random_normalised"] == pytest.approx(0.025)
    assert a["top_beats_random"] == 1.0 and a["cost_ms_per_tile"] == pytest.approx(40.0)
    assert m["ground_truth"]["forward"] == {"agreement": pytest.approx(0.5), "pairs": 6}
    assert m["ground_truth"]["compare_sweep"]["agreement"] == pytest.approx(4 / 6)
    assert m["ground_truth"]["backward"] == {"agreement": pytest.approx(15 / 18), "pairs": 18}
    assert m["backward_target_reached"] == pytest.approx(0.5)
    s = m["structures"]
    assert s["holes"]["enrichment"] == pytest.approx(3.0)
    assert s["boundaries"]["enrichment"] == pytest.approx(1.0)
    assert s["holes"]["true_effect_abs"] == 2.0 and s["order_agrees_with_truth"] is True
    assert m["skipped"] == []
    rows = {r["method"]: r for r in m["table"]}
    assert list(rows) == ["GradCAM", "Integrated Gradients", "random map",
                          "forward (attribute sweep)", "backward (counterfactual)"]
    assert rows["GradCAM"]["ground_truth"] == "n/a — no attribute direction"
    assert [r["actionable_direction"] for r in m["table"]] == ["no", "no", "no", "yes", "yes"]
    assert rows["forward (attribute sweep)"]["sign_agreement"] == pytest.approx(0.5)
    assert rows["backward (counterfactual)"]["sign_agreement"] == pytest.approx(15 / 18)
    assert rows["backward (counterfactual)"]["cost_ms_per_tile"] is None
    # the backward explainer starts from the reconstruction's prediction where there is one
    cube = hand_cube()
    cube["reconstruction_prediction"] = (("lot", "tile"), np.full((2, 3), 0.5))
    m2 = Compare().summarize(cube, ExplainContext(attributes=ATTRS, progress=False))
    # increase: (1.5 - .5) / (2 - .5) = 2/3, decrease: 0 / (0 - .5) = 0 -> median 1/3
    assert m2["backward_target_reached"] == pytest.approx(1 / 3)
    figs = {f.name for f in (tmp_path / "figures").iterdir()}
    assert figs == {"compare_table.png", "compare_faithfulness.png", "overlay_a_1_0.png",
                    "overlay_b_0.png", "gradcam_lot_mean.png"}


def test_summarize_skips_absent_parts(tmp_path):
    cube = hand_cube().drop_vars(["sensitivity", "backward_attributes", "backward_prediction",
                                  "true_sensitivity", "forward_prediction"])
    cube["attribute_gain_top"][:] = np.nan
    cube["structure_mass"][:] = np.nan
    ctx = ExplainContext(out_dir=tmp_path, attributes=ATTRS, progress=False,
                         true_sensitivity={"size": 1.0, "porosity": 1.0})
    m = Compare().summarize(cube, ctx)
    assert m["attribute"] == {} and m["structures"] == {}
    assert any("forward" in s for s in m["skipped"]) and any("backward" in s for s in m["skipped"])
    assert any(s.startswith("structures: the dataset has no segmentation") for s in m["skipped"])
    # truth from ctx.true_sensitivity when the cube has none: size +, porosity + -> 1 of 2
    assert m["ground_truth"]["compare_sweep"] == {"agreement": 0.5, "pairs": 4}
    assert [r["method"] for r in m["table"]] == ["GradCAM", "Integrated Gradients", "random map"]


def _dark_and_bright(tiles):
    """A dataset's segmentation as ``ctx.segment`` gets it: ``uint8 (N, H, W)`` -> masks."""
    dark = np.asarray(tiles) < 128
    return {"dark": dark, "bright": ~dark}


def test_structures_come_from_the_dataset_segmentation():
    tiles = grey_tiles(2, size=32, seed=4)
    ctx = ExplainContext(predictor=TinyConvPredictor(), attributes=ATTRS, progress=False,
                         segment=_dark_and_bright, structures={"dark": "porosity", "bright": None})
    ex = Compare(max_tiles=2, curve_steps=4, ig_steps=2)
    assert {"structure_mass", "structure_area"} <= set(ex.variables(ctx))
    out = ex.explain_lot(Lot(0, "s", tiles, np.full(4, 0.5), 1.0), ctx)
    mass, area = out["structure_mass"], out["structure_area"]
    u8 = np.clip(np.rint(tiles[:, 0].numpy() * 255), 0, 255)
    assert mass.shape == (2,) and area.shape == (2,)
    assert area[0] == pytest.approx(float((u8 < 128).mean()), abs=1e-6)
    assert area.sum() == pytest.approx(1.0) and mass.sum() == pytest.approx(1.0, abs=1e-5)
    # no segmentation: no structure variables, and the summary says why
    plain = ExplainContext(predictor=TinyConvPredictor(), attributes=ATTRS, progress=False)
    assert not {"structure_mass", "structure_area"} & set(ex.variables(plain))


def test_compare_is_gated_by_the_editor_it_edits_through():
    from mxplain_gradcam.compare import Compare

    assert "editor" not in Compare.requirements({})  # optional: without one it skips the sweep
    assert "editor" in Compare.uses({}) and Compare.requirements({}) <= Compare.uses({})


def test_backward_scores_count_counterfactuals_only():
    """A tile-direction whose target was unreachable (met at the start: no change asked) or
    missed is no counterfactual: it enters neither the sign agreement nor the reached share (the
    quickstart's table read 9 % and 81 % over every tile-direction where the backward explainer
    reached 100 % of its reachable targets with every lot-mean direction right)."""
    from mxplain_gradcam.compare_scores import _backward_agreement, _backward_faithfulness

    cube = hand_cube()
    truth = cube["true_sensitivity"].values
    full = _backward_agreement(cube, truth)
    nl, nt = cube.sizes["lot"], cube.sizes["tile"]
    reach = np.ones((nl, nt, 2), bool)
    reach[:, :, 1] = False  # every decrease unreachable
    conv = np.ones((nl, nt, 2), bool)
    conv[0, 0, 0] = False  # one increase missed
    cube["backward_reachable"] = (("lot", "tile", "direction"), reach)
    cube["backward_converged"] = (("lot", "tile", "direction"), conv)
    only = _backward_agreement(cube, truth)
    assert only["pairs"] < full["pairs"]
    cf = reach & conv
    ba = cube["backward_attributes"].values - cube["lot_attributes"].values[:, None, None]
    scored = np.abs(truth) > 0  # none of the hand cube's true effects is negligible
    ok = cf[..., None] & (np.abs(ba) > 1e-3) & scored[:, None, None]
    agree = np.sign(ba) == np.sign(truth[:, None, None] * np.array([1, -1])[None, None, :, None])
    assert only == {"agreement": pytest.approx(agree[ok].mean()), "pairs": int(ok.sum())}
    # reached share over the reachable targets: the increases, (1.5 - 1) / (2 - 1) = 0.5 each
    cube["backward_prediction"][:, :, 1] = 1.0  # decreases did not move: would pull it to 0
    assert _backward_faithfulness(cube) == pytest.approx(0.5)
    assert _backward_faithfulness(cube.drop_vars("backward_reachable")) == pytest.approx(0.25)
