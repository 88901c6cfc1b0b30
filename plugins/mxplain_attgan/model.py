"""AttGAN networks (He et al., "AttGAN: Facial Attribute Editing by Only Changing What You Want",
IEEE TIP 2019), as used for SEM tiles in seed 000 §4.2 and supplement C.

Generator
    Encoder: ``n_layers`` blocks Conv(4x4, stride 2, pad 1) + BatchNorm + LeakyReLU(0.2), channels
    ``min(enc_dim * 2**i, 1024)``. The latent is the tuple of every encoder block's output (batch
    first); the last one is the bottleneck.
    Decoder: the attribute code is tiled to the bottleneck's spatial size and concatenated to it,
    then ``n_layers`` blocks ConvTranspose(4x4, stride 2, pad 1) + BatchNorm + ReLU, channels
    ``min(dec_dim * 2**(n_layers - i - 1), 1024)``; the last block maps to 1 channel + tanh. After
    decoder block ``i < shortcut_layers`` the encoder feature of the same resolution is concatenated
    (U-Net skip), after block ``i < inject_layers`` the tiled attribute code again (both capped at
    ``n_layers - 1``), as in the reference implementation.

Discriminator
    ``n_layers`` blocks Conv(4x4, stride 2) + InstanceNorm(affine) (or LayerNorm) + LeakyReLU(0.2) -
    no BatchNorm because of the gradient penalty - then two heads on the flattened features: an
    adversarial critic FC(dis_fc_dim) + LeakyReLU + FC(1) and an attribute classifier
    FC(dis_fc_dim) + LeakyReLU + FC(n_attributes) giving logits.

Attribute encoding (explicit)
    A user attribute ``a`` in [0, 1] becomes the internal code ``c = (2 a - 1) * thres_int``
    (:func:`encode_attributes`; ``thres_int`` default 0.5 as in the reference), so the generator
    sees codes in ``[-thres_int, thres_int]``. The classifier predicts logits of ``a`` itself,
    trained with BCE-with-logits against the soft label ``a`` (continuous lot labels broadcast to
    every tile).

Images
    Networks work on images in [-1, 1] (``x = 2 t - 1`` for tiles ``t`` in [0, 1]); the editor maps
    back with ``t = (y + 1) / 2``.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_DIM = 1024


def encode_attributes(a: torch.Tensor, thres_int: float) -> torch.Tensor:
    """User attributes in [0, 1] -> generator codes ``(2a - 1) * thres_int``."""
    return (a * 2.0 - 1.0) * thres_int


def decode_attributes(c: torch.Tensor, thres_int: float) -> torch.Tensor:
    """Inverse of :func:`encode_attributes`."""
    return (c / thres_int + 1.0) / 2.0


def _enc_channels(enc_dim: int, n_layers: int) -> list[int]:
    return [min(enc_dim * 2**i, MAX_DIM) for i in range(n_layers)]


def _dec_channels(dec_dim: int, n_layers: int) -> list[int]:
    return [min(dec_dim * 2 ** (n_layers - i - 1), MAX_DIM) for i in range(n_layers - 1)]


class Generator(nn.Module):
    """AttGAN encoder-decoder; see the module docstring."""

    def __init__(self, n_attributes: int, enc_dim: int = 64, dec_dim: int = 64, n_layers: int = 5,
                 shortcut_layers: int = 1, inject_layers: int = 1, in_channels: int = 1):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_attributes = n_attributes
        self.n_layers = n_layers
        self.shortcut_layers = max(0, min(shortcut_layers, n_layers - 1))
        self.inject_layers = max(0, min(inject_layers, n_layers - 1))
        enc_ch = _enc_channels(enc_dim, n_layers)
        dec_ch = _dec_channels(dec_dim, n_layers)
        self.enc_ch = enc_ch

        enc = []
        n_in = in_channels
        for n_out in enc_ch:
            enc.append(nn.Sequential(
                nn.Conv2d(n_in, n_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(n_out),
                nn.LeakyReLU(0.2),
            ))
            n_in = n_out
        self.enc_layers = nn.ModuleList(enc)

        dec = []
        n_in = enc_ch[-1] + n_attributes
        for i in range(n_layers):
            if i < n_layers - 1:
                n_out = dec_ch[i]
                dec.append(nn.Sequential(
                    nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(n_out),
                    nn.ReLU(),
                ))
                n_in = n_out
                if i < self.shortcut_layers:
                    n_in += enc_ch[n_layers - 2 - i]
                if i < self.inject_layers:
                    n_in += n_attributes
            else:
                dec.append(nn.Sequential(
                    nn.ConvTranspose2d(n_in, in_channels, 4, stride=2, padding=1),
                    nn.Tanh(),
                ))
        self.dec_layers = nn.ModuleList(dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Images in [-1, 1] -> every encoder block's output (the last one is the bottleneck)."""
        zs = []
        z = x
        for layer in self.enc_layers:
            z = layer(z)
            zs.append(z)
        return tuple(zs)

    @staticmethod
    def _tile(c: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return c.view(c.size(0), -1, 1, 1).expand(-1, -1, h, w).to(c.dtype)

    def decode(self, zs: tuple[torch.Tensor, ...], c: torch.Tensor) -> torch.Tensor:
        """Encoder features and attribute codes ``(N, K)`` -> images in [-1, 1]."""
        if c.ndim != 2 or c.size(1) != self.n_attributes:
            raise ValueError(f"attributes must have shape (N, {self.n_attributes}), "
                             f"got {tuple(c.shape)}")
        if len(zs) != self.n_layers:
            raise ValueError(f"latent must hold {self.n_layers} encoder features, got {len(zs)}")
        z = zs[-1]
        z = torch.cat([z, self._tile(c, z.size(2), z.size(3)).to(z.dtype)], dim=1)
        for i, layer in enumerate(self.dec_layers):
            z = layer(z)
            if i < self.shortcut_layers:
                skip = zs[self.n_layers - 2 - i]
                z = torch.cat([z, skip.to(z.dtype)], dim=1)
            if i < self.inject_layers:
                z = torch.cat([z, self._tile(c, z.size(2), z.size(3)).to(z.dtype)], dim=1)
        return z

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), c)


class Discriminator(nn.Module):
    """WGAN-GP critic plus attribute classifier sharing one convolutional trunk."""

    def __init__(self, n_attributes: int, image_size: int, dim: int = 64, fc_dim: int = 1024,
                 n_layers: int = 5, norm: str = "instancenorm", in_channels: int = 1):
        super().__init__()
        if image_size % (2**n_layers):
            raise ValueError(f"tile size {image_size} is not divisible by 2**n_layers = "
                             f"{2**n_layers}")
        if norm == "instancenorm" and image_size // 2**n_layers < 2:
            raise ValueError(f"tile size {image_size} with n_layers={n_layers} leaves 1x1 "
                             f"features, where instance norm is undefined; use layernorm or "
                             f"fewer layers")
        if norm not in ("instancenorm", "layernorm"):
            raise ValueError(f"discriminator norm must be 'instancenorm' or 'layernorm', "
                             f"not {norm!r}")
        layers = []
        n_in = in_channels
        size = image_size
        for i in range(n_layers):
            n_out = min(dim * 2**i, MAX_DIM)
            size //= 2
            norm_layer = (nn.InstanceNorm2d(n_out, affine=True) if norm == "instancenorm"
                          else nn.GroupNorm(1, n_out))  # GroupNorm(1, C) is LayerNorm over C,H,W
            layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), norm_layer,
                       nn.LeakyReLU(0.2)]
            n_in = n_out
        self.conv = nn.Sequential(*layers)
        flat = n_in * size * size
        self.fc_adv = nn.Sequential(nn.Linear(flat, fc_dim), nn.LeakyReLU(0.2),
                                    nn.Linear(fc_dim, 1))
        self.fc_cls = nn.Sequential(nn.Linear(flat, fc_dim), nn.LeakyReLU(0.2),
                                    nn.Linear(fc_dim, n_attributes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] -> (critic score ``(N,)``, attribute logits ``(N, K)``)."""
        h = self.conv(x).flatten(1)
        return self.fc_adv(h).squeeze(1), self.fc_cls(h)
