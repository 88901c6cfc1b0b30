"""AttGAN training options: target sampling and the classifier warm-up."""

import numpy as np
import pytest
import torch
from attgan_data import make_store, one_thread  # noqa: F401

from mxplain.errors import UserError
from mxplain.interfaces import RunContext
from mxplain_attgan.editor import AttGANEditor, periodic_random_crop, single_attribute_targets

TINY = dict(enc_dim=4, dec_dim=4, dis_dim=4, dis_fc_dim=16, n_layers=3, batch_size=8, seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("attgan_opts") / "tiles.zarr")


def test_single_attribute_targets_change_exactly_one_column_by_a_large_step():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2000, 4, generator=gen)
    a[:5] = torch.tensor([0.0, 0.5, 1.0, 0.3])  # edge values
    b = single_attribute_targets(a, gen, min_change=0.3)
    changed = (b != a).sum(dim=1)
    assert torch.equal(changed, torch.ones(len(a), dtype=torch.long))
    step = (b - a).abs().sum(dim=1)
    assert step.min() >= 0.3 - 1e-6 and b.min() >= 0 and b.max() <= 1
    col = (b != a).float().argmax(dim=1)
    counts = torch.bincount(col, minlength=4)
    assert counts.min() > 400  # every attribute is edited about equally often
    up = ((b - a).sum(dim=1) > 0).float().mean()
    assert 0.4 < up < 0.6  # increases and decreases alike
    # min_change = 0: any value in [0, 1]
    b0 = single_attribute_targets(a, torch.Generator().manual_seed(1), min_change=0.0)
    assert torch.equal((b0 != a).sum(dim=1) <= 1, torch.ones(len(a), dtype=torch.bool))


def test_target_sampling_modes_in_the_editor():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(64, 4, generator=gen)
    single = AttGANEditor(target_sampling="single", target_min_change=0.25)._targets(a, gen)
    assert torch.equal((single != a).sum(dim=1), torch.ones(64, dtype=torch.long))
    perm = AttGANEditor(target_sampling="permute", b_uniform=0.0)._targets(a, gen)
    assert torch.equal(perm.sort(dim=0).values, a.sort(dim=0).values)  # rows of a, reordered
    uni = AttGANEditor(target_sampling="uniform")._targets(a, gen)
    assert uni.shape == a.shape and not torch.isin(uni, a).any()


def test_classifier_warmup_lowers_the_classifier_loss(store):
    ctx = RunContext(progress=False)
    base = dict(**TINY, epochs=1, n_critic=1, augment=False, lr=1e-3)
    warm = AttGANEditor(**base, classifier_warmup_epochs=12)
    m = warm.fit(store, ctx)
    assert m["warmup_d_cls_last_epoch"] < m["warmup_d_cls_first_epoch"] - 0.02
    cold = AttGANEditor(**base)
    m0 = cold.fit(store, ctx)
    assert "warmup_d_cls_first_epoch" not in m0
    # the GAN phase starts from a trained classifier: its real-tile loss and error are lower
    assert np.mean(warm.history_["d_cls"]) < np.mean(cold.history_["d_cls"]) - 0.02
    assert m["classifier_real_mae"] < m0["classifier_real_mae"]


def test_training_option_errors(store):
    ctx = RunContext(progress=False)
    with pytest.raises(UserError, match="target_sampling"):
        AttGANEditor(**TINY, target_sampling="both").fit(store, ctx)
    with pytest.raises(UserError, match="target_min_change"):
        AttGANEditor(**TINY, target_min_change=0.8).fit(store, ctx)
    with pytest.raises(UserError, match="classifier_warmup_epochs"):
        AttGANEditor(**TINY, classifier_warmup_epochs=-1).fit(store, ctx)
    with pytest.raises(UserError, match="classifier_warmup_lr"):
        AttGANEditor(**TINY, classifier_warmup_lr=0.0).fit(store, ctx)


def test_periodic_random_crop_repeats_a_window_of_each_image():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(3 * 2 * 16 * 16, dtype=torch.float32).reshape(3, 2, 16, 16)
    y = periodic_random_crop(x, 5, gen)
    assert y.shape == x.shape
    for i in range(3):
        win = y[i, :, :5, :5]
        # the window is a contiguous crop of the same image (same offset in both channels)
        oy, ox = divmod(int(win[0, 0, 0].item()) - i * 2 * 256, 16)
        assert torch.equal(win, x[i, :, oy:oy + 5, ox:ox + 5])
        # ... repeated with period 5 in both directions
        assert torch.equal(y[i, :, 5:10, 5:10], win)
        assert torch.equal(y[i, :, 15, :], y[i, :, 0, :])
    # a crop of the full size is the identity
    assert torch.equal(periodic_random_crop(x, 16, gen), x)


def test_classifier_regularisers_default_to_the_reference_and_change_training(store):
    ctx = RunContext(progress=False)
    base = dict(**TINY, epochs=1, n_critic=1, lr=1e-3, classifier_warmup_epochs=2)
    ref = AttGANEditor(**base)
    assert ref.cls_dropout == 0.0 and ref.cls_crop is None
    ref.fit(store, ctx)
    same = AttGANEditor(**base, cls_dropout=0.0, cls_crop=32)  # crop = tile size: no crop
    same.fit(store, ctx)
    for k, v in ref.state_dict()["discriminator"].items():
        assert torch.equal(v, same.state_dict()["discriminator"][k]), k
    for extra in (dict(cls_dropout=0.5), dict(cls_crop=16)):
        ed = AttGANEditor(**base, **extra)
        m = ed.fit(store, ctx)
        assert np.isfinite(m["final_d_cls"]) and np.isfinite(m["final_g_cls"])
        diff = max(float((v - ed.state_dict()["discriminator"][k]).abs().max())
                   for k, v in ref.state_dict()["discriminator"].items())
        assert diff > 1e-4, extra
        # evaluation (classify / edit) is deterministic: no dropout, no crop at inference
        t = torch.from_numpy(store.tiles(0)[:4]).float()[:, None] / 255
        assert torch.equal(ed.classify(t), ed.classify(t))


def test_classifier_regulariser_errors(store):
    ctx = RunContext(progress=False)
    with pytest.raises(UserError, match="cls_dropout"):
        AttGANEditor(**TINY, cls_dropout=1.0).fit(store, ctx)
    with pytest.raises(UserError, match="cls_crop"):
        AttGANEditor(**TINY, cls_crop=2).fit(store, ctx)
    with pytest.raises(UserError, match="cls_crop = 64"):
        AttGANEditor(**TINY, cls_crop=64).fit(store, ctx)


class _Interrupt(Exception):
    pass


@pytest.mark.usefixtures("one_thread")
def test_killed_training_resumes_bit_identically(store, tmp_path, monkeypatch):
    from mxplain.training import TrainingCheckpoint

    params = dict(**TINY, epochs=2, n_critic=2, classifier_warmup_epochs=1)
    ref = AttGANEditor(**params)
    ref.fit(store, RunContext(progress=False))
    ctx = RunContext(progress=False, training_state_path=tmp_path / "editor.training.pt")
    save, saved = TrainingCheckpoint.save, []

    def save_then_stop(self, epoch, extra=None):
        save(self, epoch, extra)
        saved.append(epoch)
        if epoch == 1:
            raise _Interrupt

    with monkeypatch.context() as mp:
        mp.setattr(TrainingCheckpoint, "save", save_then_stop)
        with pytest.raises(_Interrupt):
            AttGANEditor(**params).fit(store, ctx)
        torch.manual_seed(123)  # as in a new process: other global random states
        got = AttGANEditor(**params)
        got.fit(store, ctx)
    assert saved == [1, 2]  # the resumed fit ran epoch 2 only (and no second warm-up)
    a, b = ref.state_dict(), got.state_dict()
    for part in ("generator", "discriminator"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert a["history"] == b["history"]


@pytest.mark.usefixtures("one_thread")
def test_nan_loss_is_a_one_line_user_error_and_keeps_the_checkpoint(store, tmp_path, monkeypatch):
    import torch.nn.functional as F

    import mxplain_attgan.train as train_mod  # the losses are computed there

    ctx = RunContext(progress=False, training_state_path=tmp_path / "editor.training.pt")
    real = F.l1_loss

    def l1_nan_after_first_epoch(a, b, *args, **kw):
        out = real(a, b, *args, **kw)
        return out * float("nan") if ctx.training_state_path.exists() else out

    monkeypatch.setattr(train_mod.F, "l1_loss", l1_nan_after_first_epoch)
    with pytest.raises(UserError, match=r"^attgan: g_rec loss is nan at epoch 2, step \d+; lower "
                                        r"\[editor\] lr .*last good checkpoint kept at .*epoch 1"):
        AttGANEditor(**TINY, epochs=3, n_critic=1).fit(store, ctx)
    assert ctx.training_state_path.exists()
    state = torch.load(ctx.training_state_path, weights_only=True)
    assert state["epoch"] == 1


def test_pooled_classifier_head_is_translation_invariant_and_trains(store):
    from mxplain_attgan.model import Discriminator

    d = Discriminator(4, 32, dim=4, fc_dim=8, n_layers=3, norm="layernorm", cls_pool="mean")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    h_adv, h_cls = d.features(x)
    assert h_adv.shape == (2, 16 * 4 * 4) and h_cls.shape == (2, 4 + 8 + 16)
    # the classifier sees each block's spatial means, the critic the last block's full map
    blocks = [d.conv[:3], d.conv[:6], d.conv]
    means = torch.cat([b(x).mean(dim=(2, 3)) for b in blocks], dim=1)
    assert torch.allclose(h_cls, means, atol=1e-6)
    assert torch.equal(h_adv, d.conv(x).flatten(1))
    flat = Discriminator(4, 32, dim=4, fc_dim=8, n_layers=3, norm="layernorm")
    assert flat.features(x)[1].shape == (2, 16 * 4 * 4)
    with pytest.raises(ValueError, match="cls_pool"):
        Discriminator(4, 32, n_layers=3, cls_pool="max")
    ed = AttGANEditor(**TINY, epochs=1, dis_norm="layernorm", cls_pool="mean")
    ed.fit(store, RunContext(progress=False))
    assert ed.discriminator_.cls_pool == "mean"
    with pytest.raises(UserError, match="cls_pool"):
        AttGANEditor(cls_pool="gap")._check_params()


def test_gatt_weights_weight_the_generator_attribute_loss_by_column_and_kept_columns():
    a = torch.tensor([[0.2, 0.4, 0.6, 0.8], [0.5, 0.5, 0.5, 0.5]])
    b = a.clone()
    b[0, 2], b[1, 0] = 0.9, 0.0
    plain = AttGANEditor()
    plain.attributes = ("size", "porosity", "polydispersity", "facetness")
    assert plain._gatt_weight(a, b) is None  # the reference's plain mean
    ed = AttGANEditor(gatt_weights={"polydispersity": 3.0}, gatt_keep_weight=2.0)
    ed.attributes = plain.attributes
    w = ed._gatt_weight(a, b)
    assert torch.equal(w, torch.tensor([[2.0, 2.0, 3.0, 2.0], [1.0, 2.0, 6.0, 2.0]]))


def test_gatt_weights_change_training_and_unknown_names_are_refused(store):
    ctx = RunContext(progress=False)
    base = dict(**TINY, epochs=1, n_critic=1, target_sampling="single")
    ref = AttGANEditor(**base)
    ref.fit(store, ctx)
    heavy = AttGANEditor(**base, gatt_weights={store.attributes[0]: 4.0}, gatt_keep_weight=3.0)
    heavy.fit(store, ctx)
    assert heavy.history_["g_cls"][0] > ref.history_["g_cls"][0] * 1.5  # the same first batch
    with pytest.raises(UserError, match=r"gatt_weights names \['grain'\]"):
        AttGANEditor(**base, gatt_weights={"grain": 2.0}).fit(store, ctx)
    with pytest.raises(UserError, match="gatt_weights must be a table"):
        AttGANEditor.check_params({"gatt_weights": {"size": -1.0}})
    with pytest.raises(UserError, match="gatt_keep_weight must be > 0"):
        AttGANEditor.check_params({"gatt_keep_weight": 0})
