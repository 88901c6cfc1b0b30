"""AttGAN networks: shapes, channel layout, attribute code, batch independence."""

import pytest
import torch
from attgan_data import one_thread  # noqa: F401

from mxplain_attgan.model import (
    MAX_DIM,
    Discriminator,
    Generator,
    _dec_channels,
    _enc_channels,
    decode_attributes,
    encode_attributes,
)


@pytest.mark.parametrize(
    "size,n_layers,shortcut,inject,k",
    [(32, 3, 1, 1, 4), (32, 3, 0, 0, 2), (32, 5, 2, 2, 4), (64, 4, 1, 1, 4), (64, 4, 3, 0, 3),
     (64, 3, 0, 2, 4), (64, 5, 1, 1, 1), (64, 4, 9, 9, 4)],
)
def test_generator_and_discriminator_shapes(size, n_layers, shortcut, inject, k):
    g = Generator(k, enc_dim=4, dec_dim=4, n_layers=n_layers, shortcut_layers=shortcut,
                  inject_layers=inject).eval()
    x = torch.rand(3, 1, size, size) * 2 - 1
    zs = g.encode(x)
    assert len(zs) == n_layers
    for i, z in enumerate(zs):
        assert z.shape == (3, min(4 * 2**i, MAX_DIM), size // 2 ** (i + 1), size // 2 ** (i + 1))
    y = g.decode(zs, torch.zeros(3, k))
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0
    # shortcut/inject are capped at n_layers - 1 as in the reference
    assert g.shortcut_layers == min(shortcut, n_layers - 1)
    assert g.inject_layers == min(inject, n_layers - 1)
    norm = "instancenorm" if size // 2**n_layers >= 2 else "layernorm"
    d = Discriminator(k, size, dim=4, fc_dim=8, n_layers=n_layers, norm=norm)
    adv, cls = d(x)
    assert adv.shape == (3,) and cls.shape == (3, k)


def test_channel_layout_capped_and_mirrored():
    assert _enc_channels(64, 6) == [64, 128, 256, 512, 1024, 1024]
    assert _dec_channels(64, 5) == [1024, 512, 256, 128]
    assert _dec_channels(16, 3) == [64, 32]


def test_decoder_uses_shortcut_and_injection_channels():
    g = Generator(4, enc_dim=8, dec_dim=8, n_layers=4, shortcut_layers=2, inject_layers=1)
    # encoder channels 8, 16, 32, 64; decoder blocks output 64, 32, 16, then 1
    assert g.dec_layers[0][0].in_channels == 64 + 4  # bottleneck + attributes
    # block 1 input = block 0 output (64) + encoder skip (enc layer 2: 32) + re-injected attrs
    assert g.dec_layers[1][0].in_channels == 64 + 32 + 4
    # block 2 input = block 1 output (32) + encoder skip (enc layer 1: 16), no injection
    assert g.dec_layers[2][0].in_channels == 32 + 16
    assert g.dec_layers[3][0].in_channels == 16
    assert g.dec_layers[3][0].out_channels == 1


def test_attribute_code_mapping():
    a = torch.tensor([[0.0, 0.25, 0.5, 1.0]])
    c = encode_attributes(a, 0.5)
    assert torch.allclose(c, torch.tensor([[-0.5, -0.25, 0.0, 0.5]]))
    assert torch.allclose(decode_attributes(c, 0.5), a)


def test_wrong_attribute_width_is_refused():
    g = Generator(4, enc_dim=4, dec_dim=4, n_layers=3)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        g(torch.zeros(2, 1, 32, 32), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="divisible"):
        Discriminator(4, 40, n_layers=4)
    with pytest.raises(ValueError, match="instance"):
        Discriminator(4, 32, n_layers=5)  # 1x1 features: instance norm undefined


def test_nearest_up2_is_nn_upsample_bit_for_bit_with_the_same_gradient():
    from mxplain_attgan.model import NearestUp2

    x = torch.randn(3, 5, 7, 9, generator=torch.Generator().manual_seed(0), requires_grad=True)
    ref = torch.nn.Upsample(scale_factor=2, mode="nearest")(x)
    out = NearestUp2()(x)
    assert out.shape == (3, 5, 14, 18) and torch.equal(out, ref)
    w = torch.randn_like(ref)
    g_ref, = torch.autograd.grad((ref * w).sum(), x)
    g_out, = torch.autograd.grad((out * w).sum(), x)
    assert torch.allclose(g_out, g_ref, atol=1e-6)
