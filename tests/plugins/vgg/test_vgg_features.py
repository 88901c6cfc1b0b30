"""Texture featurizations, the feature cache, RF classification and interpretability."""

import json
import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from vgg_data import texture_store

from mxplain.errors import UserError
from mxplain_vgg import classify
from mxplain_vgg.features import (
    Featurizer,
    extract_features,
    feat_gram,
    feat_vlad,
    fit_featurizer,
    gram_matrix,
    resolve_layer,
)
from mxplain_vgg.vgg import load_vgg


@pytest.fixture(scope="module")
def vgg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_vgg("vgg16", seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return texture_store(tmp_path_factory.mktemp("vggfeat") / "tiles.zarr")


def test_layer_names_resolve():
    assert resolve_layer("C3_3") == "relu3_3" and resolve_layer("conv3_3") == "relu3_3"
    assert resolve_layer("image") is None and resolve_layer("pool2") == "pool2"
    with pytest.raises(UserError, match="C9_9"):
        resolve_layer("C9_9")


@pytest.mark.parametrize("fz,size", [("mean", 128), ("max", 128), ("gram", 128 * 129 // 2),
                                     ("vlad", 128 * 4)])
def test_featurization_shapes(vgg, fz, size):
    x = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    f = Featurizer(vgg, ["C2_2"], fz, n_words=4, vlad_sample=400)
    if fz == "vlad":
        f.fit([x])
    X = f.transform(x, batch_size=2)
    assert X.shape == (5, size) == (5, f.n_features) and X.dtype == np.float32
    assert len(f.feature_names()) == size
    a = vgg(x, ["relu2_2"])["relu2_2"]
    if fz == "mean":
        assert np.allclose(X, a.mean((2, 3)).numpy(), atol=1e-6)
    if fz == "max":
        assert np.allclose(X, a.amax((2, 3)).numpy())
        assert (X >= f.transform(x)[:, :].min()).all()


def test_union_of_layers_concatenates(vgg):
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    u = Featurizer(vgg, ["image", "C1_2", "C2_2"], "mean").transform(x)
    parts = [Featurizer(vgg, [n], "mean").transform(x) for n in ("image", "C1_2", "C2_2")]
    assert u.shape == (3, 1 + 64 + 128)
    assert np.allclose(u, np.concatenate(parts, 1))
    assert np.allclose(u[:, 0], x.mean((1, 2, 3)).numpy(), atol=1e-6)
    f = Featurizer(vgg, ["image", "C1_2", "C2_2"], "mean")
    assert f.describe(0)["layer"] == "image"
    assert f.describe(1 + 64 + 5) == {"layer": "C2_2", "filter": 5, "filters": [5]}


def test_gram_is_symmetric_upper_triangle():
    a = torch.rand(2, 6, 5, 4, generator=torch.Generator().manual_seed(0))
    g = gram_matrix(a)
    assert torch.allclose(g, g.transpose(1, 2))
    f = a.reshape(2, 6, 20)
    assert torch.allclose(g[1, 2, 4], (f[1, 2] * f[1, 4]).sum() / 20)
    up = feat_gram(a)
    assert up.shape == (2, 6 * 7 // 2)
    iu = np.triu_indices(6)
    assert torch.allclose(up, g[:, iu[0], iu[1]])


def test_vlad_is_intra_and_l2_normalised():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 8, 6, 6, generator=gen)
    centers = torch.rand(5, 8, generator=gen)
    v = feat_vlad(a, centers)
    assert v.shape == (3, 40)
    assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)
    blocks = v.reshape(3, 5, 8).norm(dim=2)
    for row in blocks:  # every word used has the same block norm after intra-normalisation
        used = row[row > 1e-6]
        assert torch.allclose(used, used[0].expand_as(used), atol=1e-5)
    # residual of word k = sum over descriptors assigned to k of (d - c_k)
    d = a[0].reshape(8, 36).T
    k = torch.cdist(d, centers).argmin(1)
    r = (d[k == k[0]] - centers[k[0]]).sum(0)
    assert torch.allclose(v[0].reshape(5, 8)[k[0]] / blocks[0][k[0]], r / r.norm(), atol=1e-5)


def test_feature_cache_roundtrip(tmp_path, vgg, store):
    f = Featurizer(vgg, ["C1_2"], "vlad", n_words=4, vlad_sample=400)
    fit_featurizer(f, store, batch_size=8)
    X1, lots1 = extract_features(store, f, tmp_path / "c.zarr", batch_size=8)
    assert X1.shape == (36, 256) and np.array_equal(lots1, np.repeat(np.arange(4), 9))
    ds = xr.open_zarr(tmp_path / "c.zarr")
    assert ds["features"].dims == ("lot", "tile", "feature")
    assert ds["lot_done"].values.all()
    # a second call reads the cube instead of recomputing
    f.transform = None  # would fail if called
    X2, _ = extract_features(store, f, tmp_path / "c.zarr", batch_size=8)
    assert np.array_equal(X1, X2)


def test_rf_classification_beats_chance():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    X = rng.standard_normal((60, 10))
    X[:, 0] += 6 * y
    easy = classify.cv_f1(X, y, n_estimators=20, n_trials=2, seed=0)
    assert easy["mean"] > 0.9 and len(easy["trials"]) == 2
    noise = classify.cv_f1(rng.standard_normal((60, 10)), y, n_estimators=20, n_trials=2)
    assert noise["mean"] < 0.6
    with pytest.raises(UserError, match="n_folds"):
        classify.cv_f1(X[:4], np.array([0, 0, 1, 1]), n_estimators=2)


def test_attribute_bins_equal_count(store):
    b = classify.attribute_bins(store, "size", 2)
    assert list(b) == [0, 0, 1, 1]
    assert list(classify.attribute_bins(store, "porosity", 2)) == [1, 1, 0, 0]
    with pytest.raises(UserError, match="facetness"):
        classify.attribute_bins(store, "facetness", 2)


def test_grid_on_textures(tmp_path, vgg, store):
    ds = classify.feature_grid(store, layers=["image", "C1_2"], featurizations=["mean", "gram"],
                               vgg=vgg, n_estimators=15, n_trials=2, cache_dir=tmp_path / "c",
                               batch_size=16)
    assert ds["f1_mean"].dims == ("layer", "featurization")
    assert list(ds.layer.values) == ["image", "C1_2", "all"]
    m = ds["f1_mean"].sel(layer="C1_2").values
    assert (m >= 0.9).all(), m  # four very different textures are told apart
    assert int(ds["n_features"].sel(layer="C1_2", featurization="gram")) == 64 * 65 // 2
    assert np.isnan(float(ds["f1_mean"].sel(layer="all", featurization="gram")))
    classify.save_grid(ds, tmp_path / "grid.zarr")
    back = xr.open_zarr(tmp_path / "grid.zarr")
    assert np.allclose(back["f1_mean"].values, ds["f1_mean"].values, equal_nan=True)
    png = classify.plot_grid(ds, tmp_path / "figs" / "vgg_grid.png")
    assert png.stat().st_size > 1000


def test_interpretability(tmp_path, vgg, store):
    f = Featurizer(vgg, ["C1_2"], "mean")
    X, lot_idx = extract_features(store, f)
    y, names = classify.tile_labels(store, lot_idx, "lot")
    rf = classify.make_forest(30, 0).fit(X, y)
    top = classify.important_features(rf, f, k=3)
    imp = rf.feature_importances_
    assert [t["index"] for t in top] == list(np.argsort(-imp)[:3])
    assert top[0]["layer"] == "C1_2" and top[0]["filter"] == top[0]["index"]
    amap = classify.activation_map(vgg, store.lot(1).tiles[0], "relu1_2", top[0]["filter"])
    assert amap.shape == (32, 32)
    assert np.isclose(amap.mean(), X[9, top[0]["filter"]], rtol=1e-4)
    img = classify.maximize_activation(vgg, "relu1_2", top[0]["filter"], size=32, steps=25)
    assert img.shape == (32, 32) and 0 <= img.min() and img.max() <= 1
    t = torch.from_numpy(img)[None, None]
    noise = torch.sigmoid(0.1 * torch.randn(1, 1, 32, 32, generator=torch.Generator()
                                            .manual_seed(0)))
    act = vgg(torch.cat([t, noise]), ["relu1_2"])["relu1_2"][:, top[0]["filter"]].mean((1, 2))
    assert act[0] > 1.5 * act[1]  # gradient ascent raised the filter's mean activation
    char = classify.characteristic_features(X, y)
    for d in char.values():
        assert d["class_mean"] > d["other_mean"] and d["score"] > 0
    res = classify.interpret(store, f, X, y, lot_idx, names, tmp_path / "figs", n_estimators=10,
                             k=2, steps=5)
    assert len(res["important"]) == 2 and set(res["characteristic"]) == set(store.lot_ids)
    for p in res["figures"]:
        assert (tmp_path / "figs").joinpath(p.split("/")[-1]).stat().st_size > 1000


def test_grid_cli(tmp_path, store, capsys):
    from mxplain_vgg import grid

    rc = grid.main(["--store", str(store.path), "--out", str(tmp_path / "g"), "--target", "lot",
                    "--target", "size", "--bins", "2", "--layers", "image,C1_2",
                    "--featurizations", "mean", "--trees", "5", "--trials", "1", "--quiet",
                    "--device", "cpu"])
    assert rc == 0
    for t in ("lot", "size"):
        assert (tmp_path / "g" / f"grid_{t}.zarr").is_dir()
        assert (tmp_path / "g" / "figures" / f"vgg_grid_{t}.png").is_file()
        res = json.loads((tmp_path / "g" / f"grid_{t}.json").read_text())
        assert res["best"]["layer"] in ("C1_2", "all") and res["best"]["f1_mean"] > 0.9
    assert "lot: best" in capsys.readouterr().out
    assert grid.main(["--store", str(tmp_path / "nope.zarr"), "--out", str(tmp_path / "h")]) == 2
