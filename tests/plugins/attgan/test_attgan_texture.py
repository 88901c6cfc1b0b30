"""The texture-statistics attribute head (``cls_pool = "stats"``, mxplain_attgan.texture)."""

import numpy as np
import pytest
import torch
from attgan_data import make_store, one_thread  # noqa: F401

from mxplain.filters import gaussian_blur
from mxplain.interfaces import RunContext
from mxplain_attgan.editor import AttGANEditor
from mxplain_attgan.model import Discriminator
from mxplain_attgan.texture import STAT_NAMES, TextureHead, texture_statistics

TINY = dict(enc_dim=4, dec_dim=4, dis_dim=4, dis_fc_dim=16, n_layers=3, batch_size=8, seed=0)


def _stat(x: torch.Tensor, name: str) -> torch.Tensor:
    return texture_statistics(x)[:, STAT_NAMES.index(name)]


def _bright_tiles(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (0.7 + 0.02 * torch.randn(n, 1, size, size, generator=g)).clamp(0, 1)


def _with_pits(x: torch.Tensor, n_pits: int, seed: int = 1) -> torch.Tensor:
    """Dark Gaussian pits (sigma 0.7 px, 60 % deep) at random places, as the synthetic renderer's."""
    rng = np.random.default_rng(seed)
    h = x.shape[-1]
    yy, xx = np.mgrid[0:h, 0:h]
    out = x.clone()
    for i in range(len(x)):
        dark = np.ones((h, h))
        for cy, cx in rng.uniform(3, h - 3, (n_pits, 2)):
            dark *= 1 - 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.7 ** 2))
        out[i, 0] *= torch.from_numpy(dark).float()
    return out


def test_statistics_shape_names_and_gradients():
    x = _bright_tiles().requires_grad_(True)
    s = texture_statistics(x)
    assert s.shape == (4, len(STAT_NAMES)) and len(set(STAT_NAMES)) == len(STAT_NAMES)
    assert torch.isfinite(s).all()
    s.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_pits_raise_the_depression_and_dark_blob_statistics():
    x = _bright_tiles()
    few, many = _with_pits(x, 3), _with_pits(x, 20)
    for name in ("depression_0.08", "hessian0.7_dark_above_0.04", "hessian1.0_dark"):
        a, b, c = (_stat(t, name).mean().item() for t in (x, few, many))
        assert a < b < c, name
    # a uniform tile has (almost) no local depressions
    assert _stat(x, "depression_0.16").max() < 1e-3


def test_blur_lowers_the_finest_band_and_stripes_are_coherent():
    x = _bright_tiles()
    assert (_stat(gaussian_blur(x, 1.0), "band0_rms") < 0.5 * _stat(x, "band0_rms")).all()
    y = torch.arange(32.0)[:, None].expand(32, 32)
    stripes = (0.5 + 0.3 * torch.sin(2 * np.pi * y / 8))[None, None]
    noise = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert _stat(stripes, "coherence_2.8").item() > 0.95
    assert _stat(noise, "coherence_2.8").item() < 0.5


def test_head_scaling_standardises_the_tiles_it_is_fitted_on():
    head = TextureHead(2)
    x = torch.cat([_bright_tiles(8), _with_pits(_bright_tiles(8, seed=3), 10)]) * 2 - 1
    head.fit_scaling(x, batch=5)
    z = head.standardised(x)
    stats = texture_statistics((x + 1) / 2)
    varying = stats.std(dim=0) > 1e-3 * stats.mean(dim=0).abs() + 1e-6
    assert varying.sum() > 40 and (head.scale[~varying] > head.mean[~varying].abs() * 1e-3).all()
    assert torch.allclose(z.mean(dim=0)[varying], torch.zeros(int(varying.sum())), atol=1e-3)
    assert torch.allclose(z.std(dim=0)[varying], torch.ones(int(varying.sum())), atol=1e-3)
    assert head(x).shape == (16, 2)


def test_stats_head_has_no_spectral_norm_and_reads_the_image():
    d = Discriminator(4, 32, dim=4, fc_dim=8, n_layers=3, norm="layernorm", cls_pool="stats",
                      spectral_norm=True)
    assert isinstance(d.fc_cls, TextureHead)
    assert not hasattr(d.fc_cls.linear, "parametrizations")
    assert hasattr(d.conv[0], "parametrizations")
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    _, logits = d(x)
    assert torch.allclose(logits, d.fc_cls(x))


def test_training_fits_the_scaling_and_the_state_round_trips(store):
    ed = AttGANEditor(**TINY, epochs=1, n_critic=1, cls_pool="stats", dis_norm="layernorm",
                      classifier_warmup_epochs=3, classifier_warmup_lr=1e-2,
                      diffaug="translation,cutout", edit_mode="difference")
    ed.fit(store, RunContext(progress=False))
    head = ed.discriminator_.fc_cls
    tiles, _ = store.all_tiles()
    want = texture_statistics(torch.from_numpy(tiles).float()[:, None] / 255.0).mean(dim=0)
    assert torch.allclose(head.mean, want, atol=1e-4)
    # the attribute readings of real tiles follow the size labels (mean grey in attgan_data)
    x = torch.from_numpy(tiles).float()[:, None] / 255.0
    lots = np.repeat(np.arange(store.n_lots), len(tiles) // store.n_lots)
    read = ed.classify(x)[:, 0].numpy()
    lot_read = [read[lots == i].mean() for i in range(store.n_lots)]
    assert np.corrcoef(lot_read, store.lot_attributes[:, 0])[0, 1] > 0.8
    loaded = AttGANEditor(**TINY, cls_pool="stats", dis_norm="layernorm", edit_mode="difference")
    loaded.load_state_dict(ed.state_dict())
    assert torch.allclose(loaded.classify(x), ed.classify(x), atol=1e-6)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("attgan_texture") / "tiles.zarr")


def test_trunk_options_are_refused_with_the_stats_head():
    from mxplain.errors import UserError

    for bad in (dict(cls_crop=16), dict(cls_dropout=0.2)):
        with pytest.raises(UserError, match=r"^\[editor\] attgan: cls_crop and cls_dropout"):
            AttGANEditor(cls_pool="stats", **bad)._check_params()
    AttGANEditor(cls_pool="stats")._check_params()


def test_export_keeps_the_texture_head_in_float32():
    from mxplain_attgan.export import _half

    d = Discriminator(4, 32, dim=4, fc_dim=8, n_layers=3, norm="layernorm", cls_pool="stats")
    state = _half({"discriminator": d.state_dict()})["discriminator"]
    head = {k for k in state if k.startswith("fc_cls.")}
    assert head == {"fc_cls.mean", "fc_cls.scale", "fc_cls.linear.weight", "fc_cls.linear.bias"}
    assert all(state[k].dtype == torch.float32 for k in head)
    assert all(v.dtype == torch.float16 for k, v in state.items() if k not in head)


def test_trunk_columns_come_from_a_head_on_the_trunk_means():
    torch.manual_seed(0)
    d = Discriminator(4, 32, dim=4, fc_dim=8, n_layers=3, norm="layernorm", cls_pool="stats",
                      spectral_norm=True, trunk_columns=(2,))
    assert hasattr(d.fc_cls_trunk[0], "parametrizations")
    d.eval()  # no power iteration between the calls compared
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    _, logits = d(x)
    means = d.features(x)[1]
    assert means.shape == (3, 4 + 8 + 16)  # the three blocks' channel means
    want = d.fc_cls(x).clone()
    want[:, 2] = d.fc_cls_trunk(means)[:, 2]
    assert torch.allclose(logits, want)
    ids = {id(p) for p in d.classifier_parameters()}
    assert all(id(p) in ids for p in d.fc_cls_trunk.parameters())
    with pytest.raises(ValueError, match="needs cls_pool = 'stats'"):
        Discriminator(4, 32, dim=4, fc_dim=8, n_layers=3, cls_pool="mean", trunk_columns=(1,))


def test_cls_trunk_attributes_are_checked_trained_and_round_trip(store):
    from mxplain.errors import UserError

    with pytest.raises(UserError, match="cls_trunk_attributes chooses"):
        AttGANEditor(cls_trunk_attributes=["size"])._check_params()
    with pytest.raises(UserError, match="must be a list of attribute names"):
        AttGANEditor(cls_pool="stats", cls_trunk_attributes="size")._check_params()
    name = store.attributes[1]
    bad = AttGANEditor(**TINY, epochs=1, cls_pool="stats", dis_norm="layernorm",
                       cls_trunk_attributes=["nope"])
    with pytest.raises(UserError, match=r"cls_trunk_attributes names \['nope'\]"):
        bad.fit(store, RunContext(progress=False))
    ed = AttGANEditor(**TINY, epochs=1, n_critic=1, cls_pool="stats", dis_norm="layernorm",
                      classifier_warmup_epochs=2, classifier_warmup_lr=1e-2,
                      cls_trunk_attributes=[name])
    fresh = AttGANEditor(**TINY, cls_pool="stats", dis_norm="layernorm",
                         cls_trunk_attributes=[name])
    torch.manual_seed(TINY["seed"])  # as fit() does before building the networks
    fresh._build(tuple(store.attributes), store.tile_size)
    before = {k: v.clone() for k, v in fresh.discriminator_.fc_cls_trunk.state_dict().items()}
    ed.fit(store, RunContext(progress=False))
    after = ed.discriminator_.fc_cls_trunk.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the warm-up trained it
    tiles, _ = store.all_tiles()
    x = torch.from_numpy(tiles).float()[:, None] / 255.0
    loaded = AttGANEditor(**TINY, cls_pool="stats", dis_norm="layernorm",
                          cls_trunk_attributes=[name])
    loaded.load_state_dict(ed.state_dict())
    assert torch.allclose(loaded.classify(x), ed.classify(x), atol=1e-6)
    plain = AttGANEditor(**TINY, cls_pool="stats", dis_norm="layernorm")
    with pytest.raises(ValueError, match="discriminator architecture differs"):
        plain.load_state_dict(ed.state_dict())
