"""latent_design on tiny fake models: declared variables, matched rises, tuple latents, and the
interpretability score on hand-built trajectories."""

import math

import numpy as np
import pytest
import torch
import xarray as xr

from mxplain.errors import UserError
from mxplain.interfaces import Editor, ExplainContext, Lot, NoLearnedState, Predictor
from mxplain_latent.design import LatentDesign, interpretability_scores

ATTRS = ("size", "porosity", "polydispersity", "facetness")
H = 32


class LinearPredictor(NoLearnedState, Predictor):
    """p = 1000 + 50 * sum(w * x): linear, so first-order matching is exact."""

    name = "fake_linear"

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.w = torch.rand(1, 1, H, H, generator=g)

    def forward(self, tiles):
        return 1000.0 + 50.0 * (tiles * self.w).flatten(1).mean(1)


class FakeEditor(NoLearnedState, Editor):
    """Latent = (N, 6) code; decode = 0.5 + 0.05 * tanh(basis . z) (+ attribute shift)."""

    name = "fake_editor"
    attributes = ATTRS

    def __init__(self, as_tuple=False):
        g = torch.Generator().manual_seed(1)
        self.basis = torch.randn(6, H * H, generator=g)
        self.as_tuple = as_tuple

    def encode(self, tiles):
        z = tiles.flatten(1)[:, :6] - 0.5
        return (z[:, :3], z[:, 3:]) if self.as_tuple else z

    def decode(self, latent, attributes):
        z = torch.cat(latent, 1) if isinstance(latent, tuple) else latent
        img = 0.5 + 0.05 * torch.tanh(z @ self.basis / 3.0) + 0.01 * attributes.mean(1, True)
        return img.view(-1, 1, H, H)


def make_lot(n=3):
    g = torch.Generator().manual_seed(2)
    return Lot(index=0, lot_id="lot000", tiles=0.3 + 0.4 * torch.rand(n, 1, H, H, generator=g),
               attributes=np.array([0.2, 0.4, 0.6, 0.8], np.float32), property=1000.0)


def context(editor, tmp_path=None):
    return ExplainContext(out_dir=tmp_path, progress=False, predictor=LinearPredictor(),
                          editor=editor, attributes=ATTRS,
                          true_sensitivity={"size": -300.0, "porosity": 75.0,
                                            "polydispersity": 150.0, "facetness": 225.0})


def test_returns_declared_variables_and_shapes(tmp_path):
    exp = LatentDesign(steps=4, max_tiles=2, figure_lots=1)
    ctx = context(FakeEditor(), tmp_path)
    out = exp.explain_lot(make_lot(3), ctx)
    assert set(out) == set(exp.variables(ctx))
    assert list(exp.extra_dims()["path"]) == ["latent", "pixel"]
    assert len(exp.extra_dims()["design_step"]) == 5
    shapes = {"design_done": (3,), "design_prediction": (3, 2, 5),
              "design_pixel_change": (3, 2, 5), "design_latent_distance": (3, 5),
              "design_measured": (3, 2, 5, 4), "design_measured_valid": (3, 2, 5, 4)}
    for k, shape in shapes.items():
        assert out[k].shape == shape, k
        if out[k].dtype.kind == "f":
            assert np.isfinite(out[k]).all(), k
    assert out["design_done"].tolist() == [True, True, False]  # max_tiles = 2
    assert (tmp_path / "figures" / "latent_design_lot000.png").is_file()


@pytest.mark.parametrize("as_tuple", [False, True])
def test_both_paths_raise_prediction_by_matched_amounts(as_tuple):
    exp = LatentDesign(steps=5, lr_latent=0.2, max_tiles=3, measure=False)
    out = exp.explain_lot(make_lot(3), context(FakeEditor(as_tuple)))
    p = out["design_prediction"]
    assert (np.diff(p[:, 0], axis=1) > 0).all()  # latent path rises every step
    assert (np.diff(p[:, 1], axis=1) > 0).all()  # pixel path too
    rise_l, rise_p = p[:, 0, -1] - p[:, 0, 0], p[:, 1, -1] - p[:, 1, 0]
    # linear predictor, no clipping: the first-order matching is exact
    np.testing.assert_allclose(rise_p, rise_l, rtol=1e-3)
    d = out["design_latent_distance"]
    assert d[:, 0].tolist() == [0.0, 0.0, 0.0] and (np.diff(d, axis=1) > 0).all()
    assert (out["design_pixel_change"][:, :, 0] == 0).all()


def test_fixed_pixel_step():
    exp = LatentDesign(steps=2, lr_pixel=0.01, max_tiles=1, measure=False)
    out = exp.explain_lot(make_lot(1), context(FakeEditor()))
    # RMS pixel change per step = lr_pixel (no clipping in the middle of [0, 1])
    np.testing.assert_allclose(out["design_pixel_change"][0, 1], [0.0, 0.01, 0.02], rtol=1e-3)


def test_bad_parameters():
    for bad in ({"steps": 0}, {"lr_latent": -1.0}, {"lr_pixel": 0.0}, {"max_tiles": 1.5}):
        with pytest.raises(UserError):
            LatentDesign(**bad)


def hand_built():
    """4 tiles, 2 paths, 5 steps, 2 attributes; truth s = (2, -1). Latent path moves the
    attributes by s/|s|^2 per unit of prediction; the pixel path by (-0.1, -0.1)."""
    s = np.array([2.0, -1.0])
    a0 = np.array([[0.1, 0.2], [0.3, 0.5], [0.6, 0.4], [0.9, 0.8]])
    steps = np.arange(5.0)
    pred = np.broadcast_to(steps, (4, 2, 5)).copy()
    meas = np.zeros((4, 2, 5, 2))
    meas[:, 0] = a0[:, None] + steps[None, :, None] * (s / (s @ s))[None, None]
    meas[:, 1] = a0[:, None] - 0.1 * steps[None, :, None]
    return pred, meas, np.ones(meas.shape, bool), a0, s


def test_interpretability_score_hand_built():
    pred, meas, ok, labels, s = hand_built()
    sc = interpretability_scores(pred, meas, ok, labels, s)
    np.testing.assert_allclose(sc["calibration"]["slope_attribute_per_measured"], [1.0, 1.0])
    lat, pix = sc["latent"], sc["pixel"]
    assert math.isclose(lat["interpretability"], 1.0, rel_tol=1e-9)
    assert math.isclose(lat["sign_agreement"], 1.0)
    assert math.isclose(lat["explained_fraction"], 1.0, rel_tol=1e-9)
    np.testing.assert_allclose(lat["trait"], s / (s @ s))
    assert math.isclose(lat["direction_cosine"], 1.0, rel_tol=1e-9)
    assert math.isclose(lat["magnitude_ratio"], 1.0, rel_tol=1e-9)
    # pixel trait (-0.1, -0.1): cos = (-0.2 + 0.1) / (sqrt(0.02) * sqrt(5)); its length relative
    # to the law's (1 / sqrt(5)) is sqrt(0.02 * 5); score = cos * ratio = s . t = -0.1
    cos = -0.1 / (math.sqrt(0.02) * math.sqrt(5))
    assert math.isclose(pix["direction_cosine"], cos, rel_tol=1e-9)
    assert math.isclose(pix["magnitude_ratio"], math.sqrt(0.1), rel_tol=1e-9)
    assert math.isclose(pix["interpretability"], -0.1, rel_tol=1e-9)
    # sign agrees only on the second attribute (weight 1 of 3)
    assert math.isclose(pix["sign_agreement"], 1.0 / 3.0)
    # explained: s . delta / dp = (2 * -0.4 + -1 * -0.4) / 4 = -0.1
    assert math.isclose(pix["explained_fraction"], -0.1, rel_tol=1e-9)


def test_invalid_measurements_are_ignored():
    pred, meas, ok, labels, s = hand_built()
    ok[0, 0, 2, :] = False
    meas[0, 0, 2, :] = 99.0  # a filled value that must not count
    sc = interpretability_scores(pred, meas, ok, labels, s)
    assert math.isclose(sc["latent"]["interpretability"], 1.0, rel_tol=1e-9)



@pytest.mark.parametrize("scale", [0.01, 0.1, 10.0, 100.0])
def test_score_sees_size_not_only_direction(scale):
    """A path along the law's direction whose attribute changes are `scale` times what the law
    needs for its rise keeps cosine 1 but scores min(scale, 1/scale): too small a change is the
    adversarial case (a rise the microstructure does not pay for), too large an over-reaction."""
    pred, meas, ok, labels, s = hand_built()
    meas[:, 1] = labels[:, None] + scale * np.arange(5.0)[None, :, None] * (s / (s @ s))
    sc = interpretability_scores(pred, meas, ok, labels, s)["pixel"]
    assert math.isclose(sc["direction_cosine"], 1.0, rel_tol=1e-9)
    assert math.isclose(sc["magnitude_ratio"], scale, rel_tol=1e-9)
    assert math.isclose(sc["interpretability"], min(scale, 1 / scale), rel_tol=1e-9)
    assert math.isclose(sc["explained_fraction"], scale, rel_tol=1e-9)

def test_summarize_on_a_cube(tmp_path):
    pred, meas, ok, labels, s = hand_built()
    steps = np.arange(5)
    cube = xr.Dataset(
        {"design_done": (("lot", "tile"), np.ones((4, 1), bool)),
         "tile_mask": (("lot", "tile"), np.ones((4, 1), bool)),
         "design_prediction": (("lot", "tile", "path", "design_step"), pred[:, None]),
         "design_pixel_change": (("lot", "tile", "path", "design_step"),
                                 np.zeros((4, 1, 2, 5))),
         "design_latent_distance": (("lot", "tile", "design_step"), np.zeros((4, 1, 5))),
         "design_measured": (("lot", "tile", "path", "design_step", "attribute"),
                             meas[:, None]),
         "design_measured_valid": (("lot", "tile", "path", "design_step", "attribute"),
                                   ok[:, None]),
         "lot_attributes": (("lot", "attribute"), labels)},
        coords={"attribute": ["size", "porosity"], "design_step": steps,
                "path": ["latent", "pixel"]})
    ctx = ExplainContext(out_dir=tmp_path, progress=False,
                         true_sensitivity={"size": 2.0, "porosity": -1.0})
    m = LatentDesign(steps=4).summarize(cube, ctx)
    assert m["tiles"] == 4 and m["latent_beats_pixel"] is True
    assert math.isclose(m["latent"]["interpretability"], 1.0, rel_tol=1e-9)
    assert math.isclose(m["latent"]["prediction_rise_mean"], 4.0)
    assert (tmp_path / "figures" / "latent_design_traits.png").is_file()


def test_designed_images_are_measured_by_the_dataset_measurement_in_ctx(tmp_path):
    """``ctx.measure`` (the dataset's, columns in the order of ``ctx.attributes``) measures every
    step's image; without one nothing is measured and the summary says why."""
    seen = []

    def mean_grey(tiles):  # uint8 (N, H, W) -> (N, 4): the mean grey level, attribute k scaled k+1
        seen.append((tiles.dtype, len(tiles)))
        g = tiles.reshape(len(tiles), -1).mean(1) / 255.0
        return g[:, None] * np.arange(1, 5)[None]

    exp = LatentDesign(steps=2, max_tiles=2, figure_lots=0, simulate=False)
    ctx = context(FakeEditor(), tmp_path)
    ctx.measure = mean_grey
    out = exp.explain_lot(make_lot(2), ctx)
    # measured in a background thread, one call a step: every one of the
    # 2 paths x 3 steps x 2 tiles' images once, as uint8
    assert {d for d, _ in seen} == {np.dtype(np.uint8)} and sum(k for _, k in seen) == 12
    assert out["design_measured_valid"][:2].all()
    m = out["design_measured"][:2]  # (tile, path, step, attribute)
    np.testing.assert_allclose(m[..., 1], 2 * m[..., 0], rtol=1e-6)
    assert 0.3 < float(m[..., 0].mean()) < 0.7
    ctx.measure = None
    blind = exp.explain_lot(make_lot(2), ctx)
    assert not blind["design_measured_valid"].any()
    pred, meas, ok, labels, s = hand_built()
    cube = xr.Dataset(
        {"design_done": (("lot", "tile"), np.ones((4, 1), bool)),
         "design_prediction": (("lot", "tile", "path", "design_step"), pred[:, None]),
         "design_pixel_change": (("lot", "tile", "path", "design_step"),
                                 np.zeros((4, 1, 2, 5))),
         "design_measured": (("lot", "tile", "path", "design_step", "attribute"),
                             np.zeros_like(meas[:, None])),
         "design_measured_valid": (("lot", "tile", "path", "design_step", "attribute"),
                                   np.zeros_like(ok[:, None])),
         "lot_attributes": (("lot", "attribute"), labels)},
        coords={"attribute": ["size", "porosity"], "design_step": np.arange(5),
                "path": ["latent", "pixel"]})
    m = exp.summarize(cube, ExplainContext(progress=False,
                                           true_sensitivity={"size": 2.0, "porosity": -1.0}))
    assert m["skipped"] == ["interpretability: no measurement of the designed images (the "
                            "dataset has no attribute measurement, Dataset.measure)"]
    assert "interpretability" not in m["latent"] and m["tiles"] == 4


def test_calibration_is_not_attenuated_by_measurement_noise():
    """m = 2 a + noise: the factor back to the attribute scale is 1/2 whatever the noise (the
    reverse regression a ~ m would shrink it by corr^2); an unrelated measurement is left out."""
    from mxplain_latent.design import calibration_slopes

    rng = np.random.default_rng(0)
    a = np.repeat(np.linspace(0.1, 0.9, 16), 25)
    noisy = 2.0 * a + 0.5 + rng.normal(0.0, 0.6, a.size)  # corr ~ 0.66
    unrelated = rng.normal(0.0, 1.0, a.size)
    m0 = np.stack([noisy, unrelated], 1)
    labels = np.stack([a, a], 1)
    calib = calibration_slopes(m0, np.ones(m0.shape, bool), labels)
    assert abs(calib[0] - 0.5) < 0.05
    reverse = np.cov(noisy, a)[0, 1] / np.var(noisy, ddof=1)
    assert reverse < 0.3  # what the old (reverse) calibration gave
    assert np.isnan(calib[1])


def test_unrelated_measurement_is_left_out_of_the_scores():
    pred, meas, ok, labels, s = hand_built()
    rng = np.random.default_rng(1)
    meas[:, :, :, 1] = rng.normal(size=meas.shape[:3])  # porosity measurement: pure noise
    sc = interpretability_scores(pred, meas, ok, labels, s)
    assert sc["calibration"]["scored"] == [True, False]
    assert sc["latent"]["trait"][1] is None
    assert math.isclose(sc["latent"]["direction_cosine"], 1.0, rel_tol=1e-9)  # size alone
    # size accounts for 2 * 0.4 = 0.8 of the rise; the unscored porosity for the rest
    assert math.isclose(sc["latent"]["interpretability"], 0.8, rel_tol=1e-9)


# ---- design judged by physics (issue 21 item 3) ---------------------------------------------------
class MeanGreySimulator:
    """A fake physics: the property is the tile's mean grey level (uint8 in)."""

    property_name, property_units = "grey", ""

    def simulate(self, tiles):
        return np.asarray(tiles, np.float64).reshape(len(tiles), -1).mean(1) / 255.0


def test_simulated_property_of_each_designed_tile(tmp_path):
    from mxplain.simulate import PhaseConductivity

    exp = LatentDesign(steps=4, lr_latent=0.2, max_tiles=3, measure=False)
    ctx = context(FakeEditor(), tmp_path)
    # 32 px tiles; the conducting phase: the darker half of each tile's pixels
    ctx.simulator = PhaseConductivity(phase_map=lambda t: t < np.median(t))
    lot = make_lot(4)
    out = exp.explain_lot(lot, ctx)
    assert set(out) == set(exp.variables(ctx)) and "design_simulated" in out
    sim = out["design_simulated"]
    assert sim.shape == (4, 2, 5) and (sim[3] == 0).all()  # max_tiles = 3
    # the pixel path starts at the lot's own tiles: step 0 is their simulated property
    np.testing.assert_allclose(sim[:3, 1, 0], ctx.simulator.simulate(lot.tiles[:3]), rtol=1e-6)
    assert ((sim[:3] > 1e-3) & (sim[:3] < 1)).all()
    np.testing.assert_allclose(sim[:3, :, 0], [[0.0021219, 0.00806], [0.0017922, 0.0069183],
                                               [0.0028737, 0.0075174]], rtol=1e-4)
    np.testing.assert_allclose(sim[:3, :, -1], [[0.0023183, 0.00806], [0.0025065, 0.0069183],
                                                [0.002825, 0.0075174]], rtol=1e-4)
    assert "design_simulated" not in exp.variables(context(FakeEditor()))  # no simulator
    off = LatentDesign(steps=4, max_tiles=3, measure=False, simulate=False)
    assert "design_simulated" not in off.explain_lot(lot, ctx)


def test_summarize_reports_true_rise_with_intervals(tmp_path):
    exp = LatentDesign(steps=3, lr_latent=0.2, max_tiles=8, measure=False, figure_lots=0)
    ctx = context(FakeEditor(), tmp_path)
    ctx.simulator = MeanGreySimulator()
    rng = np.random.default_rng(3)
    T = 6
    sim = np.zeros((T, 1, 2, 4))
    sim[:, 0, 0] = 0.4 + np.outer(0.05 + 0.01 * rng.standard_normal(T), np.arange(4))  # rises
    sim[:, 0, 1] = 0.4 + 0.001 * rng.standard_normal((T, 4))  # the pixel path does not
    pred = np.broadcast_to(np.arange(4.0), (T, 1, 2, 4)).copy()
    cube = xr.Dataset(
        {"design_done": (("lot", "tile"), np.ones((T, 1), bool)),
         "design_prediction": (("lot", "tile", "path", "design_step"), pred),
         "design_pixel_change": (("lot", "tile", "path", "design_step"), np.zeros_like(pred)),
         "design_simulated": (("lot", "tile", "path", "design_step"), sim)},
        coords={"attribute": list(ATTRS), "design_step": np.arange(4),
                "path": ["latent", "pixel"]})
    ctx.true_sensitivity = None
    ctx.property_name = "grey"  # the labels are the simulated property: the ratio is reported
    m = exp.summarize(cube, ctx)["simulated"]
    rise = sim[:, 0, :, -1] - sim[:, 0, :, 0]
    assert m["tiles"] == T and m["property"] == "grey"
    for j, path in enumerate(("latent", "pixel")):
        assert math.isclose(m[path]["rise_mean"], rise[:, j].mean(), rel_tol=1e-12)
        lo, hi = m[path]["rise_ci"]
        assert lo <= m[path]["rise_mean"] <= hi
        assert math.isclose(m[path]["true_over_predicted_rise"], rise[:, j].mean() / 3.0)
    assert m["latent"]["rise_positive_share"] == 1.0 and m["latent"]["rise_ci"][0] > 0.1
    assert m["pixel"]["rise_ci"][0] < 0 < m["pixel"]["rise_ci"][1]
    assert m["latent_minus_pixel_rise_ci"][0] > 0
    assert m == exp.summarize(cube, ctx)["simulated"]  # seeded: the same intervals
    assert (tmp_path / "figures" / "latent_design_simulated.png").is_file()
    ctx.property_name = "peak_stress"  # a law's property: no ratio across units
    other = exp.summarize(cube, ctx)["simulated"]
    assert other["latent"]["true_over_predicted_rise"] is None
    assert other["latent"]["rise_ci"] == m["latent"]["rise_ci"]
