"""AttGAN recipe options: g_ema, lr_d, dis_sn, res_blocks, diffaug, upsample (each off by default)."""

import pytest
import torch
from attgan_data import make_store, one_thread  # noqa: F401

from mxplain.errors import UserError
from mxplain.interfaces import RunContext
from mxplain_attgan.augment import cutout, diff_augment, parse_policy, translate
from mxplain_attgan.editor import AttGANEditor
from mxplain_attgan.model import Discriminator, Generator, ResBlock, upsample_conv

TINY = dict(enc_dim=4, dec_dim=4, dis_dim=4, dis_fc_dim=16, n_layers=3, batch_size=8, seed=0)
RECIPE = dict(g_ema=0.9, lr_d=4e-4, dis_sn=True, res_blocks=1, diffaug="translation,cutout",
              upsample="resize")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("attgan_recipe") / "tiles.zarr")


def test_defaults_are_the_reference():
    ed = AttGANEditor()
    assert (ed.g_ema, ed.lr_d, ed.dis_sn, ed.res_blocks, ed.diffaug, ed.upsample) == (
        0.0, None, False, 0, "", "transpose")


def test_ema_weights_are_shipped_and_used(store):
    ed = AttGANEditor(**TINY, epochs=2, n_critic=1, g_ema=0.9)
    ed.fit(store, RunContext(progress=False))
    g, ema = ed.generator_, ed.generator_ema_
    assert ema is not None and not any(p.requires_grad for p in ema.parameters())
    # the EMA lags the trained weights, so the two differ; the state dict ships the EMA
    assert any(not torch.equal(a, b) for a, b in zip(g.parameters(), ema.parameters()))
    sd = ed.state_dict()["generator"]
    assert all(torch.equal(sd[k], v) for k, v in ema.state_dict().items())
    t = torch.rand(3, 1, 32, 32)
    a = torch.rand(3, 4)
    with torch.no_grad():
        want = (ema(t * 2 - 1, (a * 2 - 1) * ed.thres_int) + 1) / 2
        assert torch.allclose(ed.decode(ed.encode(t), a), want, atol=1e-6)
    loaded = AttGANEditor(**TINY, g_ema=0.9)
    loaded.load_state_dict(ed.state_dict())
    assert loaded.generator_ema_ is None
    assert torch.allclose(loaded.edit(t, a), ed.edit(t, a), atol=1e-6)


def test_ema_update_rule():
    ed = AttGANEditor(**TINY, g_ema=0.5)
    ed._build(("a", "b", "c", "d"), 32)
    with torch.no_grad():
        for p in ed.generator_.parameters():
            p.fill_(1.0)
        for p in ed.generator_ema_.parameters():
            p.fill_(0.0)
    ed.history_["g_rec"] = [0.0] * 100  # past the ramp-up: beta = g_ema
    ed._update_ema()
    assert all(torch.allclose(p, torch.full_like(p, 0.5)) for p in ed.generator_ema_.parameters())
    ed.history_["g_rec"] = []  # first step: beta = 1/10
    ed._update_ema()
    assert all(torch.allclose(p, torch.full_like(p, 0.95)) for p in ed.generator_ema_.parameters())


def test_two_timescale_learning_rates(store):
    ed = AttGANEditor(**TINY, epochs=2, lr=1e-4, lr_d=3e-4, lr_decay_epoch=1)
    ed._build(("a", "b", "c", "d"), 32)
    x, a = ed._load_data(store)
    loop = ed._training_loop(x, a, torch.Generator().manual_seed(0), RunContext(progress=False), 32)
    assert loop.opt_g.param_groups[0]["lr"] == 1e-4 and loop.opt_d.param_groups[0]["lr"] == 3e-4

    class Bar:
        def update(self, n):
            pass

        def set_postfix(self, **kw):
            pass

    ed._train_epoch(loop, 1, Bar())  # the linear decay keeps the ratio 3
    g, d = loop.opt_g.param_groups[0]["lr"], loop.opt_d.param_groups[0]["lr"]
    assert 0 < g < 1e-4 and d == pytest.approx(3 * g)


def test_spectral_norm_bounds_the_critic_layers():
    torch.manual_seed(0)
    d = Discriminator(4, 32, dim=4, fc_dim=8, n_layers=3, norm="layernorm", spectral_norm=True)
    d.train()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    for _ in range(30):  # power iterations
        d(x)
    d.eval()
    for m in list(d.conv) + list(d.fc_adv) + list(d.fc_cls):
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            assert hasattr(m, "parametrizations")
            with torch.no_grad():
                sigma = torch.linalg.matrix_norm(m.weight.flatten(1), 2).item()
            assert sigma == pytest.approx(1.0, abs=0.05)
    plain = Discriminator(4, 32, dim=4, fc_dim=8, n_layers=3, norm="layernorm")
    assert not hasattr(plain.conv[0], "parametrizations")


def test_res_blocks_sit_on_the_bottleneck():
    g = Generator(4, 4, 4, n_layers=3, res_blocks=2)
    blocks = [m for m in g.res_layers if isinstance(m, ResBlock)]
    assert len(blocks) == 2 and blocks[0].body[0].in_channels == 16 + 4
    assert g(torch.rand(2, 1, 32, 32), torch.rand(2, 4)).shape == (2, 1, 32, 32)
    with torch.no_grad():  # a zero last BN scale makes the block the identity
        blocks[0].body[-1].weight.zero_()
    blocks[0].eval()
    z = torch.randn(2, 20, 4, 4)
    assert torch.equal(blocks[0](z), z)
    assert len(Generator(4, 4, 4, n_layers=3).res_layers) == 0


def test_diffaug_translation_and_cutout():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).view(2, 1, 16, 16) + 1.0
    y = translate(x, gen)
    assert y.shape == x.shape
    for i in range(2):  # a pure shift: the nonzero values are a window of the original
        nz = y[i, 0][y[i, 0] != 0]
        assert set(nz.tolist()) <= set(x[i, 0].flatten().tolist())
        assert (y[i, 0] == 0).sum() <= 16 * 16 - 14 * 14  # at most 2 of 16 rows/columns shifted
    c = cutout(x, gen)
    zeros = (c == 0).flatten(1).sum(1)
    assert ((zeros > 0) & (zeros <= 64)).all()  # an 8 x 8 square, clipped at the border
    assert torch.equal(c[c != 0], x[c != 0])
    # differentiable: gradients reach the input
    xr = torch.rand(2, 1, 16, 16, requires_grad=True)
    diff_augment(xr, ("translation", "cutout"), gen).sum().backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, (), gen), x)
    assert parse_policy("translation, cutout") == ("translation", "cutout")
    with pytest.raises(ValueError, match="rotation"):
        parse_policy("rotation")


def _nyquist_share(y: torch.Tensor) -> float:
    """Share of an image's (mean-removed) power at the period-2 frequencies (0, N/2), (N/2, 0),
    (N/2, N/2)."""
    f = torch.fft.fft2(y - y.mean()).abs() ** 2
    h = y.shape[-1] // 2
    return float((f[..., 0, h] + f[..., h, 0] + f[..., h, h]).sum() / f.sum())


def test_resize_upsampling_has_no_checkerboard():
    torch.manual_seed(0)
    x = torch.full((1, 3, 8, 8), 1.0)  # a constant feature map: any period-2 output is artefact
    transpose = torch.nn.Sequential(*upsample_conv(3, 1, "transpose", bias=False))
    resize = torch.nn.Sequential(*upsample_conv(3, 1, "resize", bias=False))
    with torch.no_grad():
        yt, yr = transpose(x)[..., 2:-2, 2:-2], resize(x)[..., 2:-2, 2:-2]  # away from padding
    assert yt.shape == yr.shape == (1, 1, 12, 12)
    assert _nyquist_share(yt) > 0.9  # the uneven overlap of a 4x4 kernel at stride 2
    assert float(yr.std()) < 1e-6  # resize-convolution: constant in, constant out
    g = Generator(4, 4, 4, n_layers=3, upsample="resize")
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    assert g(torch.rand(2, 1, 32, 32), torch.rand(2, 4)).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="upsample"):
        upsample_conv(3, 1, "bilinear", bias=False)


def test_recipe_option_errors():
    for bad in (dict(g_ema=1.0), dict(lr_d=0.0), dict(dis_sn="yes"), dict(res_blocks=-1),
                dict(diffaug="translation,rotation"), dict(upsample="pixelshuffle")):
        key = next(iter(bad))
        with pytest.raises(UserError, match=rf"^\[editor\] attgan: {key}"):
            AttGANEditor(**bad)._check_params()


class _Interrupt(Exception):
    pass


@pytest.mark.usefixtures("one_thread")
def test_killed_training_with_the_recipe_resumes_bit_identically(store, tmp_path, monkeypatch):
    from mxplain.training import TrainingCheckpoint

    params = dict(**TINY, **RECIPE, epochs=2, n_critic=1, classifier_warmup_epochs=1)
    ref = AttGANEditor(**params)
    ref.fit(store, RunContext(progress=False))
    ctx = RunContext(progress=False, training_state_path=tmp_path / "editor.training.pt")
    save = TrainingCheckpoint.save

    def save_then_stop(self, epoch, extra=None):
        save(self, epoch, extra)
        if epoch == 1:
            raise _Interrupt

    with monkeypatch.context() as mp:
        mp.setattr(TrainingCheckpoint, "save", save_then_stop)
        with pytest.raises(_Interrupt):
            AttGANEditor(**params).fit(store, ctx)
        state = torch.load(ctx.training_state_path, weights_only=True)
        assert set(state["modules"]) == {"G", "D", "G_ema"}
        torch.manual_seed(123)
        got = AttGANEditor(**params)
        got.fit(store, ctx)
    a, b = ref.state_dict(), got.state_dict()
    for part in ("generator", "discriminator"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert a["history"] == b["history"]


def test_noise_inputs_start_silent_and_are_deterministic_per_tile(store):
    from mxplain_attgan.editor import tile_noise

    torch.manual_seed(0)
    g = Generator(4, 4, 4, n_layers=3, noise=True, upsample="resize")
    plain = Generator(4, 4, 4, n_layers=3, upsample="resize")
    plain.load_state_dict({k: v for k, v in g.state_dict().items() if not k.startswith("noise")})
    g.eval(), plain.eval()
    x, c = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 4)
    zs = g.encode(x)
    assert len(zs) == 4 and zs[-1].shape == (2, 1, 32, 32)  # 3 features + the noise image
    with torch.no_grad():  # zero-initialised weights: the noise-free generator
        assert torch.allclose(g.decode(zs, c), plain.decode(plain.encode(x), c), atol=1e-6)
        g.noise_out.fill_(0.5)
        assert not torch.allclose(g.decode(zs, c), plain.decode(plain.encode(x), c), atol=1e-3)
    t = torch.rand(3, 1, 32, 32)
    n = tile_noise(t)
    assert torch.equal(n, tile_noise(t)) and torch.equal(n[1:], tile_noise(t[1:]))  # per tile
    assert abs(float(n.mean())) < 0.1 and abs(float(n.std()) - 1) < 0.1
    assert not torch.equal(n[0], n[1])
    ed = AttGANEditor(**TINY, epochs=1, n_critic=1, noise=True, upsample="resize")
    ed.fit(store, RunContext(progress=False))
    a = torch.rand(3, 4)
    assert torch.equal(ed.edit(t, a), ed.edit(t, a))  # reproducible: the tile's own noise
    with pytest.raises(UserError, match="noise"):
        AttGANEditor(noise="yes")._check_params()


def test_rec_blur_lets_the_noise_output_grow_and_adv_rec_scores_reconstructions(store,
                                                                                 monkeypatch):
    """With the plain L1 the reconstruction loss pushes the noise weights to zero; on the
    low-passed images it does not see pixel noise, so noise costs the reconstruction nothing."""
    from mxplain.filters import gaussian_blur

    torch.manual_seed(0)
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    n = torch.randn(4, 1, 32, 32)
    for sigma, most in ((0.0, None), (1.0, 0.3)):
        w = torch.tensor(0.2, requires_grad=True)
        loss = torch.nn.functional.l1_loss(gaussian_blur(x + w * n, sigma), gaussian_blur(x, sigma))
        loss.backward()
        if most is None:
            plain = float(w.grad)
        else:
            assert 0 < float(w.grad) < most * plain
    calls = {}
    d_forward = Discriminator.forward
    monkeypatch.setattr(Discriminator, "forward",
                        lambda self, t: (calls.__setitem__(len(calls), t), d_forward(self, t))[1])
    for adv_rec in (False, True):
        calls.clear()
        ed = AttGANEditor(**TINY, epochs=1, n_critic=1, noise=True, upsample="resize",
                          rec_blur=1.0, adv_rec=adv_rec)
        ed.fit(store, RunContext(progress=False))
        counts = (len(calls), len(ed.history_["g_rec"]))
        if not adv_rec:
            plain = counts
    # with adv_rec the reconstructions are scored twice more per iteration (n_critic 1: in the
    # critic step and in the generator step), on top of the edits and the GP interpolates
    assert counts[1] == plain[1] > 0 and counts[0] - plain[0] == 2 * counts[1]
    assert all(torch.isfinite(torch.tensor(v)).all() for v in ed.history_.values())
    for bad in (dict(rec_blur=-1.0), dict(rec_blur=True), dict(adv_rec=1)):
        with pytest.raises(UserError, match=next(iter(bad))):
            AttGANEditor(**bad)._check_params()


def test_difference_edits_keep_the_tile_and_move_by_the_generators_change(store, monkeypatch):
    """edit_mode = "difference": decode = x + G(z, a) - G(z, c_hat), so at the classifier's own
    reading the edit is the tile itself, and between two attribute vectors it changes by exactly
    what the rendering editor's images change by; the detail layer gets no gradient; training
    shows the critic composites that carry the real tile's pixels."""
    torch.manual_seed(0)
    ed = AttGANEditor(**TINY, epochs=1, n_critic=1, edit_mode="difference")
    ed.fit(store, RunContext(progress=False))
    x = store.lot(0).tiles[:4]
    a = torch.full((4, len(store.attributes)), 0.3)
    b = a.clone()
    b[:, 0] = 0.8
    with torch.no_grad():
        lat = ed.encode(x)
        assert len(lat) == ed.n_layers + 1
        own = ed.decode(lat, ed.classify(x))
        assert torch.allclose(own, x, atol=1e-5)
        diff = ed.decode(lat, b) - ed.decode(lat, a)
        ed.edit_mode = "render"
        plain = ed.decode(ed.encode(x), b) - ed.decode(ed.encode(x), a)
        ed.edit_mode = "difference"
    inside = (ed.decode(lat, b) > 0.01) & (ed.decode(lat, b) < 0.99) \
        & (ed.decode(lat, a) > 0.01) & (ed.decode(lat, a) < 0.99)
    assert inside.float().mean() > 0.5
    assert torch.allclose(diff[inside], plain[inside], atol=1e-5)
    assert float(plain.abs().mean()) > 1e-3  # the attribute change does move the images
    zg = [t.clone().requires_grad_(True) for t in lat]
    ed.decode(tuple(zg), b).sum().backward()
    assert zg[-1].grad is None and zg[-2].grad.abs().sum() > 0  # the bottleneck
    shown = []
    real_shown = ed._shown
    monkeypatch.setattr(ed, "_shown",
                        lambda x, f, r: (shown.append((x, f, r)), real_shown(x, f, r))[1])
    ed.epochs = 2
    ed.fit(store, RunContext(progress=False))
    xs, fake, rec = shown[0]
    comp = real_shown(xs, fake, rec)
    assert torch.allclose(comp, (xs + fake - rec).clamp(-1, 1))
    assert not torch.allclose(comp, fake, atol=1e-3)
    with pytest.raises(UserError, match="edit_mode"):
        AttGANEditor(edit_mode="residual")._check_params()
    with pytest.raises(UserError, match="adv_rec"):
        AttGANEditor(edit_mode="difference", adv_rec=True)._check_params()


def test_a_checkpoint_loads_as_a_difference_editor(store, tmp_path):
    """edit_mode is an inference parameter: a checkpoint trained in render mode loads as a
    difference editor (the same weights; the tile itself at the classifier's reading); training
    parameters cannot be changed on a checkpoint."""
    ed = AttGANEditor(**TINY, epochs=1, n_critic=1)
    ed.fit(store, RunContext(progress=False))
    ed.save(tmp_path / "e.pt")
    x = store.lot(0).tiles[:3]
    diff = AttGANEditor.load(tmp_path / "e.pt", params={"edit_mode": "difference"})
    assert diff.edit_mode == "difference" and AttGANEditor.load(tmp_path / "e.pt").edit_mode == \
        "render"
    with torch.no_grad():
        assert torch.allclose(diff.edit(x, diff.classify(x)), x, atol=1e-5)
        assert not torch.allclose(ed.edit(x, ed.classify(x)), x, atol=1e-2)
    with pytest.raises(UserError, match="epochs cannot be changed on a trained checkpoint"):
        AttGANEditor.load(tmp_path / "e.pt", params={"epochs": 3})


def test_edit_gain_scales_the_inference_codes_like_the_references_test_int(store, tmp_path):
    """edit_gain is an inference parameter: a checkpoint loads with it; its decode at attributes a
    is the gain-1 decode at 0.5 + edit_gain (a - 0.5) (the codes (2a - 1) thres_int edit_gain),
    the difference editor still returns the tile at the classifier's reading, and out-of-range
    gains are one error line."""
    ed = AttGANEditor(**TINY, epochs=1, n_critic=1, edit_mode="difference")
    ed.fit(store, RunContext(progress=False))
    ed.save(tmp_path / "e.pt")
    assert AttGANEditor.load(tmp_path / "e.pt").edit_gain == 1.0
    strong = AttGANEditor.load(tmp_path / "e.pt", params={"edit_gain": 2.0})
    x = store.lot(0).tiles[:3]
    a = torch.full((3, len(store.attributes)), 0.4)
    a[:, 0] = 0.6
    with torch.no_grad():
        assert torch.allclose(strong.decode(strong.encode(x), strong.classify(x)), x, atol=1e-5)
        g = strong._require()
        zs = g.encode(x.float() * 2 - 1)
        lat = strong.encode(x)
        plain = AttGANEditor.load(tmp_path / "e.pt", params={"edit_mode": "render"})
        want = plain.decode(zs, 0.5 + 2.0 * (a - 0.5)) - plain.decode(zs, 0.5 + 2.0 * (
            strong.classify(x) - 0.5))
        got = strong.decode(lat, a) - x
        inside = (strong.decode(lat, a) > 0.01) & (strong.decode(lat, a) < 0.99)
        assert inside.float().mean() > 0.5
        assert torch.allclose(got[inside], want[inside], atol=1e-4)
        weak = AttGANEditor.load(tmp_path / "e.pt", params={"edit_mode": "difference"})
        assert float((strong.decode(lat, a) - x).abs().mean()) > \
            float((weak.decode(weak.encode(x), a) - x).abs().mean())
    for bad in (0, -1.0, 5.0, True, "2"):
        with pytest.raises(UserError, match="edit_gain"):
            AttGANEditor(edit_gain=bad)._check_params()


def test_gated_shortcuts_pass_the_skip_through_a_code_dependent_gate():
    """gated_shortcuts: the skips after the plain ones get a gate in [0, 1] that sees the code; a
    closed gate is a zero skip, an open one the plain skip; the count is capped at n_layers - 1."""
    torch.manual_seed(0)
    g = Generator(3, 4, 4, n_layers=3, shortcut_layers=1, gated_shortcuts=1)
    plain = Generator(3, 4, 4, n_layers=3, shortcut_layers=2)
    assert len(g.gates) == 1 and g.gates[0].out_channels == g.enc_ch[0]
    assert Generator(3, 4, 4, n_layers=3, shortcut_layers=1, gated_shortcuts=5).gated_shortcuts == 1
    plain.load_state_dict({k: v for k, v in g.state_dict().items() if not k.startswith("gates")})
    g.eval()
    plain.eval()
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    c = torch.rand(2, 3) * 2 - 1
    zs = g.encode(x)
    with torch.no_grad():
        out = g.decode(zs, c)
        assert out.shape == (2, 1, 32, 32)
        z1 = g.dec_layers[0](torch.cat([zs[-1], g._tile(c, *zs[-1].shape[-2:])], 1))
        z1 = g.dec_layers[1](torch.cat([z1, zs[1], g._tile(c, *z1.shape[-2:])], 1))
        gate = g.gate(1, z1, zs[0], c)
        assert gate.min() >= 0 and gate.max() <= 1 and gate.std() > 0
        assert not torch.allclose(gate, g.gate(1, z1, zs[0], -c))  # the code moves the gate
        g.gates[0].weight.zero_()
        g.gates[0].bias.fill_(30.0)  # open: the plain skip
        assert torch.allclose(g.decode(zs, c), plain.decode(zs, c), atol=1e-5)
        g.gates[0].bias.fill_(-30.0)  # closed: a zero skip
        zero = tuple(torch.zeros_like(z) if i == 0 else z for i, z in enumerate(zs))
        assert torch.allclose(g.decode(zs, c), plain.decode(zero, c), atol=1e-5)
    with pytest.raises(UserError, match="gated_shortcuts"):
        AttGANEditor(gated_shortcuts=-1)._check_params()
