import numpy as np
import pytest
import torch
from attribute_fakes import (
    ATTRS,
    TRUE_SLOPES,
    FakeEditor,
    FakePredictor,
    NumpyPredictor,
    build_cube,
    make_ctx,
    make_lots,
)

from mxplain import plugins
from mxplain.errors import UserError
from mxplain_attribute.backward import BackwardCounterfactual, score_backward


def _check_result(out, lot, tol=0.01):
    x = out["backward_attributes"]
    n = len(lot.tiles)
    assert x.shape == (n, 2, 4) and x.dtype == np.float32
    assert out["backward_converged"].dtype == bool
    assert out["backward_iterations"].dtype == np.int32
    assert (x >= 0).all() and (x <= 1).all()
    p, t = out["backward_prediction"], out["backward_target"]
    reached = np.abs(p - t) <= tol * np.abs(t) + 1e-3
    assert reached.mean() >= 0.95
    np.testing.assert_array_equal(out["backward_converged"], np.abs(p - t) <= tol * np.abs(t))
    return x - lot.attributes[None, None]


def test_registered_and_method_choice():
    assert plugins.get("explainer", "backward") is BackwardCounterfactual
    b = BackwardCounterfactual()
    assert b.resolve_method(make_ctx()) == "gradient"
    assert b.resolve_method(make_ctx(predictor=NumpyPredictor())) == "spsa"
    with pytest.raises(UserError, match="not differentiable"):
        BackwardCounterfactual(optimizer="gradient").resolve_method(
            make_ctx(predictor=NumpyPredictor()))
    with pytest.raises(UserError, match="targets"):
        BackwardCounterfactual(targets=(0.1,)).variables(make_ctx())


def test_gradient_reaches_targets_sparse_and_directional():
    lot = make_lots(n_lots=1, n_tiles=12)[0]
    editor = FakeEditor()
    b = BackwardCounterfactual(batch_size=8)  # 4 tiles per chunk (x 2 directions)
    out = b.explain_lot(lot, make_ctx(editor=editor))
    assert editor.encoded_rows == 12  # every tile encoded once
    change = _check_result(out, lot)
    # relative targets: +-10 % of the reconstruction's prediction
    a = torch.as_tensor(lot.attributes)[None].repeat(12, 1)
    p0 = FakePredictor().forward(FakeEditor().edit(lot.tiles, a)).numpy()
    np.testing.assert_allclose(out["backward_target"][:, 0], 1.1 * p0, rtol=1e-5)
    np.testing.assert_allclose(out["backward_target"][:, 1], 0.9 * p0, rtol=1e-5)
    # polydispersity has no effect: it never moves (L1 proximal step keeps it at A exactly)
    assert np.abs(change[..., 2]).max() == 0.0
    # every effective attribute moves the way its slope says, per direction
    sgn = np.sign(TRUE_SLOPES)
    for k in (0, 1, 3):
        assert (np.sign(change[:, 0, k]) == sgn[k]).all()
        assert (np.sign(change[:, 1, k]) == -sgn[k]).all()
    assert out["backward_iterations"].max() < 200
    assert b.method_ == "gradient"


def test_spsa_path_for_non_differentiable_predictor(tmp_path):
    lots = make_lots(n_lots=2, n_tiles=5)
    ctx = make_ctx(tmp_path, predictor=NumpyPredictor())
    b = BackwardCounterfactual(batch_size=16)
    for lot in lots[:1]:
        out = b.explain_lot(lot, ctx)
        change = _check_result(out, lot)
        assert np.abs(change[..., 2]).max() < 0.05  # zero-effect attribute nearly unchanged
        assert (np.sign(change[:, 0, 0]) == 1).all() and (np.sign(change[:, 1, 0]) == -1).all()
    cube = build_cube(b, lots, ctx)
    m = b.summarize(cube, ctx)
    assert m["method"] == "spsa"
    assert m["reached_share"]["increase"] >= 0.95 and m["reached_share"]["decrease"] >= 0.95


def test_absolute_targets_and_lambda():
    lot = make_lots(n_lots=1, n_tiles=4)[0]
    b = BackwardCounterfactual(targets=(650.0, 550.0), target_mode="absolute", lam=1.0)
    out = b.explain_lot(lot, make_ctx())
    np.testing.assert_array_equal(out["backward_target"], np.tile([650.0, 550.0], (4, 1)))
    _check_result(out, lot)
    # a tiny lambda makes the L1 term win: A' = A, target not reached
    weak = BackwardCounterfactual(lam=1e-9).explain_lot(lot, make_ctx())
    np.testing.assert_allclose(weak["backward_attributes"], np.broadcast_to(
        lot.attributes, (4, 2, 4)), atol=1e-7)
    assert not weak["backward_converged"].any()


def test_summarize_scores_law_and_writes_figures(tmp_path):
    lots = make_lots(n_lots=3, n_tiles=4)
    truth = np.array(TRUE_SLOPES) / 100.0
    ctx = make_ctx(tmp_path)
    b = BackwardCounterfactual()
    cube = build_cube(b, lots, ctx, truth=truth)
    m = b.summarize(cube, ctx)
    assert m["method"] == "gradient" and m["tiles"] == 4 + 5 + 6
    assert m["reached_share"] == {"increase": 1.0, "decrease": 1.0}
    assert m["direction_agreement_overall"] == 1.0
    assert m["direction_agrees"]["increase"] == {"size": True, "porosity": True,
                                                 "facetness": True}
    assert m["direction_lot_share"]["decrease"]["size"] == 1.0
    assert m["mean_change"]["increase"]["polydispersity"] == 0.0
    for name in ("backward_fig6_tile_counterfactual.png", "backward_fig7_lot_mean_change.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 5000
    flipped = cube.assign(true_sensitivity=-cube["true_sensitivity"])
    assert score_backward(flipped, list(ATTRS))["direction_agreement_overall"] == 0.0


def test_score_backward_hand_built_cube():
    import xarray as xr

    base = np.array([[0.5, 0.5], [0.2, 0.8]])
    # lot 0: 2 tiles, lot 1: 1 tile (+ 1 padded)
    xa = np.full((2, 2, 2, 2), np.nan)
    xa[0, 0] = [[0.7, 0.5], [0.3, 0.6]]
    xa[0, 1] = [[0.6, 0.4], [0.4, 0.5]]
    xa[1, 0] = [[0.1, 0.8], [0.3, 0.9]]  # lot 1 increase moves attr0 the wrong way
    conv = np.zeros((2, 2, 2), bool)
    conv[0, 0] = [True, True]
    conv[0, 1] = [True, False]
    conv[1, 0] = [False, True]
    cube = xr.Dataset({
        "tile_mask": (("lot", "tile"), np.array([[True, True], [True, False]])),
        "lot_attributes": (("lot", "attribute"), base),
        "backward_attributes": (("lot", "tile", "direction", "attribute"), xa),
        "backward_converged": (("lot", "tile", "direction"), conv),
        "backward_iterations": (("lot", "tile", "direction"), np.ones((2, 2, 2), np.int32)),
        "true_sensitivity": (("lot", "attribute"), np.array([[1.0, 0.0], [1.0, 0.0]])),
    })
    m = score_backward(cube, ["a", "b"])
    assert m["tiles"] == 3
    assert m["reached_share"] == {"increase": pytest.approx(2 / 3),
                                  "decrease": pytest.approx(2 / 3)}
    # increase, attr a: changes +0.2, +0.1, -0.1 -> mean +0.0667 > 0: agrees; lot 1 does not
    assert m["mean_change"]["increase"]["a"] == pytest.approx(0.2 / 3)
    assert m["direction_agrees"]["increase"] == {"a": True}  # b is negligible (truth 0)
    assert m["direction_lot_share"]["increase"]["a"] == 0.5
    # decrease, attr a: -0.2, -0.1, +0.1 -> agrees; lot shares: lot0 yes, lot1 no
    assert m["direction_agrees"]["decrease"] == {"a": True}
    assert m["direction_lot_share"]["decrease"]["a"] == 0.5
    assert m["direction_agreement_overall"] == 1.0
