"""Tiny fake predictors for the gradcam/compare tests (not WideResNet on purpose)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mxplain.interfaces import Editor, NoLearnedState, Predictor


class TinyConvPredictor(Predictor):
    """conv-relu-conv-relu-pool-linear on per-image standardised tiles."""

    name = "tinyconv"

    def __init__(self, width: int = 6, seed: int = 0):
        self.width = width
        self.seed = seed
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1),
        )
        self.net.eval()

    def fit(self, store, ctx):
        return {}

    def state_dict(self):
        return {k: v for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state)

    def forward(self, tiles):
        x = (tiles - tiles.mean(dim=(1, 2, 3), keepdim=True)) / (
            tiles.std(dim=(1, 2, 3), keepdim=True) + 1e-6)
        return self.net(x)[:, 0]

    def torch_module(self):
        return self.net


class RegionPredictor(NoLearnedState, Predictor):
    """Output = mean brightness of a known square region (rows/cols lo:hi): a conv layer of ones
    restricted by a mask, so GradCAM has a Conv2d to hook."""

    name = "region"

    def __init__(self, size: int = 32, lo: int = 8, hi: int = 16):
        self.size, self.lo, self.hi = size, lo, hi
        mask = torch.zeros(1, 1, size, size)
        mask[..., lo:hi, lo:hi] = 1.0
        self.mask = mask
        self.net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False))
        with torch.no_grad():
            self.net[0].weight.fill_(1.0)

    def forward(self, tiles):
        f = self.net(tiles) * self.mask
        return f.sum(dim=(1, 2, 3)) / self.mask.sum()

    def torch_module(self):
        return self.net


class ForestLike(NoLearnedState, Predictor):
    """A non-differentiable predictor (like a random forest on texture features)."""

    name = "forestlike"
    differentiable = False

    def forward(self, tiles):
        return torch.from_numpy(np.asarray(tiles.mean(dim=(1, 2, 3)).detach().numpy()))


class BrightnessEditor(NoLearnedState, Editor):
    """Attribute k shifts the brightness of the tile's k-th horizontal band: a tile edited to
    attributes a is tile + (a - 0.5) * band_k. Latent = the tile itself."""

    name = "brightness"
    attributes = ("size", "porosity", "polydispersity", "facetness")

    def encode(self, tiles):
        return tiles

    def decode(self, latent, attributes):
        n, _, h, w = latent.shape
        k = attributes.shape[1]
        out = latent.clone()
        band = h // k
        for j in range(k):
            out[:, :, j * band:(j + 1) * band] += 0.5 * (attributes[:, j] - 0.5).view(-1, 1, 1, 1)
        return out.clamp(0, 1)
