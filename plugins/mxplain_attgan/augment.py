"""Differentiable augmentation of the discriminator's inputs for small data sets.

DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS
2020; the ADA idea of Karras et al., NeurIPS 2020, of augmenting every image the discriminator sees,
real and generated alike, with transforms the generator's gradient flows through). Policies (comma
separated in ``[editor] diffaug``):

* ``translation``: every image shifted by an integer offset of up to 1/8 of its size in y and x
  (one draw per image), the uncovered border filled with 0 (mid-grey in [-1, 1]);
* ``cutout``: a square of half the image size (centre uniform per image, clipped at the border)
  set to 0.

Deviation: no rotations, flips or colour transforms. SEM tiles (and the synthetic ones) are lit
from one detector direction, so a rotated tile is not a tile of the same lot; brightness and
contrast carry porosity and facets. Random draws come from the training loop's own
``torch.Generator`` (CPU), so training stays deterministic and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ``("translation", "cutout")``; ValueError on unknown names."""
    names = tuple(p.strip() for p in str(policy or "").split(",") if p.strip())
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown diffaug policy {bad[0]!r}; choose from {list(POLICIES)}")
    return names


def translate(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift every image of ``x`` (N, C, H, W) by up to ``ratio`` of its size, zero fill."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1, 1), generator=gen).to(x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=gen).to(x.device)
    gy = (torch.arange(h, device=x.device)[None, :, None] + ty).clamp(-1, h) + 1
    gx = (torch.arange(w, device=x.device)[None, None, :] + tx).clamp(-1, w) + 1
    padded = F.pad(x, (1, 1, 1, 1))  # index 0 and -1: the zero border
    rows = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[rows, gy.expand(n, h, w), gx.expand(n, h, w)]
    return out.permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero a ``ratio``-sized square of every image of ``x`` (N, C, H, W)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen).to(x.device)
    gy = (torch.arange(ch, device=x.device)[None, :, None] + oy - ch // 2).clamp(0, h - 1)
    gx = (torch.arange(cw, device=x.device)[None, None, :] + ox - cw // 2).clamp(0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=x.device)
    mask[torch.arange(n, device=x.device)[:, None, None], gy, gx] = 0
    return x * mask[:, None]


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], gen: torch.Generator) -> torch.Tensor:
    """Apply the ``policy`` transforms (in order) to a batch; the identity for an empty policy."""
    for name in policy:
        x = translate(x, gen) if name == "translation" else cutout(x, gen)
    return x
