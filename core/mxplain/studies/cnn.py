"""The augmentation study's structure-property regressor: a small CNN trained on per-tile labels.

Three stages of (3x3 conv, BatchNorm, ReLU) x 2 then 2x2 max-pooling (``width``, ``2 width``,
``4 width`` channels), global average pooling and a linear layer to one value. Targets are
standardised by the training set's mean and standard deviation. Adam with early stopping on a
fixed validation set (no stop before ``min_epochs``: a hundred tiles are four optimiser steps an
epoch, and a net still at the mean after seven epochs is not done); the weights of the epoch with
the lowest validation loss are kept. The property (pore diffusivity averaged over the x and y
solves) is invariant under the dihedral group, so each training batch gets a random flip /
90-degree rotation per tile.

Why not a registered predictor: ``Predictor.fit`` takes a tile store and the built-in WideResNet
trains on its lot properties with its own validation split; the study needs per-tile labels, a
training set that mixes authentic and generated tiles and the same validation set for every draw.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in (width, 2 * width, 4 * width):
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                           nn.ReLU(inplace=True)]
                c_in = c
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))[:, 0]


def dihedral(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each tile of ``(N, 1, H, W)`` flipped / rotated by one of the 8 dihedral maps, drawn from
    ``g``."""
    k = torch.randint(0, 8, (len(x),), generator=g)
    out = x.clone()
    for m in range(8):
        sel = k == m
        if sel.any():
            t = torch.rot90(x[sel], m % 4, dims=(2, 3))
            out[sel] = torch.flip(t, dims=(3,)) if m >= 4 else t
    return out


def _as_input(tiles_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(tiles_u8)).float().div_(255.0)[:, None]


class CNNRegressor:
    """``fit(x, y, x_val, y_val)`` on ``uint8`` tiles ``(N, H, W)`` and per-tile targets; then
    ``predict(x)``. Constructor parameters only; learned state ends in ``_``."""

    def __init__(self, width: int = 16, epochs: int = 40, patience: int = 6, min_epochs: int = 15,
                 batch_size: int = 32, lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0):
        self.width = width
        self.epochs = epochs
        self.patience = patience
        self.min_epochs = min_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray):
        torch.manual_seed(int(self.seed))
        g = torch.Generator().manual_seed(int(self.seed))
        y = np.asarray(y, np.float64)
        self.center_ = float(y.mean())
        self.scale_ = float(y.std()) if y.std() > 1e-12 else 1.0
        xt, xv = _as_input(x), _as_input(x_val)
        zt = torch.from_numpy(((y - self.center_) / self.scale_).astype(np.float32))
        zv = ((np.asarray(y_val, np.float64) - self.center_) / self.scale_).astype(np.float32)
        net = SmallCNN(int(self.width))
        opt = torch.optim.AdamW(net.parameters(), lr=float(self.lr),
                                weight_decay=float(self.weight_decay))
        bs = int(self.batch_size)
        best, best_state, wait = math.inf, None, 0
        self.history_ = []
        for epoch in range(1, int(self.epochs) + 1):
            net.train()
            order = torch.randperm(len(xt), generator=g)
            for b in range(0, len(order), bs):
                idx = order[b:b + bs]
                if len(idx) < 2:
                    continue  # BatchNorm needs two samples
                loss = F.mse_loss(net(dihedral(xt[idx], g)), zt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            self.net_ = net
            val = float(np.mean((self._forward(xv) - zv) ** 2))
            if not math.isfinite(val):
                raise RuntimeError("CNN training diverged (validation loss is not finite)")
            self.history_.append(val)
            if val < best:
                best, best_state, wait, self.best_epoch_ = val, copy.deepcopy(net.state_dict()), 0, epoch
            else:
                wait += 1
                if wait >= int(self.patience) and epoch >= int(self.min_epochs):
                    break
        net.load_state_dict(best_state)
        net.eval()
        self.net_ = net
        self.epochs_run_ = len(self.history_)
        return self

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        self.net_.eval()
        with torch.no_grad():
            return torch.cat([self.net_(x[i:i + 256]) for i in range(0, len(x), 256)]).numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.center_ + self.scale_ * self._forward(_as_input(x)).astype(np.float64)
