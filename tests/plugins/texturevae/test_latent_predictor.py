"""latent_krr (seed 003 §4.4): the regressions on known functions, gradients to pixels, plain and
exact checkpoints, SVR arrays vs scikit-learn, bad parameters, a tiny pipeline run explained by
forward, backward and GradCAM, and the Tables 2-3 study."""

import copy
import warnings

import numpy as np
import pytest
import torch

from mxplain import config as config_mod
from mxplain.checkpoint import check_plain
from mxplain.cli import main
from mxplain.errors import UserError
from mxplain.interfaces import RunContext
from mxplain_texturevae import regression as reg
from mxplain_texturevae.latent_regressor import LatentRegressor, regress
from mxplain_texturevae.study import format_table, structure_property

TINY_VAE = {"latent_dim": 4, "dec_dim": 4, "epochs": 1, "batch_size": 8, "max_tiles_per_lot": 2}
GRID = {"alphas": [0.01, 0.1, 1.0], "gammas": [0.3, 1.0], "cv_folds": 2}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mxplain import plugins

    root = tmp_path_factory.mktemp("krr")
    ctx = RunContext(out_dir=root, progress=False)
    return plugins.create("dataset", "synthetic", n_lots=5, tiles_per_lot=6, tile_size=32,
                          seed=3).build(root / "tiles.zarr", ctx)


def _fit(store, **params):
    p = LatentRegressor(**{**GRID, **params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = p.fit(store, RunContext(progress=False))
    return p, metrics


@pytest.fixture(scope="module")
def fitted(store):
    return _fit(store, vae=TINY_VAE)


# ---- the regressions ----------------------------------------------------------------------------
def _smooth_problem(n=240, seed=0):
    """Features in [-2, 2]^3; the property a smooth, non-linear function of the first two."""
    rng = np.random.default_rng(seed)
    f = rng.uniform(-2, 2, (n, 3))
    y = 1000.0 + 40.0 * np.sin(1.5 * f[:, 0]) + 25.0 * f[:, 1] ** 2
    lots = np.repeat(np.arange(12), n // 12)
    perm = rng.permutation(n)
    return f, y, lots, np.sort(perm[48:]), np.sort(perm[:48])


def test_rbf_fits_a_smooth_function_of_the_features_better_than_linear():
    f, y, lots, tr, va = _smooth_problem()
    grids = ([1e-3, 1e-2, 0.1, 1.0], [0.1, 0.3, 1.0, 3.0], [1.0, 10.0, 100.0])
    out = {k: regress(k, f, y, lots, tr, va, grids, 0.05, 4, False)[1] for k in reg.KINDS}
    # measured: rbf R^2 0.995 (MAPE 0.12 %), svr 0.998 (0.16 %), linear 0.41 (2.3 %)
    assert out["rbf"]["val"]["r2"] > 0.99
    assert out["svr"]["val"]["r2"] > 0.99
    assert out["linear"]["val"]["r2"] < 0.5  # a line sees the sine's slope, not the square
    assert out["rbf"]["val"]["mape"] < 0.1 * out["linear"]["val"]["mape"]
    # CV picks the best of the grid it reports, in property units
    cv = out["rbf"]["cv"]
    assert len(cv) == 16
    best = min(cv, key=lambda r: r["cv_mse"])
    assert out["rbf"]["hyper"] == {"alpha": best["alpha"], "g": best["g"]}


def test_ridge_is_exact_on_a_linear_function():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(60, 4))
    y = 500.0 + f @ np.array([3.0, -2.0, 0.5, 0.0])
    st = reg.fit_model("linear", f, y, {"alpha": 1e-9})
    np.testing.assert_allclose(reg.predict_numpy(st, f), y, atol=1e-6)
    wide = np.hstack([f, rng.normal(size=(60, 100))])  # more features than rows: the dual solve
    assert reg.r2(y, reg.predict_numpy(reg.fit_model("linear", wide, y, {"alpha": 1e-6}),
                                       wide)) > 0.999


def test_svr_arrays_reproduce_sklearn():
    from sklearn.svm import SVR

    f, y, *_ = _smooth_problem(120, seed=2)
    st = reg.fit_model("svr", f, y, {"c": 10.0, "g": 1.0, "epsilon": 0.05})
    z = (f - st["f_mean"].numpy()) / st["f_std"].numpy()
    t = (y - float(st["y_mean"])) / float(st["y_std"])
    ref = SVR(kernel="rbf", C=10.0, gamma=1.0 / 3, epsilon=0.05).fit(z, t)
    want = float(st["y_mean"]) + float(st["y_std"]) * ref.predict(z)
    np.testing.assert_allclose(reg.predict_numpy(st, f), want, rtol=0, atol=1e-9)
    assert st["centers"].shape[0] == len(ref.support_) < 120  # only the support vectors


def test_rbf_kernel_gradient_matches_finite_differences():
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: reg.rbf_kernel(x, b, 0.3), (a,))
    same = reg.rbf_kernel(b.clone().requires_grad_(True), b, 0.3)
    assert torch.allclose(torch.diagonal(same), torch.ones(5, dtype=torch.float64))


def test_leave_one_lot_out_never_sees_the_lot():
    """Lots far apart in feature space (a narrow kernel), each with its own property: a model that
    saw the lot predicts it; one that did not falls back to the other lots' mean (its intercept)."""
    rng = np.random.default_rng(3)
    lots = np.repeat(np.arange(4), 10)
    f = rng.normal(size=(40, 2)) + lots[:, None] * 10.0
    y = np.array([100.0, 300.0, 200.0, 400.0])[lots]
    hyper = {"alpha": 1e-3, "g": 30.0}
    seen = reg.scores(y, reg.predict_numpy(reg.fit_model("rbf", f, y, hyper), f), lots)
    assert seen["mape"] < 1.0
    lolo = reg.leave_one_lot_out("rbf", f, y, lots, hyper)
    others = np.array([300.0, 700.0 / 3, 800.0 / 3, 200.0])  # the other three lots' mean
    want = 100 * np.mean(np.abs(others - [100.0, 300.0, 200.0, 400.0]) / [100, 300, 200, 400])
    assert lolo["lot_mape"] == pytest.approx(want, abs=0.5)  # 76.4 %


# ---- the predictor ------------------------------------------------------------------------------
def test_fit_metrics_report_held_out_and_leave_one_lot_out(fitted):
    p, m = fitted
    assert m["features"] == "texturevae" and m["n_features"] == 4
    assert m["n_train"] + m["n_val"] == 30 and m["n_val"] == 6
    for part in ("train", "val", "lolo"):  # flat keys, as the other predictors' (the report)
        assert all(f"{part}_{k}" in m for k in ("r2", "mape", "rmse", "lot_mape", "lot_r2"))
        assert np.isfinite(m[f"{part}_mape"]) and m[f"{part}_mape"] >= 0
    assert m["lolo_tiles"] == 30 and m["lolo_lots"] == 5
    assert m["hyper_alpha"] == m["hyper"]["alpha"] and m["hyper_g"] == m["hyper"]["g"]
    assert m["encoder"]["patches"] == 10  # the VAE saw 2 training tiles of each of 5 lots
    assert len(m["cv"]) == 6 and set(m["hyper"]) == {"alpha", "g"}


def test_gradients_flow_to_pixels_and_match_finite_differences(fitted, store):
    p, _ = fitted
    x = store.lot(1).tiles[:2].clone().requires_grad_(True)
    p.forward(x).sum().backward()
    g = x.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # the same network in float64: a central difference along a random direction, small enough
    # not to cross a max-pool tie (8-bit tiles have flat patches) or a ReLU kink
    net = copy.deepcopy(p.torch_module()).double()
    x64, d = x.detach().double(), torch.randn_like(x, dtype=torch.float64) * 1e-7
    with torch.no_grad():
        fd = (reg.predict(net.regression(), net.features(x64 + d))
              - reg.predict(net.regression(), net.features(x64 - d))).sum() / 2
    x64.requires_grad_(True)
    reg.predict(net.regression(), net.features(x64)).sum().backward()
    assert float(fd) == pytest.approx(float((x64.grad * d).sum()), rel=1e-5)
    cos = torch.nn.functional.cosine_similarity(g.double().flatten(), x64.grad.flatten(), dim=0)
    assert float(cos) > 0.99  # the float32 predictor's gradient is that one
    assert p.capabilities(p.get_params()) == {"gradients", "torch_module"}
    assert p.torch_module().get_submodule(p.gradcam_layer).__class__.__name__ == "ReLU"


@pytest.mark.parametrize("params", [{"vae": TINY_VAE},
                                    {"features": "vgg", "regression": "svr", "svr_c": [1.0]},
                                    {"features": "vgg", "regression": "linear"}],
                         ids=["texturevae-rbf", "vgg-svr", "vgg-linear"])
def test_checkpoint_round_trip_is_plain_and_exact(store, tmp_path, params):
    p, _ = _fit(store, **params)
    state = p.state_dict()
    assert check_plain(state) is None
    p.save(tmp_path / "p.pt")
    payload = torch.load(tmp_path / "p.pt", weights_only=True)
    assert payload["state"]["vgg_source"] == "random:0" and "vgg" not in payload["state"]
    q = LatentRegressor.load(tmp_path / "p.pt")
    x = store.lot(2).tiles
    with torch.no_grad():
        assert torch.equal(q.forward(x), p.forward(x))
    assert q.hyper_ == p.hyper_


def test_a_saved_texturevae_editor_is_the_encoder(store, tmp_path):
    from mxplain_texturevae.editor import TextureVAEEditor

    ed = TextureVAEEditor(**TINY_VAE, figures=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ed.fit(store, RunContext(progress=False))
    ed.save(tmp_path / "editor.pt")
    p, m = _fit(store, texturevae_checkpoint=str(tmp_path / "editor.pt"))
    x = store.lot(0).tiles
    with torch.no_grad():
        np.testing.assert_array_equal(p.torch_module().features(x).numpy(), ed.encode(x).numpy())
    assert m["encoder"]["texturevae_checkpoint"].endswith("editor.pt")


def test_untrained_predictor_is_a_user_error():
    with pytest.raises(UserError, match="latent_krr predictor is not trained"):
        LatentRegressor().forward(torch.zeros(1, 1, 32, 32))


BAD = [
    ('regression = "poly"', "regression = 'poly': use one of ['linear', 'rbf', 'svr']"),
    ('features = "pixels"', "features = 'pixels': use one of ['texturevae', 'vgg']"),
    ("alphas = []", "alphas = []: must be a non-empty list of numbers > 0"),
    ("gammas = [1.0, -2.0]", "gammas = [1.0, -2.0]: must be a non-empty list"),
    ("cv_folds = 1", "cv_folds = 1: must be an integer >= 2"),
    ('texturevae_checkpoint = "nowhere.pt"', "texturevae_checkpoint = 'nowhere.pt': no such file"),
    ('features = "vgg"\nvae = {latent_dim = 8}', "VGG features use no TextureVAE"),
    ("vae = {latent_dim = 0}", "vae: latent_dim = 0: must be a positive integer"),
    ("vae = {bogus = 1}", "vae has unknown key 'bogus'"),
]


@pytest.mark.parametrize("line,needle", BAD, ids=[b[0].split(" ")[0] for b in BAD])
def test_bad_parameters_are_one_error_line_before_anything_runs(tmp_path, capsys, line, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\nn_lots = 4\ntiles_per_lot = 2\ntile_size = 32\n'
                   f'[predictor]\nname = "latent_krr"\n{line}\n[run]\nreport = false\n')
    code = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert "[predictor] latent_krr:" in err[0] and needle in err[0], err[0]
    assert not (tmp_path / "run").exists()


# ---- the pipeline and the study -----------------------------------------------------------------
PIPELINE = """
[data]
name = "synthetic"
n_lots = 4
tiles_per_lot = 5
tile_size = 32
seed = 3
[predictor]
name = "latent_krr"
alphas = [0.1, 1.0]
gammas = [1.0]
cv_folds = 2
vae = {latent_dim = 4, dec_dim = 4, epochs = 1, batch_size = 8, max_tiles_per_lot = 2}
[editor]
name = "texturevae"
latent_dim = 4
dec_dim = 4
epochs = 1
batch_size = 8
max_tiles_per_lot = 2
figures = false
[explain.forward]
steps = 3
[explain.backward]
max_iter = 3
[explain.gradcam]
[run]
explain_tiles = 2
report = false
editor_eval_tiles = 2
"""


def test_tiny_pipeline_run_is_explained_by_forward_backward_and_gradcam(tmp_path):
    import json

    import xarray as xr

    from mxplain import pipeline

    cfg = tmp_path / "c.toml"
    cfg.write_text(PIPELINE)
    assert config_mod.load(cfg)["predictor"]["regression"] == "rbf"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = pipeline.run(cfg, out=tmp_path / "run", device="cpu", progress=False)
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["explain"]) == {"forward", "backward", "gradcam"} and not m["explain_skipped"]
    assert m["predictor"]["regression"] == "rbf" and "lolo_lot_mape" in m["predictor"]
    cube = xr.open_zarr(out / "results.zarr")
    cam = cube["gradcam"].values
    assert cam.shape == (4, 2, 32, 32) and np.isfinite(cam).all() and np.abs(cam).sum() > 0
    assert np.isfinite(cube["forward_prediction"].values).all()
    assert np.isfinite(cube["backward_prediction"].values).all()


def test_study_reports_both_feature_sets_and_every_regression(store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = structure_property(store, vae=TINY_VAE, **GRID)
    rows = {(r["features"], r["regression"]): r for r in res["rows"]}
    assert set(rows) == {(f, k) for f in ("texturevae", "vgg19") for k in reg.KINDS} | {
        ("none", "mean")}
    y = np.asarray(store.properties)  # 6 tiles a lot: the other lots' mean predicts a lot
    others = np.array([np.delete(y, i).mean() for i in range(5)])
    assert rows[("none", "mean")]["leave_one_lot_out"]["lot_mape"] == pytest.approx(
        100 * np.mean(np.abs(others - y) / y))
    assert rows[("texturevae", "rbf")]["n_features"] == 4
    assert rows[("vgg19", "rbf")]["n_features"] == 512
    for r in res["rows"]:
        assert np.isfinite(r["val"]["mape"]) and np.isfinite(r["leave_one_lot_out"]["lot_mape"])
    table = format_table(res)
    assert table.count("\n") == 8 and "| TextureVAE mu (4) | rbf |" in table


def test_footprint_counts_the_kernel_matrix():
    from mxplain.interfaces import DataShape

    big = DataShape(n_lots=100, n_tiles=100_000, max_tiles_per_lot=1000, tile_size=64)
    kernel = {f.what: f.memory for f in LatentRegressor.footprint({}, big)}
    assert kernel["the kernel matrix of the training tiles"] == 16 * 80_001 ** 2  # ~100 GB
    capped = LatentRegressor.footprint({"max_tiles_per_lot": 10, "regression": "linear"}, big)
    assert [f.memory for f in capped] == [5 * 1000 * 64 ** 2]  # ridge: no kernel
