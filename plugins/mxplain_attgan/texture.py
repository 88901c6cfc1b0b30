"""Differentiable texture statistics: the attribute head of ``cls_pool = "stats"``.

A classifier trained on lot labels sees as many distinct labels as there are lots (16 in the
quickstart), and a convolutional head on so few learns to tell the lots apart rather than the
attribute: on the quickstart's lots the discriminator's own head reads porosity on unseen lots at
Spearman rho -0.10 (``cls_pool = "mean"``), so the generator's attribute loss cannot steer porosity
edits. A linear head on a fixed set of generic image statistics cannot memorise a tile's layout,
and it reads every attribute on unseen lots (leave-one-lot-out, 24 tiles per lot, ridge: tile rho
size 0.91, porosity 0.60, polydispersity 0.55, facetness 0.81).

The statistics (:data:`STAT_NAMES`, per tile, all differentiable w.r.t. the pixels):

* **band-pass energies**: the Laplacian-pyramid bands ``G_{s-1} - G_s`` of Gaussian blurs at
  :data:`SCALES` (``G_0`` the tile): mean absolute value, positive part, negative part and RMS;
* **band-brightness interactions** of the two finest bands with the local brightness ``G_2.8``
  (dark and bright fine detail on bright regions, dark detail on dark ones: a two-feature
  co-occurrence);
* **grey-level soft histogram**: the share of pixels above 9 levels (sigmoids of width 0.03);
* **gradients**: the mean and spread of the gradient magnitude of ``G_0.7`` and the structure
  tensor's coherence (Bigun & Granlund 1987) at integration scales 1.4 and 2.8 (straight edges: 1);
* **blobs**: the Hessian's eigenvalues (scale-normalised, Lindeberg 1998) at scales 0.7, 1.0, 1.5:
  the mean dark-blob response (smaller eigenvalue positive), the same weighted by the brightness,
  the bright-blob response, and the bright-phase share of dark-blob pixels above 4 levels at 0.7
  and 1.0;
* **local depressions**: the bright-phase share of pixels darker by more than 0.04 / 0.08 / 0.16
  than the soft minimum (log-sum-exp, temperature 1/50) of the ring 1.5-2.5 px around them.

The editor's probe (:mod:`mxplain.probe`) is a separate implementation (segmentation, watershed,
morphology on uint8 tiles) and never shares weights with this head; the local-depression counts
are the one statistic of the same idea as its ``spots_*`` features (``dark_spots``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mxplain.filters import gaussian_blur as gaussian

SCALES = (0.7, 1.4, 2.8, 5.6)
HESSIAN_SCALES = (0.7, 1.0, 1.5)
HESSIAN_LEVELS = (0.01, 0.02, 0.04, 0.08)
HIST_LEVELS = tuple(round(0.1 * i, 1) for i in range(1, 10))
DEPTHS = (0.04, 0.08, 0.16)

STAT_NAMES: tuple[str, ...] = (
    tuple(f"band{i}_{k}" for i in range(len(SCALES)) for k in ("abs", "pos", "neg", "rms"))
    + tuple(f"band{i}_{k}" for i in range(2) for k in ("dark_on_bright", "bright_on_bright",
                                                         "dark_on_dark"))
    + tuple(f"above_{t}" for t in HIST_LEVELS)
    + ("grad_mean", "grad_std", "coherence_1.4", "coherence_2.8")
    + tuple(f"hessian{s}_{k}" for s in HESSIAN_SCALES for k in ("dark", "dark_bright", "bright"))
    + tuple(f"hessian{s}_dark_above_{t}" for s in HESSIAN_SCALES[:2] for t in HESSIAN_LEVELS)
    + tuple(f"depression_{d}" for d in DEPTHS))


def _mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(1, 2, 3))


def _hessian_eigen(g: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Smaller and larger eigenvalue of the finite-difference Hessian, times ``sigma**2``."""
    p = F.pad(g, (1, 1, 1, 1), mode="reflect")
    c = p[:, :, 1:-1, 1:-1]
    hxx = p[:, :, 1:-1, 2:] + p[:, :, 1:-1, :-2] - 2 * c
    hyy = p[:, :, 2:, 1:-1] + p[:, :, :-2, 1:-1] - 2 * c
    hxy = (p[:, :, 2:, 2:] - p[:, :, 2:, :-2] - p[:, :, :-2, 2:] + p[:, :, :-2, :-2]) / 4
    tr, d = hxx + hyy, ((hxx - hyy) ** 2 + 4 * hxy ** 2 + 1e-12).sqrt()
    return (tr - d) / 2 * sigma ** 2, (tr + d) / 2 * sigma ** 2


def _bands(x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    feats, blurs, prev = [], [], x
    for s in SCALES:
        g = gaussian(x, s)
        blurs.append(g)
        band, prev = prev - g, g
        feats += [_mean(band.abs()), _mean(F.relu(band)), _mean(F.relu(-band)),
                  _mean(band * band).sqrt()]
    light = blurs[2]
    for band in (x - blurs[0], blurs[0] - blurs[1]):
        feats += [_mean(F.relu(-band) * light), _mean(F.relu(band) * light),
                  _mean(F.relu(-band) * (1 - light))]
    return feats, blurs


def _gradients(g: torch.Tensor) -> list[torch.Tensor]:
    gy = g[:, :, 1:, :-1] - g[:, :, :-1, :-1]
    gx = g[:, :, :-1, 1:] - g[:, :, :-1, :-1]
    mag = (gx * gx + gy * gy + 1e-8).sqrt()
    feats = [_mean(mag), mag.flatten(1).std(dim=1)]
    for s in (1.4, 2.8):
        jxx, jyy, jxy = gaussian(gx * gx, s), gaussian(gy * gy, s), gaussian(gx * gy, s)
        w = jxx + jyy
        coh = ((jxx - jyy) ** 2 + 4 * jxy ** 2 + 1e-12).sqrt() / (w + 1e-6)
        feats.append((coh * w).sum(dim=(1, 2, 3)) / (w.sum(dim=(1, 2, 3)) + 1e-8))
    return feats


def _blobs(x: torch.Tensor, light: torch.Tensor) -> list[torch.Tensor]:
    feats, hard = [], []
    bright = torch.sigmoid((gaussian(x, 1.4) - 0.3) / 0.05)
    area = _mean(bright) + 1e-3
    for s in HESSIAN_SCALES:
        lmin, lmax = _hessian_eigen(gaussian(x, s), s)
        dark = F.relu(lmin)
        feats += [_mean(dark), _mean(dark * light) / (_mean(light) + 1e-6),
                  _mean(F.relu(-lmax))]
        if s in HESSIAN_SCALES[:2]:
            hard += [_mean(torch.sigmoid((lmin - t) / (t / 4)) * bright) / area
                     for t in HESSIAN_LEVELS]
    p = F.pad(x, (2, 2, 2, 2), mode="reflect")
    h, w = x.shape[-2:]
    ring = torch.stack([p[:, :, 2 + dy:2 + dy + h, 2 + dx:2 + dx + w]
                        for dy in range(-2, 3) for dx in range(-2, 3)
                        if 1.5 <= math.hypot(dy, dx) <= 2.5])
    depth = -torch.logsumexp(-50.0 * ring, dim=0) / 50.0 - x
    return feats + hard + [_mean(torch.sigmoid((depth - d) / 0.02) * bright) / area
                           for d in DEPTHS]


def texture_statistics(x: torch.Tensor) -> torch.Tensor:
    """Tiles ``(N, 1, H, W)`` in [0, 1] -> ``(N, len(STAT_NAMES))`` (the module's statistics)."""
    bands, blurs = _bands(x)
    feats = bands + [_mean(torch.sigmoid((x - t) / 0.03)) for t in HIST_LEVELS]
    feats += _gradients(blurs[0]) + _blobs(x, blurs[2])
    return torch.stack(feats, dim=1)


class TextureHead(nn.Module):
    """Attribute logits = a linear map of the standardised :func:`texture_statistics` of images in
    [-1, 1]. The standardisation (``mean``, ``scale`` buffers, saved with the weights) is set once
    from real tiles by :meth:`fit_scaling` before training; until then it is the identity."""

    def __init__(self, n_attributes: int):
        super().__init__()
        n = len(STAT_NAMES)
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))
        self.linear = nn.Linear(n, n_attributes)

    @torch.no_grad()
    def fit_scaling(self, images: torch.Tensor, batch: int = 256) -> None:
        stats = torch.cat([texture_statistics((images[i:i + batch].float() + 1) / 2)
                           for i in range(0, len(images), batch)])
        mean = stats.mean(dim=0)
        self.mean.copy_(mean)
        # a statistic (nearly) constant over the real tiles is not blown up into a huge input
        self.scale.copy_(torch.maximum(stats.std(dim=0), 1e-3 * mean.abs() + 1e-6))

    def standardised(self, images: torch.Tensor) -> torch.Tensor:
        return (texture_statistics((images.float() + 1) / 2) - self.mean) / self.scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(self.standardised(images))
