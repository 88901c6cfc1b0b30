"""WideResNet-d-k (Zagoruyko & Komodakis, 2016) as a single-channel tile regressor.

Seed 000, supplement B: a Wide ResNet with 28 convolutional layers and widening factor 1, adaptive
average pooling and a fully connected regression layer with a tanh activation. Here the tanh output
is mapped back to physical units, ``out = center + half_range * tanh(h)``, where ``center`` and
``half_range`` come from the training targets and are buffers of the module (part of its state).

Each tile is standardized inside :meth:`WideResNet.forward` (tile mean subtracted, divided by the
tile standard deviation), so callers pass tiles in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

STD_EPS = 1e-3  # standardization floor: a constant tile maps to zeros instead of NaN


def check_depth(depth: int) -> int:
    """Blocks per group ``n`` for a depth ``6n + 4`` (the WRN convention); ValueError otherwise."""
    depth = int(depth)
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), "
                         f"got {depth}")
    return (depth - 4) // 6


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3 plus a shortcut
    (a 1x1 convolution of the activated input where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.dropout = float(dropout)
        self.equal = c_in == c_out and stride == 1
        self.shortcut = (None if self.equal else
                         nn.Conv2d(c_in, c_out, 1, stride=stride, padding=0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        short = x if self.equal else self.shortcut(o)
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv2(y)
        return y + short


class BlockGroup(nn.Sequential):
    def __init__(self, n: int, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__(*[PreActBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1,
                                       dropout) for i in range(n)])


class WideResNet(nn.Module):
    """WRN-d-k regressor for ``(N, 1, H, W)`` tiles in [0, 1] of any size -> ``(N,)`` in physical
    units. Layers: ``conv1`` (16 channels), ``block1`` (16k), ``block2`` (32k, stride 2), ``block3``
    (64k, stride 2), ``bn``-ReLU, adaptive average pooling, ``fc`` -> tanh -> physical units."""

    def __init__(self, depth: int = 28, widen: int = 1, dropout: float = 0.0,
                 in_channels: int = 1):
        super().__init__()
        n = check_depth(depth)
        widen = int(widen)
        if widen < 1:
            raise ValueError(f"WideResNet widen must be >= 1, got {widen}")
        self.depth, self.widen = int(depth), widen
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = BlockGroup(n, ch[0], ch[1], 1, dropout)
        self.block2 = BlockGroup(n, ch[1], ch[2], 2, dropout)
        self.block3 = BlockGroup(n, ch[2], ch[3], 2, dropout)
        self.bn = nn.BatchNorm2d(ch[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch[3], 1)
        self.register_buffer("center", torch.zeros((), dtype=torch.float32))
        self.register_buffer("half_range", torch.ones((), dtype=torch.float32))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, std=1e-3)
        nn.init.zeros_(self.fc.bias)

    @staticmethod
    def standardize(x: torch.Tensor) -> torch.Tensor:
        """Per-tile standardization: subtract the tile's mean, divide by its standard deviation."""
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (x - mean) / std.clamp_min(STD_EPS)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.standardize(x)
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        x = F.relu(self.bn(x))
        return torch.flatten(self.pool(x), 1)

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """The tanh output in (-1, 1): the scaled target the training loss is taken on."""
        return torch.tanh(self.fc(self.features(x)).squeeze(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scaled(x)
        return self.center.to(s.dtype) + self.half_range.to(s.dtype) * s

    def set_target_range(self, center: float, half_range: float) -> None:
        self.center.fill_(float(center))
        self.half_range.fill_(float(half_range))
