"""TextureVAE networks and losses (seed 003, Sardeshmukh et al. 2021).

* Encoder: the frozen VGG19 trunk (:mod:`mxplain.vgg`) up to ``pool5``; its flattened features feed
  two fully connected heads, trained from scratch, for the posterior mean ``mu`` and log variance
  ``log sigma^2`` (seed 003 §3.3: "the last two fully connected layers of the encoder that compute
  mu and sigma of the posterior are trained from scratch").
* Decoder: a linear projection of ``z`` to a ``(8*dec_dim, s/16, s/16)`` map, then four blocks of
  3x3 convolution -> nearest-neighbour upsampling x2 -> LeakyReLU(0.3), and a final 3x3 convolution
  with a sigmoid to one grey channel in [0, 1].
* Loss: ``kl_weight * KL(q(z|x) || N(0, I)) + style loss`` - no pixel reconstruction term. The style
  loss is eq. 2 of the seed: Gram matrices ``G^l = F^l F^l^T`` at ``conv1_1`` and
  ``pool1``-``pool4``, ``sum_l w_l / (4 C_l^2 M_l^2) sum_ij (G^l_ij - Ghat^l_ij)^2``
  (Gatys normalisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STYLE_LAYERS: tuple[str, ...] = ("conv1_1", "pool1", "pool2", "pool3", "pool4")
ENCODER_LAYER = "pool5"


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices ``(N, C, C)`` of feature maps ``(N, C, H, W)``: ``G_ij = sum_k F_ik F_jk``."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return f @ f.transpose(1, 2)


def layer_style_loss(feat: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """Per-sample Gatys style loss of a layer: ``sum_ij (G - Ghat)^2 / (4 C^2 M^2)`` -> ``(N,)``."""
    n, c, h, w = feat.shape
    m = h * w
    diff = gram(feat) - target_gram
    return diff.pow(2).sum(dim=(1, 2)) / (4.0 * c * c * m * m)


def style_loss(feats: dict[str, torch.Tensor], target_grams: dict[str, torch.Tensor],
               weights: dict[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum over layers of :func:`layer_style_loss`, averaged over the batch.

    Returns the total (a scalar) and the per-layer batch means (unweighted)."""
    per_layer = {k: layer_style_loss(feats[k], target_grams[k]).mean() for k in weights}
    total = sum(float(weights[k]) * v for k, v in per_layer.items())
    return total, per_layer


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` per sample, summed over latent dims -> ``(N,)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


class Heads(nn.Module):
    """The two trained fully connected heads on the frozen, flattened VGG features."""

    def __init__(self, in_features: int, latent_dim: int):
        super().__init__()
        self.mu = nn.Linear(in_features, latent_dim)
        self.logvar = nn.Linear(in_features, latent_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = h.flatten(1)
        return self.mu(h), self.logvar(h).clamp(-12.0, 8.0)


class Decoder(nn.Module):
    """Linear projection of ``z`` and four (conv 3x3, nearest upsample x2, LeakyReLU 0.3) blocks.

    ``out_size`` (a multiple of 16) fixes the training output. Asked for a larger output (a tile
    bigger than the training patch), the projected ``s/16`` map is repeated periodically to cover
    the larger grid before the convolutions (stationary textures; seams are smoothed by the convs).
    """

    def __init__(self, latent_dim: int, out_size: int, dec_dim: int = 32):
        super().__init__()
        if out_size % 16:
            raise ValueError(f"decoder output size {out_size} is not a multiple of 16")
        self.latent_dim = latent_dim
        self.out_size = out_size
        self.grid = out_size // 16
        chans = [8 * dec_dim, 8 * dec_dim, 4 * dec_dim, 2 * dec_dim, dec_dim]
        self.c0 = chans[0]
        self.project = nn.Linear(latent_dim, self.c0 * self.grid * self.grid)
        blocks: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1), nn.Upsample(scale_factor=2.0,
                                                                        mode="nearest"),
                       nn.LeakyReLU(0.3)]
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(dec_dim, 1, 3, padding=1)

    def forward(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        size = self.out_size if size is None else int(size)
        h = self.project(z).view(len(z), self.c0, self.grid, self.grid)
        if size != self.out_size:
            if size % 16:
                raise ValueError(f"decoder output size {size} is not a multiple of 16")
            g = size // 16
            reps = -(-g // self.grid)
            h = h.repeat(1, 1, reps, reps)[:, :, :g, :g]
        return torch.sigmoid(self.out(self.blocks(h)))


def sliding_patches(tiles: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """Patches ``(N * P, 1, patch, patch)`` cut from ``(N, 1, H, W)`` tiles by a sliding window
    (seed 003: 128 px, stride 50); the last window is aligned to the border so nothing is lost."""
    n, _, h, w = tiles.shape
    if patch >= h and patch >= w:
        return tiles
    ys = list(range(0, h - patch + 1, stride))
    xs = list(range(0, w - patch + 1, stride))
    if ys[-1] != h - patch:
        ys.append(h - patch)
    if xs[-1] != w - patch:
        xs.append(w - patch)
    out = [tiles[:, :, y:y + patch, x:x + patch] for y in ys for x in xs]
    return torch.stack(out, dim=1).reshape(-1, 1, patch, patch)


def encoder_features(vgg, x: torch.Tensor, patch: int) -> torch.Tensor:
    """Frozen VGG ``pool5`` features of ``x``; a tile larger than the training patch is average-
    pooled to the patch's ``pool5`` grid (texture statistics are stationary)."""
    f = vgg(x, (ENCODER_LAYER,))[ENCODER_LAYER]
    g = max(patch // 32, 1)
    if f.shape[-1] != g or f.shape[-2] != g:
        f = F.adaptive_avg_pool2d(f, g)
    return f.flatten(1)
