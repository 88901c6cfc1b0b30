"""The two generators of the augmentation study (seed 001 section 3.2).

* :class:`ThresholdedGRF` - the baseline of too little variance, the counterpart of the MRF of
  Bostanabad et al. whose parameter "is tuned so that all generations have the same volume
  fraction": a Gaussian random field (white noise smoothed by a Gaussian of ``correlation`` px)
  thresholded so that *every* tile has exactly the authentic tiles' mean pore fraction. ``fit``
  takes the pore fraction and the two grey levels from the authentic tiles' phase maps and picks
  the correlation length whose two-point correlation of the pore indicator is closest to theirs.
* :func:`latent_samples` - morphology-consistent samples from a trained editor (the TextureVAE):
  latents drawn on the segment between the encodings of two random authentic training tiles, plus
  Gaussian noise of ``noise`` x the per-dimension spread of the encodings, decoded through the
  :class:`~mxplain.interfaces.Editor` interface with the interpolated attribute labels of the two
  tiles. Why not the prior: seed 001 asks for generations "consistent with the data"; a latent
  between two encodings is tied to two authentic tiles and assumes nothing about how well a
  hundred posteriors (KL weight 1e-3) fill N(0, I); and ``decode`` needs attribute labels, which
  a prior draw does not have.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi

from mxplain.errors import UserError
from mxplain.simulate import PhaseConductivity, as_unit_float
from mxplain.store import to_tensor, to_uint8

GENERATORS = ("texturevae", "grf")  # the study's two pools, in its order
CORRELATIONS = tuple(np.round(np.arange(0.5, 8.01, 0.25), 2))
MAX_LAG = 8


def pore_maps(simulator, tiles: np.ndarray) -> np.ndarray:
    """Boolean ``(N, H, W)`` maps of the simulator's conducting phase (the pore space)."""
    if not isinstance(simulator, PhaseConductivity):
        raise UserError(f"the augmentation study's GRF baseline needs a two-phase simulator "
                        f"(mxplain.simulate.PhaseConductivity); {type(simulator).__name__} is not "
                        f"one (not yet supported)")
    return simulator.phases(tiles)


def two_point(maps: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """Normalised two-point correlation of indicator maps ``(N, H, W)`` at lags 1..``max_lag``
    along x and y (averaged): ``(S2(r) - phi^2) / (phi - phi^2)``, 1 at lag 0, 0 when uncorrelated."""
    m = np.asarray(maps, np.float64)
    phi = float(m.mean())
    var = phi - phi * phi
    if var <= 0:
        return np.zeros(max_lag)
    out = np.empty(max_lag)
    for r in range(1, max_lag + 1):
        s2 = 0.5 * (np.mean(m[:, :, :-r] * m[:, :, r:]) + np.mean(m[:, :-r, :] * m[:, r:, :]))
        out[r - 1] = (s2 - phi * phi) / var
    return out


def grf_maps(n: int, size: int, correlation: float, fraction: float,
             rng: np.random.Generator) -> np.ndarray:
    """``n`` boolean ``(size, size)`` maps: the lowest ``round(fraction * size^2)`` pixels of a
    smoothed white-noise field (so each map has exactly that many true pixels)."""
    k = int(round(float(fraction) * size * size))
    out = np.zeros((n, size, size), bool)
    for i in range(n):
        field = ndi.gaussian_filter(rng.standard_normal((size, size)), float(correlation),
                                    mode="wrap")
        flat = out[i].reshape(-1)
        flat[np.argsort(field, axis=None, kind="stable")[:k]] = True
    return out


class ThresholdedGRF:
    """Thresholded Gaussian random field at a fixed pore fraction (see the module docstring).

    ``fit(tiles, simulator)`` learns ``fraction_``, ``correlation_``, ``pore_grey_`` and
    ``solid_grey_``; ``sample(n, rng)`` -> ``uint8`` tiles ``(n, H, W)``."""

    def __init__(self, fraction: float | None = None, correlation: float | None = None,
                 fit_tiles: int = 32, seed: int = 0):
        self.fraction = fraction
        self.correlation = correlation
        self.fit_tiles = fit_tiles
        self.seed = seed

    def fit(self, tiles: np.ndarray, simulator) -> ThresholdedGRF:
        maps = pore_maps(simulator, tiles)
        grey = as_unit_float(tiles)
        self.size_ = int(tiles.shape[-1])
        self.fraction_ = float(maps.mean()) if self.fraction is None else float(self.fraction)
        if not 0.0 < self.fraction_ < 1.0:
            raise UserError(f"GRF pore fraction {self.fraction_} is not in (0, 1)")
        self.pore_grey_ = float(grey[maps].mean())
        self.solid_grey_ = float(grey[~maps].mean())
        target = two_point(maps)
        self.target_correlation_ = target.tolist()
        if self.correlation is not None:
            self.correlation_ = float(self.correlation)
            return self
        errors = []
        for c in CORRELATIONS:
            rng = np.random.default_rng(int(self.seed))
            sim = two_point(grf_maps(int(self.fit_tiles), self.size_, c, self.fraction_, rng))
            errors.append(float(np.sum((sim - target) ** 2)))
        self.correlation_ = float(CORRELATIONS[int(np.argmin(errors))])
        self.fit_error_ = float(min(errors))
        return self

    def sample_maps(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return grf_maps(int(n), self.size_, self.correlation_, self.fraction_, rng)

    def render(self, maps: np.ndarray) -> np.ndarray:
        """Boolean pore maps -> ``uint8`` tiles with the authentic pore and solid grey levels."""
        img = np.where(maps, self.pore_grey_, self.solid_grey_)
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.render(self.sample_maps(n, rng))

    def describe(self) -> dict:
        return {"generator": "thresholded Gaussian random field", "pore_fraction": self.fraction_,
                "correlation_px": self.correlation_, "pore_grey": self.pore_grey_,
                "solid_grey": self.solid_grey_,
                "target_two_point": self.target_correlation_}


def latent_samples(editor, tiles: np.ndarray, attributes: np.ndarray, n: int,
                   rng: np.random.Generator, noise: float = 0.25, batch_size: int = 64
                   ) -> tuple[np.ndarray, dict]:
    """``n`` tiles decoded from latents between encodings of ``tiles`` (see the module docstring);
    ``attributes`` ``(N, K)`` are the tiles' attribute labels. Returns ``uint8`` ``(n, H, W)`` and
    the draw (pairs, weights) as plain data."""
    x = to_tensor(tiles)
    with torch.no_grad():
        z = torch.cat([editor.encode(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    z = z.detach().cpu().double().numpy()
    spread = z.std(axis=0)
    a = np.asarray(attributes, np.float64)
    i = rng.integers(0, len(z), n)
    j = rng.integers(0, len(z), n)
    t = rng.uniform(0.0, 1.0, n)[:, None]
    zs = (1 - t) * z[i] + t * z[j] + float(noise) * spread * rng.standard_normal((n, z.shape[1]))
    az = np.clip((1 - t) * a[i] + t * a[j], 0.0, 1.0)
    out = []
    with torch.no_grad():
        for b in range(0, n, batch_size):
            zb = torch.as_tensor(zs[b:b + batch_size], dtype=torch.float32)
            ab = torch.as_tensor(az[b:b + batch_size], dtype=torch.float32)
            out.append(to_uint8(editor.decode(zb, ab).cpu()))
    tiles_out = np.concatenate(out) if out else np.zeros((0, *tiles.shape[1:]), np.uint8)
    return tiles_out, {"latent_spread_mean": float(spread.mean()), "noise": float(noise),
                       "pairs": np.stack([i, j], 1).tolist(), "weights": t[:, 0].tolist()}
