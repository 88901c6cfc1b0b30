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
    b = BackwardCounterfactual(batch_size=8, restarts=0)  # 4 tiles per chunk (x 2 directions)
    out = b.explain_lot(lot, make_ctx(editor=editor))
    assert editor.encoded_rows == 12 + 1  # every tile encoded once, the example tile again
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
    weak = BackwardCounterfactual(lam=1e-9, probe_start=False).explain_lot(lot, make_ctx())
    np.testing.assert_allclose(weak["backward_attributes"], np.broadcast_to(
        lot.attributes, (4, 2, 4)), atol=1e-7)
    assert not weak["backward_converged"].any() and weak["backward_reachable"].all()


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
    # averages count converged tiles only: increase, attr a: +0.2, +0.1 (lot 1's -0.1 missed
    # its target) -> +0.15, agrees; lot 1 has no converged tile and is not scored
    assert m["mean_change"]["increase"]["a"] == pytest.approx(0.15)
    assert m["mean_change_tiles"] == {"increase": 2, "decrease": 2}
    assert m["direction_agrees"]["increase"] == {"a": True}  # b is negligible (truth 0)
    assert m["direction_lot_share"]["increase"]["a"] == 1.0
    # decrease, attr a: -0.2, +0.1 (lot 0 tile 1's -0.1 missed) -> -0.05, agrees; lot shares:
    # lot0 yes, lot1 no
    assert m["mean_change"]["decrease"]["a"] == pytest.approx(-0.05)
    assert m["direction_agrees"]["decrease"] == {"a": True}
    assert m["direction_lot_share"]["decrease"]["a"] == 0.5
    assert m["direction_agreement_overall"] == 1.0


def test_thread_count_does_not_change_counterfactuals():
    """The search runs with ``threads`` (1) torch threads whatever the caller's count: a two-thread
    process (``mxplain run``) and a one-thread Dask worker write the same bits. Before, the
    gradient of an odd batch of still-active rows changed in its last bits with the thread count
    (torch splits the conv-transpose backward's reductions by thread) and the line search turned
    that into different iterates."""
    from attribute_fakes import ConvEditor, ConvPredictor

    lot = make_lots(n_lots=1, n_tiles=6, size=64)[0]
    ctx = make_ctx(predictor=ConvPredictor(), editor=ConvEditor())
    old = torch.get_num_threads()
    for steps in (0, 3):  # without and with the continuation of lam
        outs = []
        try:
            for n in (2, 1):
                torch.set_num_threads(n)
                outs.append(BackwardCounterfactual(max_iter=40, batch_size=16,
                                                   lam_steps=steps).explain_lot(lot, ctx))
                assert torch.get_num_threads() == n  # the caller's count is restored
        finally:
            torch.set_num_threads(old)
        it = outs[0]["backward_iterations"]
        if not steps:  # rows stop at different times, some before max_iter: odd active
            # batches (the counts themselves differ by CPU: below 20 on one machine, 25-40 on
            # another)
            assert len(np.unique(it)) >= 3 and it.min() < 40, it
        for name in outs[0]:
            np.testing.assert_array_equal(outs[0][name], outs[1][name], err_msg=name)


def _linear_range(lot):
    """The fakes' exact reachable range: the law is linear, so its extremes are box corners."""
    a = torch.as_tensor(lot.attributes)[None].repeat(len(lot.tiles), 1)
    p0 = FakePredictor().forward(FakeEditor().edit(lot.tiles, a)).numpy().astype(np.float64)
    coef = np.asarray(TRUE_SLOPES)
    up = np.where(coef > 0, 1 - lot.attributes, -lot.attributes) @ coef
    down = np.where(coef > 0, -lot.attributes, 1 - lot.attributes) @ coef
    return p0, p0 + up, p0 + down


def test_reachable_targets_are_shares_of_the_probed_range():
    lot = make_lots(n_lots=1, n_tiles=5)[0]
    b = BackwardCounterfactual(targets=(0.5, -0.25), target_mode="reachable")
    out = b.explain_lot(lot, make_ctx())
    p0, hi, lo = _linear_range(lot)
    np.testing.assert_allclose(out["backward_reachable_prediction"][:, 0], hi, rtol=1e-5)
    np.testing.assert_allclose(out["backward_reachable_prediction"][:, 1], lo, rtol=1e-5)
    np.testing.assert_allclose(out["backward_target"][:, 0], p0 + 0.5 * (hi - p0), rtol=1e-5)
    np.testing.assert_allclose(out["backward_target"][:, 1], p0 + 0.25 * (lo - p0), rtol=1e-5)
    assert out["backward_reachable"].all()
    _check_result(out, lot)


def test_unreachable_targets_are_counted_separately(tmp_path):
    lots = make_lots(n_lots=2, n_tiles=4)
    ctx = make_ctx(tmp_path, truth=np.array(TRUE_SLOPES))
    # +20 % is beyond lot 1's box (+18 %), -21 % beyond lot 0's (-19.6 %), by more than the tolerance
    b = BackwardCounterfactual(targets=(0.2, -0.21), restarts=0)
    cube = build_cube(b, lots, ctx, truth=np.array(TRUE_SLOPES))
    reach = cube["backward_reachable"].values
    for i, lot in enumerate(lots):
        p0, hi, lo = _linear_range(lot)
        n = len(lot.tiles)
        np.testing.assert_array_equal(reach[i, :n, 0], 1.2 * p0 <= hi + 1e-3)
        np.testing.assert_array_equal(reach[i, :n, 1], 0.8 * p0 >= lo - 1e-3)
    m = b.summarize(cube, ctx)
    mask = cube["tile_mask"].values
    conv = cube["backward_converged"].values
    for j, d in enumerate(("increase", "decrease")):
        r = reach[..., j][mask]
        assert 0 < r.sum() < r.size  # both kinds present
        assert m["reachable"][d] == r.sum() and m["unreachable"][d] == (~r).sum()
        assert m["reached_share"][d] == pytest.approx(conv[..., j][mask][r].mean())
        assert m["reached_share"][d] == 1.0  # every reachable target is reached
        assert m["reached_share_all"][d] == pytest.approx(conv[..., j][mask].mean())
        assert m["reached_share_all"][d] < 1.0
        assert m["reached_unreachable"][d] == 0
    fig = tmp_path / "figures" / "backward_fig7_lot_mean_change.png"
    assert fig.stat().st_size > 5000


def test_restart_spread_measures_the_stability_of_a_prime():
    lot = make_lots(n_lots=1, n_tiles=5)[0]
    editor = FakeEditor()
    ctx = make_ctx(editor=editor)
    b = BackwardCounterfactual(restarts=3, restart_tiles=4, restart_radius=0.3, batch_size=64)
    names = set(b.variables(ctx))
    out = b.explain_lot(lot, ctx)
    assert set(out) == names
    assert editor.encoded_rows == 5 + 1  # every tile once (restarts share the main search's
    # latent), the example tile again
    spread = out["backward_restart_spread"]
    assert spread.shape == (2, 4) and spread.dtype == np.float32
    # the zero-effect attribute keeps what its start gave it (no gradient, the search stops at the
    # target): the spread shows the solution is not unique there; effective attributes spread too
    assert (spread > 0.01).all()
    np.testing.assert_array_equal(b.explain_lot(lot, ctx)["backward_restart_spread"], spread)
    again = BackwardCounterfactual(restarts=3, restart_tiles=4, restart_radius=1e-6)
    assert again.explain_lot(lot, ctx)["backward_restart_spread"].max() < 1e-3
    x = out["backward_attributes"]
    np.testing.assert_allclose(out["backward_tile_spread"], x.std(axis=0), rtol=1e-6)
    off = BackwardCounterfactual(restarts=0)
    assert "backward_restart_spread" not in off.variables(ctx)
    assert "backward_restart_spread" not in off.explain_lot(lot, ctx)


def test_summarize_reports_stability(tmp_path):
    lots = make_lots(n_lots=3, n_tiles=3)
    ctx = make_ctx(tmp_path)
    b = BackwardCounterfactual(restarts=2, restart_tiles=2)
    cube = build_cube(b, lots, ctx)
    st = b.summarize(cube, ctx)["stability"]
    rs = cube["backward_restart_spread"].values
    assert st["restart_spread"]["increase"]["size"] == pytest.approx(rs[:, 0, 0].mean())
    assert st["restart_spread_max"] == pytest.approx(rs.max())
    assert st["unstable_share"] == pytest.approx((rs.max(axis=2) > 0.1).mean())
    ts = cube["backward_tile_spread"].values
    assert st["tile_spread"]["decrease"]["facetness"] == pytest.approx(ts[:, 1, 3].mean())


@pytest.mark.parametrize("params, key", [
    ({"threads": 0}, "threads"), ({"threads": 1.5}, "threads"), ({"restarts": -1}, "restarts"),
    ({"restart_tiles": -2}, "restart_tiles"), ({"restart_radius": 0.0}, "restart_radius"),
    ({"restart_radius": 2.0}, "restart_radius"), ({"target_mode": "spread"}, "target_mode"),
    ({"target_mode": "reachable"}, "targets"),  # +-0.10 is fine: shares of the range
    ({"target_mode": "reachable", "targets": (1.5, -0.5)}, "targets"),
    ({"target_mode": "reachable", "targets": (0.5, 0.5)}, "targets"),
    ({"targets": (float("nan"), -0.1)}, "targets"), ({"lr": float("nan")}, "lr"),
])
def test_bad_values_are_one_user_error(params, key):
    if params == {"target_mode": "reachable"}:
        BackwardCounterfactual(**params)  # the default +-0.10 shares are valid
        return
    with pytest.raises(UserError, match=rf"^\[explain.backward\] {key} = "):
        BackwardCounterfactual(**params)


def test_config_refuses_bad_keys_before_training():
    from mxplain import config

    raw = {"data": {"name": "synthetic"}, "predictor": {"name": "wideresnet"},
           "editor": {"name": "attgan"},
           "explain": {"backward": {"target_mode": "reachable", "targets": [2.0, -0.5]}}}
    with pytest.raises(UserError, match=r"\[explain.backward\] targets = \[2.0, -0.5\]"):
        config.resolve(raw)
    raw["explain"]["backward"] = {"threads": 0}
    with pytest.raises(UserError, match="threads"):
        config.resolve(raw)
    raw["explain"]["backward"] = {"target_mode": "reachable", "targets": [0.5, -0.5],
                                  "restarts": 1}
    assert config.resolve(raw)["explain"]["backward"]["restart_tiles"] == 2


def test_a_reachable_target_met_at_the_start_is_not_counted_reachable():
    b = BackwardCounterfactual(targets=(0.5, -0.5), target_mode="reachable", tol=0.01)
    p0 = torch.tensor([100.0, 100.0])
    low, high = torch.tensor([99.5, 90.0]), torch.tensor([101.5, 110.0])
    target, ext, reach = b._targets(p0, low, high)
    torch.testing.assert_close(target, torch.tensor([[100.75, 99.75], [105.0, 95.0]]))
    # tile 0: its range up (1.5) exceeds the tolerance (1.0) but half of it (0.75) does not:
    # A' = A would "reach" that target, so it is not a counterfactual
    assert reach.tolist() == [[False, False], [True, True]]


def test_counterfactual_example_is_in_the_cube():
    """Figure 6's hypothetical tiles are written with the lot (``backward_example_edit``: the
    lot's first tile decoded at its own A' of each direction), under the explainer's thread count
    and without touching the global generators (what runs after it sees the same random state)."""
    import torch

    from mxplain.interfaces import latent_take
    from mxplain.store import to_uint8

    lot = make_lots(n_lots=1, n_tiles=3)[0]
    editor = FakeEditor()
    b = BackwardCounterfactual(max_iter=20, restarts=0, n_boot=0)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    out = b.explain_lot(lot, make_ctx(editor=editor))
    assert torch.equal(torch.get_rng_state(), before)
    ex = out["backward_example_edit"]
    assert ex.dtype == np.uint8 and ex.shape == (2, 32, 32)
    with torch.no_grad():
        lat = latent_take(editor.encode(lot.tiles[:1]), torch.zeros(2, dtype=torch.long))
        want = to_uint8(editor.decode(lat, torch.as_tensor(out["backward_attributes"][0])))
    np.testing.assert_array_equal(ex, want)
    assert ex[0].astype(int).mean() > ex[1].astype(int).mean()  # increase brightens (FakeEditor)


class CountingEditor(FakeEditor):
    """FakeEditor counting decoded rows with and without autograd."""

    def __init__(self):
        super().__init__()
        self.rows = {True: 0, False: 0}

    def decode(self, latent, attributes):
        self.rows[torch.is_grad_enabled()] += len(attributes)
        return super().decode(latent, attributes)


def test_search_is_one_pass_an_iteration_in_a_refilled_active_set():
    """The sufficient-decrease test is fused into the next gradient pass (one decode + predict +
    backward a row and iteration, one at its start, none without gradient) and rows run in one
    active set of at most ``batch_size`` rows refilled as rows stop: the same answers as all rows
    at once."""
    lot = make_lots(n_lots=1, n_tiles=6)[0]
    editor = CountingEditor()
    latent = editor.encode(lot.tiles)
    tiles = torch.arange(6).repeat_interleave(2)
    a = torch.as_tensor(lot.attributes)
    p0 = FakePredictor().forward(editor.decode(latent, a.expand(6, -1)))
    target = (p0[:, None] * torch.tensor([1.1, 0.9])).reshape(-1)
    outs = []
    for bs in (128, 5):
        editor.rows = {True: 0, False: 0}
        b = BackwardCounterfactual(batch_size=bs, max_iter=60)
        outs.append(b.optimize(editor, FakePredictor(), latent, a, target, "gradient",
                               tiles=tiles))
        x, pred, conv, it = outs[-1]
        assert conv.all() and (it >= 2).all()
        assert editor.rows == {True: 12 + int(it.sum()), False: 0}
    for one, other in zip(*outs):
        torch.testing.assert_close(one, other, rtol=0, atol=1e-6)


def test_probe_takes_the_endpoints_and_the_two_additive_extremes():
    """1 + 2K endpoint rows and 2 extreme rows a tile; an attribute without effect stays at A."""
    from mxplain_attribute.backward_solve import additive_extremes, endpoint_points

    a = torch.tensor([0.3, 0.6, 0.5])
    pts = endpoint_points(a)
    p = (pts * torch.tensor([2.0, -1.0, 0.0])).sum(1)[None]
    torch.testing.assert_close(additive_extremes(a, p),
                               torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]]))
    lot = make_lots(n_lots=1, n_tiles=3)[0]
    editor = CountingEditor()
    b = BackwardCounterfactual(target_mode="reachable", targets=(0.5, -0.5))
    p0, low, high = b._probe(editor, FakePredictor(), editor.encode(lot.tiles),
                             torch.as_tensor(lot.attributes), 3)
    assert editor.rows == {True: 0, False: 3 * (1 + 2 * 4 + 2)}
    want_p0, want_high, want_low = _linear_range(lot)
    torch.testing.assert_close(high.double(), torch.as_tensor(want_high), rtol=1e-5, atol=0)
    torch.testing.assert_close(low.double(), torch.as_tensor(want_low), rtol=1e-5, atol=0)


def test_probe_reads_the_start_and_the_endpoints_the_run_already_predicted():
    """With the pipeline's reconstruction_prediction and forward's sweep in ``ctx.lot_results``
    the probe predicts only its two additive extremes a tile, and the answers are the same."""
    import dataclasses

    from mxplain_attribute.forward import ForwardSweep

    lot = make_lots(n_lots=1, n_tiles=4)[0]
    editor = CountingEditor()
    ctx = make_ctx(editor=editor)
    b = BackwardCounterfactual(target_mode="reachable", targets=(0.5, -0.5), restarts=0,
                               n_boot=0)
    alone = b.explain_lot(lot, ctx)
    probe_alone = editor.rows[False]
    fwd = ForwardSweep(steps=5, n_boot=0).explain_lot(lot, ctx)
    a = torch.as_tensor(lot.attributes)[None].repeat(4, 1)
    rec = FakePredictor().forward(FakeEditor().edit(lot.tiles, a)).numpy()
    reader = dataclasses.replace(
        ctx, lot_results={"forward_prediction": fwd["forward_prediction"],
                          "reconstruction_prediction": rec},
        cube_coords={"value": np.linspace(0.0, 1.0, 5)})
    editor.rows = {True: 0, False: 0}
    read = b.explain_lot(lot, reader)
    assert probe_alone == 4 * (1 + 2 * 4 + 2) + 2  # + the example tile's two edits
    assert editor.rows[False] == 4 * 2 + 2
    for name in alone:
        np.testing.assert_allclose(read[name], alone[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert "forward_prediction" in BackwardCounterfactual.reads_optional


def test_corners_probe_is_the_probe_before_issue_20():
    """``probe = "corners"``: a, the 2K endpoints and the 2^K box corners (25 rows a tile at K = 4);
    on the fakes' linear law both probes find the exact range."""
    lot = make_lots(n_lots=1, n_tiles=3)[0]
    editor = CountingEditor()
    b = BackwardCounterfactual(probe="corners")
    p0, low, high = b._probe(editor, FakePredictor(), editor.encode(lot.tiles),
                             torch.as_tensor(lot.attributes), 3)
    assert editor.rows == {True: 0, False: 3 * 25}
    want_p0, want_high, want_low = _linear_range(lot)
    torch.testing.assert_close(high.double(), torch.as_tensor(want_high), rtol=1e-5, atol=0)
    with pytest.raises(UserError, match=r"^\[explain.backward\] probe = 'all'"):
        BackwardCounterfactual(probe="all")


def test_figure6_says_why_a_lot_has_no_bars_and_prints_plain_numbers(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from mxplain_attribute.backward_figures import _figure6

    lots = make_lots(n_lots=3, n_tiles=4)
    ctx = make_ctx(tmp_path)
    ctx.property_units = "psi"
    cube = build_cube(BackwardCounterfactual(), lots, ctx, truth=np.array(TRUE_SLOPES) / 100.0)
    pred = cube["backward_prediction"].values.copy()
    pred[0, 0] = [2043.7, 1999.2]
    reach = np.ones(cube["backward_converged"].shape, bool)
    reach[1] = False  # lot 1: neither target reachable
    cube = cube.assign(backward_prediction=(cube["backward_prediction"].dims, pred),
                       backward_reachable=(cube["backward_converged"].dims, reach))
    base = np.asarray(cube["lot_attributes"].values)
    fig = _figure6(cube, ctx, list(ATTRS), [("low", 0), ("high", 1)], base)
    titles = [ax.get_title() for ax in fig.axes]
    assert "increase: predicted 2040 psi" in titles and not any("e+" in t for t in titles)
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes[3::4]]
    assert texts[0] == []  # lot 0 has bars
    assert texts[1] and "both targets unreachable" in texts[1][0]


class PlateauPredictor(FakePredictor):
    """A property on a plateau up to the top tenth of the attribute's range, then a step (with the
    editor below, brightness 0.4 + 0.1 a): from inside the plateau the gradient of the squared
    miss is too weak against the L1 price of a move, so eq. 2 with one ``lam`` stops where it
    starts."""

    name = "plateau-predictor"

    def forward(self, tiles):
        a = (tiles.mean(dim=(1, 2, 3)) - 0.4) / 0.1
        return 500.0 + 30.0 * torch.sigmoid(30.0 * (a - 0.85))


@pytest.mark.parametrize("method", ["gradient", "spsa"])
def test_lam_continuation_reaches_what_one_lam_stops_short_of(method):
    lot = make_lots(n_lots=1, n_tiles=6)[0]
    editor, pred = FakeEditor(coef=(0.1, 0.0, 0.0, 0.0)), PlateauPredictor()
    latent = editor.encode(lot.tiles)
    a = torch.as_tensor(lot.attributes)
    top = pred.forward(editor.decode(latent, torch.tensor([1.0, *a[1:]]).expand(6, -1)))
    base = pred.forward(editor.decode(latent, a.expand(6, -1)))
    target = top - 8.0  # on the step, below its top
    assert ((target - base).abs() > 0.01 * target).all()  # and not met at the start
    runs = {s: BackwardCounterfactual(lam_steps=s, max_iter=400).optimize(
        editor, pred, latent, a, target, method) for s in (0, 3)}
    x0, _, conv0, _ = runs[0]
    x3, p3, conv3, _ = runs[3]
    assert not conv0.all()  # one lam: a stationary point short of the target
    assert conv3.all()  # the continuation reaches every target
    assert ((p3 - target).abs() <= 0.01 * target.abs()).all()
    torch.testing.assert_close(x3[conv0], x0[conv0])  # what one lam found is unchanged
    assert (x3[:, 0] > x0[:, 0] + 0.2).all() and (x3[:, 1:] == a[1:]).all()


def test_lam_steps_is_checked():
    with pytest.raises(UserError, match=r"^\[explain.backward\] lam_steps = -1"):
        BackwardCounterfactual(lam_steps=-1)


def test_a_missed_reachable_target_is_solved_again_from_the_probes_point():
    """From inside the plateau the search from A stops where it starts (no continuation here);
    the probe saw the step (attribute 0 at 1), so the tile is solved again from there and reaches
    its target; the unreachable decrease is not solved again."""
    lot = make_lots(n_lots=1, n_tiles=4)[0]
    ctx = make_ctx(predictor=PlateauPredictor(), editor=FakeEditor(coef=(0.1, 0.0, 0.0, 0.0)))
    kw = dict(targets=(522.0, 490.0), target_mode="absolute", lam_steps=0, restarts=0)
    off = BackwardCounterfactual(probe_start=False, **kw).explain_lot(lot, ctx)
    on = BackwardCounterfactual(**kw).explain_lot(lot, ctx)
    assert off["backward_reachable"][:, 0].all() and not off["backward_reachable"][:, 1].any()
    assert not off["backward_converged"].any()
    np.testing.assert_allclose(off["backward_attributes"][:, 0], np.broadcast_to(
        lot.attributes, (4, 4)), atol=1e-6)  # stuck at A
    assert on["backward_converged"][:, 0].all() and not on["backward_converged"][:, 1].any()
    assert (np.abs(on["backward_prediction"][:, 0] - 522.0) <= 5.22).all()
    np.testing.assert_array_equal(on["backward_attributes"][:, 1], off["backward_attributes"][:, 1])
    assert (on["backward_iterations"][:, 0] > off["backward_iterations"][:, 0]).all()
