"""Image filters on tile tensors shared by the plugins (a plugin never imports another)."""

from __future__ import annotations

import math

import torch


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` tiles with standard deviation ``sigma`` pixels
    (each channel alone, reflected borders, kernel radius ``ceil(3 sigma)`` within the tile);
    ``sigma`` <= 0 returns ``x`` itself."""
    sigma = float(sigma)
    if sigma <= 0:
        return x
    r = max(1, math.ceil(3 * sigma))
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = torch.nn.functional.pad(x, (r, r, 0, 0), mode="reflect")
    y = torch.nn.functional.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = torch.nn.functional.pad(y, (0, 0, r, r), mode="reflect")
    return torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
