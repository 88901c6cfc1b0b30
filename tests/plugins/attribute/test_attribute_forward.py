import numpy as np
import pytest
import torch
from attribute_fakes import (
    ATTRS,
    COEF,
    TRUE_SLOPES,
    FakeEditor,
    FakePredictor,
    build_cube,
    make_ctx,
    make_lots,
)

from mxplain import plugins
from mxplain.errors import UserError
from mxplain_attribute.forward import ForwardSweep, score_forward, slopes


def test_registered():
    assert plugins.get("explainer", "forward") is ForwardSweep
    fs = plugins.create("explainer", "forward", steps=5)
    assert fs.steps == 5 and fs.requires_editor


def test_recovers_known_slopes_and_signs():
    lots = make_lots(n_lots=2, n_tiles=6)
    ctx = make_ctx()
    fs = ForwardSweep(steps=11, batch_size=64)
    out = fs.explain_lot(lots[0], ctx)
    assert out["forward_prediction"].shape == (6, 4, 11)
    assert out["forward_prediction"].dtype == np.float32
    np.testing.assert_allclose(out["sensitivity"], TRUE_SLOPES, atol=0.05)
    assert np.array_equal(np.sign(np.round(out["sensitivity"], 2)), np.sign(TRUE_SLOPES))
    # the step value of the swept attribute equals value[step]: prediction is linear in it
    fp = out["forward_prediction"].astype(np.float64)
    np.testing.assert_allclose(fp[:, 0, -1] - fp[:, 0, 0], TRUE_SLOPES[0], atol=0.05)
    # at the lot's own value the prediction equals the unedited reconstruction's prediction
    a = torch.as_tensor(lots[0].attributes)[None].repeat(6, 1)
    p_rec = FakePredictor().forward(FakeEditor().edit(lots[0].tiles, a)).numpy()
    vals = fs.values()
    interp = [np.interp(lots[0].attributes[0], vals, fp[t, 0]) for t in range(6)]
    np.testing.assert_allclose(interp, p_rec, atol=0.05)


def test_flipping_the_law_flips_the_sensitivities():
    lot = make_lots(n_lots=1, n_tiles=4)[0]
    fs = ForwardSweep(steps=5)
    s1 = fs.explain_lot(lot, make_ctx())["sensitivity"]
    s2 = fs.explain_lot(lot, make_ctx(editor=FakeEditor(tuple(-c for c in COEF))))["sensitivity"]
    np.testing.assert_allclose(s2, -s1, atol=0.05)
    assert s1[0] > 90 and s2[0] < -90


def test_encode_once_per_tile_and_batched_equals_naive():
    lot = make_lots(n_lots=1, n_tiles=7)[0]
    editor = FakeEditor()
    ctx = make_ctx(editor=editor)
    fs = ForwardSweep(steps=6, batch_size=16)  # 7*4*6 = 168 edits in 11 decode batches
    out = fs.explain_lot(lot, ctx)["forward_prediction"]
    # the sweep encodes each tile once; the example tile of figure 4a is encoded once more
    assert editor.encoded_rows == 7 + 1 and editor.encode_calls == 1 + 1
    fs3 = ForwardSweep(steps=6, batch_size=3)  # encode chunks of 3 tiles: 3 calls, 7 rows
    ed3 = FakeEditor()
    out3 = fs3.explain_lot(lot, make_ctx(editor=ed3))["forward_prediction"]
    assert ed3.encoded_rows == 7 + 1 and ed3.encode_calls == 3 + 1
    # naive: one tile, one attribute value at a time
    naive = np.zeros_like(out)
    pred, ed = FakePredictor(), FakeEditor()
    with torch.no_grad():
        for t in range(7):
            for k in range(4):
                for s, v in enumerate(fs.values()):
                    a = torch.as_tensor(lot.attributes).clone()[None]
                    a[0, k] = float(v)
                    naive[t, k, s] = pred.forward(ed.edit(lot.tiles[t : t + 1], a)).item()
    np.testing.assert_allclose(out, naive, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(out3, naive, rtol=1e-6, atol=1e-3)


def test_slope_estimators_robust_to_outlier_tiles():
    values = np.linspace(0, 1, 11)
    rng = np.random.default_rng(0)
    n = 20
    preds = (2.0 * values[None, None, :] + rng.normal(0, 0.01, (n, 1, 11))
             + rng.normal(0, 5, (n, 1, 1)))
    preds[:3, 0] = -50.0 * values  # three outlier tiles with a wild opposite slope
    ts = slopes(preds, values, "theil-sen")[0]
    med = slopes(preds, values, "median")[0]
    ols = slopes(preds, values, "ols")[0]
    assert abs(ts - 2.0) < 0.1 and abs(med - 2.0) < 0.1
    assert ols < -5.0  # the plain mean is dragged by the outliers: (17*2 - 3*50)/20 = -5.8
    with pytest.raises(UserError, match="robust"):
        slopes(preds, values, "lasso")


def test_score_forward_on_hand_built_numbers():
    truth = np.array([[1.0, -0.5, 0.05, 0.0], [1.0, -0.5, 0.05, 0.0], [1.0, -0.5, 0.05, 0.0]])
    sens = np.array([[2.0, -1.0, -3.0, 0.3],    # signs right; ranking |s| wrong for attr 2
                     [0.5, 0.2, 0.0, 0.0],      # porosity sign wrong
                     [-1.0, -0.1, 0.0, 0.0]])   # size sign wrong
    m = score_forward(sens, truth, ATTRS)
    # only size and porosity are non-negligible (0.05 <= 0.1 * 1.0)
    assert set(m["sign_agreement"]) == {"size", "porosity"}
    assert m["sign_agreement"]["size"] == pytest.approx(2 / 3)
    assert m["sign_agreement"]["porosity"] == pytest.approx(2 / 3)
    assert m["sign_agreement_overall"] == pytest.approx(4 / 6)
    assert m["scored_pairs"] == 6
    from scipy.stats import spearmanr
    expect = np.mean([spearmanr(np.abs(s), np.abs(t))[0] for s, t in zip(sens, truth)])
    assert m["rank_spearman"] == pytest.approx(expect)


def test_summarize_scores_and_writes_figures(tmp_path):
    lots = make_lots(n_lots=3, n_tiles=4)
    truth = np.array(TRUE_SLOPES) / 100.0
    ctx = make_ctx(tmp_path, truth=dict(zip(ATTRS, truth)))
    fs = ForwardSweep(steps=5)
    cube = build_cube(fs, lots, ctx, truth=truth)
    assert cube["forward_prediction"].dims == ("lot", "tile", "attribute", "step")
    assert np.isnan(cube["forward_prediction"].values[0, 4:]).all()  # padded tiles
    m = fs.summarize(cube, ctx)
    assert m["sign_agreement_overall"] == 1.0
    assert m["sign_agreement"] == {"size": 1.0, "porosity": 1.0, "facetness": 1.0}
    assert m["rank_spearman"] == pytest.approx(1.0)
    assert m["sensitivity_median"]["size"] == pytest.approx(100.0, abs=0.1)
    for name in ("forward_fig4a_tile_curve.png", "forward_fig4b_lot_boxplot.png",
                 "forward_fig5_attribute_panel.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 5000
    # a flipped law scores zero
    cube2 = cube.assign(true_sensitivity=-cube["true_sensitivity"])
    assert fs.summarize(cube2, make_ctx(None))["sign_agreement_overall"] == 0.0


def test_bad_params_are_user_errors():
    with pytest.raises(UserError, match="steps"):
        ForwardSweep(steps=1).variables(make_ctx())
    with pytest.raises(UserError, match="predictor"):
        ForwardSweep().explain_lot(make_lots(1, 2)[0], make_ctx().__class__(editor=FakeEditor()))


def test_honest_axes_span_the_lots_range_and_draw_no_effect():
    """Issue 19 item 3: a 0.7 HV sweep on lots spanning 60 HV is drawn on at least 60 HV, the
    no-effect line is drawn, and a measured value far off the data is written, not plotted (it
    never stretches the axis so that curves look flat)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mxplain.figures import honest_axis

    fig, ax = plt.subplots()
    honest_axis(ax, 331.2, 331.9, 60.0, measured=1000.0, zero=331.5, units="HV")
    lo, hi = ax.get_ylim()
    assert hi - lo == pytest.approx(60.0) and lo < 331.2 and hi > 331.9
    assert any(ln.get_linestyle() == "--" and ln.get_ydata()[0] == 331.5 for ln in ax.lines)
    assert not any(ln.get_linestyle() == ":" for ln in ax.lines)  # measured off the axis
    texts = [t.get_text() for t in ax.texts]
    assert any("measured 1000 HV above the axis" in t for t in texts)
    assert any("% of the lots' range" in t for t in texts)
    plt.close(fig)
    fig, ax = plt.subplots()
    honest_axis(ax, 300.0, 400.0, 60.0, measured=350.0)  # wider data than the spread: kept
    assert ax.get_ylim()[1] - ax.get_ylim()[0] == pytest.approx(115.0)
    assert any(ln.get_linestyle() == ":" for ln in ax.lines)
    plt.close(fig)


def test_example_edits_are_in_the_cube_and_the_figures_need_no_models(tmp_path):
    """Figure 4a's edited example tiles are written with the lot (``forward_example_edit``: the
    lot's first tile decoded at 0, 0.5 and 1 of each attribute, the others at the lot's labels);
    the summary draws them from the cube with no editor in the context."""
    from mxplain.interfaces import latent_take
    from mxplain.store import to_uint8

    lots = make_lots(n_lots=3, n_tiles=4)
    editor = FakeEditor()
    ctx = make_ctx(tmp_path, editor=editor)
    fs = ForwardSweep(steps=3, n_boot=0)
    assert fs.variables(ctx)["forward_example_edit"].dims == (
        "lot", "attribute", "example_value", "y", "x")
    cube = build_cube(fs, lots, ctx)
    edits = cube["forward_example_edit"].values  # (lot, K, 3, H, W) uint8
    assert edits.dtype == np.uint8 and edits.shape == (3, 4, 3, 32, 32)
    with torch.no_grad():
        for k in (0, 3):
            a = torch.as_tensor(np.repeat(lots[1].attributes[None], 3, 0)).float()
            a[:, k] = torch.tensor([0.0, 0.5, 1.0])
            lat = latent_take(editor.encode(lots[1].tiles[:1]), torch.zeros(3, dtype=torch.long))
            want = to_uint8(editor.decode(lat, a))
            np.testing.assert_array_equal(edits[1, k], want)
    assert not np.array_equal(edits[1, 0, 0], edits[1, 0, 2])  # the edit shows
    blind = make_ctx(tmp_path)
    blind.predictor = blind.editor = None  # no models: the cube is enough
    m = fs.summarize(cube, blind)
    assert "forward_fig4a_tile_curve.png" in m["figures"]
    import matplotlib.image as mpimg

    assert mpimg.imread(tmp_path / "figures" / "forward_fig4a_tile_curve.png").shape[0] > 600
