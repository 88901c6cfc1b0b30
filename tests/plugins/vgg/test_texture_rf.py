"""The texture_rf predictor: fit/predict, plain-data forest, exact save/load."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestRegressor
from vgg_data import texture_store

from mxplain import plugins
from mxplain.errors import UserError
from mxplain.interfaces import RunContext
from mxplain_vgg.forest import ForestArrays
from mxplain_vgg.predictor import TextureForestPredictor

pytestmark = pytest.mark.filterwarnings("ignore:no vgg16 ImageNet weights")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return texture_store(tmp_path_factory.mktemp("trf") / "tiles.zarr", n=8)


def _plain(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(_plain(v) for v in obj)
    return isinstance(obj, (torch.Tensor, int, float, str, bool)) or obj is None


def test_forest_arrays_match_sklearn():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 6)).astype(np.float32)
    y = X[:, 0] * 3 + np.sin(X[:, 1]) + 0.1 * rng.standard_normal(80)
    rf = RandomForestRegressor(n_estimators=12, random_state=0).fit(X, y)
    fa = ForestArrays.from_sklearn(rf)
    Xt = rng.standard_normal((50, 6)).astype(np.float32)
    assert np.allclose(fa.predict(Xt), rf.predict(Xt), rtol=1e-12, atol=1e-9)
    assert fa.n_trees == 12
    back = ForestArrays.from_state(fa.state_dict())
    assert np.array_equal(back.predict(Xt), fa.predict(Xt))
    with pytest.raises(ValueError, match="6"):
        fa.predict(Xt[:, :5])


def test_registered():
    assert plugins.get("predictor", "texture_rf") is TextureForestPredictor
    assert TextureForestPredictor.differentiable is False


@pytest.mark.parametrize("fz", ["mean", "vlad"])
def test_fit_predict_save_load_exact(tmp_path, store, fz):
    ctx = RunContext(out_dir=tmp_path, progress=False)
    p = TextureForestPredictor(layers=["C1_2"], featurization=fz, n_estimators=20, n_words=4,
                               batch_size=16, split="tile")
    m = p.fit(store, ctx)
    for k in ("train_rmse", "val_rmse", "val_mape", "train_seconds"):
        assert np.isfinite(m[k])
    assert m["n_features"] == (64 if fz == "mean" else 256)
    # four distinct textures -> per-tile property learned well (lot properties 1000..1300)
    assert m["val_rmse"] < 40 and m["train_rmse"] < 40
    x = torch.cat([store.lot(i).tiles[:3] for i in range(4)])
    y = p.forward(x)
    assert y.shape == (12,) and y.dtype == torch.float32
    truth = np.repeat(store.properties, 3)
    assert np.abs(y.numpy() - truth).mean() < 40
    assert np.allclose(p.predict(x, batch_size=5), y.numpy())
    # the forest used for prediction is exactly the fitted sklearn forest
    p.save(tmp_path / "p.pt")
    payload = torch.load(tmp_path / "p.pt", weights_only=True)
    assert _plain(payload["state"])
    q = TextureForestPredictor.load(tmp_path / "p.pt")
    assert torch.equal(q.forward(x), y)


def test_wrong_vgg_weights_on_load_is_refused(tmp_path, store):
    p = TextureForestPredictor(layers=["C1_2"], n_estimators=3, batch_size=16)
    p.fit(store, RunContext(progress=False))
    p.save(tmp_path / "p.pt")
    payload = torch.load(tmp_path / "p.pt", weights_only=True)
    payload["params"]["seed"] = 7  # other random filters than those trained on
    torch.save(payload, tmp_path / "q.pt")
    with pytest.raises(UserError, match="VGG weights"):
        TextureForestPredictor.load(tmp_path / "q.pt")


def test_bad_params_are_user_errors(store):
    with pytest.raises(UserError, match="featurization"):
        TextureForestPredictor(featurization="median").fit(store, RunContext(progress=False))
    with pytest.raises(UserError, match="C7_1"):
        TextureForestPredictor(layers=["C7_1"]).fit(store, RunContext(progress=False))
    with pytest.raises(RuntimeError, match="not fitted"):
        TextureForestPredictor().forward(torch.zeros(1, 1, 32, 32))


def test_state_is_deterministic(store):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = TextureForestPredictor(layers=["C1_2"], n_estimators=4, batch_size=16)
        b = TextureForestPredictor(layers=["C1_2"], n_estimators=4, batch_size=16)
        a.fit(store, RunContext(progress=False))
        b.fit(store, RunContext(progress=False))
    x = store.lot(2).tiles
    assert torch.equal(a.forward(x), b.forward(x))
