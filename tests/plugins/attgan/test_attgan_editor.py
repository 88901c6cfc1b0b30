"""AttGANEditor: Editor contract, training, checkpoints, registration."""

import json

import numpy as np
import pytest
import torch
from attgan_data import make_store, one_thread  # noqa: F401

from mxplain import plugins
from mxplain.checkpoint import read_checkpoint
from mxplain.errors import UserError
from mxplain.interfaces import RunContext
from mxplain.store import to_tensor
from mxplain_attgan.editor import LOSS_KEYS, AttGANEditor

TINY = dict(enc_dim=4, dec_dim=4, dis_dim=4, dis_fc_dim=16, n_layers=3, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("attgan") / "tiles.zarr")


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    ed = AttGANEditor(**TINY, epochs=2, n_critic=2, sample_every=1)
    metrics = ed.fit(store, RunContext(out_dir=out, progress=False))
    return ed, metrics, out


def test_registered_and_params():
    assert plugins.get("editor", "attgan") is AttGANEditor
    d = AttGANEditor.param_defaults()
    for k, v in dict(enc_dim=64, dec_dim=64, dis_dim=64, dis_fc_dim=1024, n_layers=5,
                     shortcut_layers=1, inject_layers=1, thres_int=0.5, lambda_rec=100.0,
                     lambda_gatt=10.0, lambda_datt=1.0, lambda_gp=10.0, n_critic=5, lr=2e-4,
                     beta1=0.5, beta2=0.999, epochs=30, lr_decay_epoch=None, batch_size=32,
                     seed=0, max_tiles_per_lot=None, sample_every=None).items():
        assert d[k] == v, k
    assert AttGANEditor().generator_ is None  # constructor stores parameters only


def test_fit_metrics_and_figures(trained, store):
    ed, m, out = trained
    assert ed.attributes == store.attributes
    for k in ("reconstruction_l1", "reconstruction_mse", "classifier_real_mae",
              "classifier_real_accuracy", "classifier_edited_mae", "classifier_edited_accuracy",
              "train_seconds", *(f"final_{k}" for k in LOSS_KEYS)):
        assert np.isfinite(m[k]), k
    assert 0 <= m["classifier_real_accuracy"] <= 1 and 0 < m["reconstruction_l1"] < 1
    # 2 epochs x 4 iterations, a G step every 2nd iteration
    assert m["generator_steps"] == 4 and all(len(ed.history_[k]) == 4 for k in LOSS_KEYS)
    json.dumps(m)
    assert (out / "figures" / "attgan_losses.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "figures" / "attgan_samples").iterdir()) == [
        "epoch_001.png", "epoch_002.png"]


def test_encode_once_decode_many_equals_edit(trained, store):
    ed, _, _ = trained
    x = to_tensor(store.tiles(0)[:3])
    attrs = torch.rand(5, 4, generator=torch.Generator().manual_seed(1))
    zs = ed.encode(x)
    assert isinstance(zs, tuple) and len(zs) == 3 and zs[0].shape[0] == 3
    # one latent, many attribute vectors: repeat the latent along the batch
    rep = tuple(z.repeat_interleave(5, 0) for z in zs)
    many = ed.decode(rep, attrs.repeat(3, 1))
    assert many.shape == (15, 1, 32, 32) and many.min() >= 0 and many.max() <= 1
    for i in range(3):
        for j in range(5):
            one = ed.edit(x[i:i + 1], attrs[j:j + 1])
            torch.testing.assert_close(many[i * 5 + j:i * 5 + j + 1], one, atol=1e-5, rtol=0)


def test_attributes_change_the_output_and_are_differentiable(trained, store):
    ed, _, _ = trained
    x = to_tensor(store.tiles(1)[:2])
    a = torch.full((2, 4), 0.5, requires_grad=True)
    y = ed.decode(ed.encode(x), a)
    y.mean().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    with torch.no_grad():
        lo = ed.edit(x, torch.zeros(2, 4))
        hi = ed.edit(x, torch.ones(2, 4))
    assert (hi - lo).abs().mean() > 1e-4


def test_eval_is_deterministic_and_batch_independent(trained, store):
    ed, _, _ = trained
    x = to_tensor(store.tiles(2)[:4])
    a = torch.rand(4, 4)
    with torch.no_grad():
        y1, y2 = ed.edit(x, a), ed.edit(x, a)
        y3 = ed.edit(x[:1], a[:1])
    assert torch.equal(y1, y2)
    torch.testing.assert_close(y1[:1], y3, atol=1e-5, rtol=0)


def test_training_decreases_reconstruction_loss(store):
    ed = AttGANEditor(**{**TINY, "enc_dim": 8, "dec_dim": 8}, epochs=8, n_critic=1, lr=1e-3,
                      augment=False)
    ed.fit(store, RunContext(progress=False))
    rec = ed.history_["g_rec"]
    assert len(rec) == 32
    assert np.mean(rec[-4:]) < 0.6 * np.mean(rec[:4])


def test_save_load_round_trip_is_exact(trained, store, tmp_path):
    ed, _, _ = trained
    ed.save(tmp_path / "editor.pt")
    payload = read_checkpoint(tmp_path / "editor.pt")  # weights_only load: plain data
    assert payload["state"]["attributes"] == list(store.attributes)
    ed2 = AttGANEditor.load(tmp_path / "editor.pt")
    x = to_tensor(store.tiles(3)[:4])
    a = torch.rand(4, 4)
    with torch.no_grad():
        assert torch.equal(ed.edit(x, a), ed2.edit(x, a))
        assert torch.equal(ed.classify(x), ed2.classify(x))
    assert ed2.history_ == ed.history_ and ed2.attributes == ed.attributes


def test_wrong_architecture_is_a_clear_error(trained, tmp_path):
    ed, _, _ = trained
    with pytest.raises(ValueError, match="enc_dim=8"):
        AttGANEditor(**{**TINY, "enc_dim": 8}).load_state_dict(ed.state_dict())
    with pytest.raises(ValueError, match="architecture differs"):
        AttGANEditor(**{**TINY, "n_layers": 2}).load_state_dict(ed.state_dict())
    ed.save(tmp_path / "e.pt")
    payload = torch.load(tmp_path / "e.pt", weights_only=True)
    payload["params"]["dis_fc_dim"] = 32
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(UserError, match=r"bad\.pt.*does not fit 'attgan'.*dis_fc_dim=32"):
        AttGANEditor.load(tmp_path / "bad.pt")


def test_user_errors(store):
    with pytest.raises(UserError, match="not trained"):
        AttGANEditor().encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(UserError, match="n_layers"):
        AttGANEditor(**{**TINY, "n_layers": 5}, epochs=1).fit(store, RunContext(progress=False))
    with pytest.raises(UserError, match="b_uniform"):
        AttGANEditor(b_uniform=2.0).fit(store, RunContext(progress=False))
    with pytest.raises(UserError, match="max_tiles_per_lot"):
        AttGANEditor(max_tiles_per_lot=0).fit(store, RunContext(progress=False))
