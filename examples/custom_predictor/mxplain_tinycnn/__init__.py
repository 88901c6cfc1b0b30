"""``mxplain_tinycnn``: a predictor plugin in a few lines, ``TinyCNN`` (registered as ``tinycnn``),
a tiny CNN regressor of the lot property (the example of docs/custom-predictor.md)."""

import numpy as np
import torch
from torch import nn

from mxplain import hookimpl
from mxplain.interfaces import Predictor


class TinyCNN(Predictor):
    """Two convolutions, global average pooling, a linear head; property in physical units."""

    name = "tinycnn"
    test_params = {"epochs": 1}

    def __init__(self, channels: int = 8, epochs: int = 5, lr: float = 0.01, seed: int = 0):
        self.channels, self.epochs, self.lr, self.seed = channels, epochs, lr, seed

    def _build(self):
        torch.manual_seed(self.seed)
        c = self.channels
        self.net_ = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(c, c, 3, padding=1, stride=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1))
        self.mean_, self.std_ = 0.0, 1.0

    def fit(self, store, ctx):
        self._build()
        tiles, lot = store.all_tiles()
        x = torch.from_numpy(tiles[:, None].astype(np.float32) / 255)
        y = torch.from_numpy(store.properties[lot].astype(np.float32))
        self.mean_, self.std_ = float(y.mean()), float(y.std() + 1e-6)
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            for idx in torch.randperm(len(x), generator=gen).split(32):
                loss = ((self.net_(x[idx])[:, 0] - (y[idx] - self.mean_) / self.std_) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net_.eval()
        return {"final_loss": float(loss)}

    def forward(self, tiles):
        return self.net_(tiles)[:, 0] * self.std_ + self.mean_

    def torch_module(self):
        return self.net_

    def state_dict(self):
        return {"net": self.net_.state_dict(), "mean": self.mean_, "std": self.std_}

    def load_state_dict(self, state):
        self._build()
        self.net_.load_state_dict(state["net"])
        self.net_.eval()
        self.mean_, self.std_ = state["mean"], state["std"]


@hookimpl
def mxplain_predictors():
    return [TinyCNN]
