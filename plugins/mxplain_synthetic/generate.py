"""SEM-like tiles of a crystal powder generated from four lot attributes in [0, 1].

Every crystal is a convex body described by a *gauge* ``rho(x)`` (``rho <= 1`` inside) that blends
a (slightly elliptical) disc with an irregular 4- to 7-sided polygon, and a height field over it
that blends a dome with a pyramid, both by the crystal's facet degree ``f_i``::

    rho = (1 - f_i) * rho_disc + f_i * rho_polygon
    H   = R * ((1 - f_i) * sqrt(1 - rho**2) + f_i * 0.9 * (1 - rho))

``f_i`` near 0 gives a smooth rounded dome, ``f_i`` near 1 a flat-faced angular pyramid. Grey levels
follow the SEM secondary-electron look: steeper surface = brighter (``1 - n_z``, so domes brighten
steadily towards their outline), a directional detector term (``n . L``: each flat face gets its
own uniform brightness), bright ridges where faces meet, a bright rim at the outline (edge effect),
all on a dark, faintly mottled background.

Attributes and pixel scale (fixed in pixels, independent of the tile size, so a 256 px tile shows
16 times as many crystals as a 64 px tile at the same magnification):

* **size** ``s``: mean equivalent diameter ``6 + 20 s`` px (6 px -> 26 px);
* **polydispersity** ``d``: equivalent diameters are log-normal with the mean set by ``s`` and
  log-standard deviation ``0.05 + 0.55 d`` (coefficient of variation ~0.05 -> ~0.65), clipped to
  [3 px, 3 x mean];
* **porosity** ``p``: ``Poisson(0.015 p x crystal area in px^2)`` pin-prick holes (dark Gaussian
  pits, sigma 0.55-0.85 px, i.e. 1-2 px across, 55-80 % deep) on the crystals' interiors;
* **facetness** ``f``: each crystal is faceted (``f_i ~ U(0.8, 1)``) with probability ``f`` and
  rounded (``f_i ~ U(0, 0.2)``) otherwise: the lot's facetness is its fraction of faceted crystals.

Crystals are dropped in random order until their summed area is 55 % of the tile (centres may lie
up to half a mean diameter outside, so crystals are cut by the border); a crystal whose centre is
closer than 0.8 x (sum of radii) to another is redrawn (up to 12 tries), so neighbours overlap by at
most ~20 % and later crystals occlude earlier ones. The tile is blurred (Gaussian, sigma 0.6 px)
and gets Gaussian noise (sigma 0.025), then is quantised to ``uint8``.

Determinism: :func:`generate_tiles` draws one 64-bit seed per tile from the ``rng`` it is given and
renders tile ``i`` from ``numpy.random.default_rng(seed_i)`` only, so the result does not depend on
``workers``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

ATTRIBUTES = ("size", "porosity", "polydispersity", "facetness")

MIN_DIAMETER = 6.0  # px, mean equivalent diameter at size = 0
MAX_DIAMETER = 26.0  # px, at size = 1
HOLE_DENSITY = 0.015  # holes per px^2 of crystal area at porosity = 1
HOLE_SIGMA = (0.55, 0.85)  # px, range of the pits' Gaussian radius
HOLE_DEPTH = (0.55, 0.80)  # range of the pits' relative depth
COVERAGE = 0.55
MIN_SEPARATION = 0.8  # centre distance / sum of radii below which a crystal is redrawn
BLUR_SIGMA = 0.6
NOISE_SIGMA = 0.025
GRID_CELL = MAX_DIAMETER * 1.5  # px: the neighbour search's cells
LIGHT = np.array([-0.45, -0.55, 0.70]) / np.linalg.norm([-0.45, -0.55, 0.70])


def mean_diameter(size: float) -> float:
    return MIN_DIAMETER + (MAX_DIAMETER - MIN_DIAMETER) * float(size)


def log_sigma(polydispersity: float) -> float:
    return 0.05 + 0.55 * float(polydispersity)


def _attrs(attributes: Mapping[str, float]) -> tuple[float, float, float, float]:
    missing = [a for a in ATTRIBUTES if a not in attributes]
    if missing:
        raise ValueError(f"attributes lack {missing}")
    vals = tuple(float(attributes[a]) for a in ATTRIBUTES)
    for a, v in zip(ATTRIBUTES, vals):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"attribute {a!r} = {v} is outside [0, 1]")
    return vals  # type: ignore[return-value]


def _sample_diameters(rng: np.random.Generator, size: float, poly: float, area: float):
    """Diameters until their summed area reaches ``COVERAGE * area`` (log-normal, mean kept)."""
    mean = mean_diameter(size)
    sig = log_sigma(poly)
    mu = math.log(mean) - sig * sig / 2
    out, total = [], 0.0
    target = COVERAGE * area
    while total < target:
        d = float(np.clip(rng.lognormal(mu, sig), 3.0, 3.0 * mean))
        out.append(d)
        total += math.pi * d * d / 4
    return np.array(out)


@lru_cache(maxsize=256)
def _patch_grid(half: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(y, x)`` pixel offsets of a crystal's patch (read-only: shared by every crystal)."""
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _gradient(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.gradient(h)`` of a 2-D array of at least 2 x 2 (unit spacing, first-order edges): the
    same values without its generic per-axis bookkeeping."""
    gy, gx = np.empty_like(h), np.empty_like(h)
    gy[1:-1] = (h[2:] - h[:-2]) / 2.0
    gy[0], gy[-1] = h[1] - h[0], h[-1] - h[-2]
    gx[:, 1:-1] = (h[:, 2:] - h[:, :-2]) / 2.0
    gx[:, 0], gx[:, -1] = h[:, 1] - h[:, 0], h[:, -1] - h[:, -2]
    return gy, gx


def _laplace(h: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.laplace(h)`` (mode ``reflect``) of a 2-D array: per axis the symmetric
    filter ``[1, -2, 1]`` as ndimage evaluates it (``-2 * h + (previous + next)``, the edge its
    own neighbour), the two axes summed."""
    s0, s1 = np.empty_like(h), np.empty_like(h)
    s0[1:-1] = h[:-2] + h[2:]
    s0[0], s0[-1] = h[0] + h[1], h[-2] + h[-1]
    s1[:, 1:-1] = h[:, :-2] + h[:, 2:]
    s1[:, 0], s1[:, -1] = h[:, 0] + h[:, 1], h[:, -2] + h[:, -1]
    m2 = h * -2.0
    return (m2 + s0) + (m2 + s1)


def _clip(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.minimum(np.maximum(x, lo), hi)


def _crystal(rng: np.random.Generator, d: float, f: float):
    """One crystal rendered on its own patch: (brightness, mask, interior) arrays and half-width."""
    r = d / 2.0
    aspect = rng.uniform(1.0, 1.3)
    theta = rng.uniform(0, math.pi)
    half = int(math.ceil(r * aspect * 1.25)) + 2
    yy, xx = _patch_grid(half)
    c, s = math.cos(theta), math.sin(theta)
    u = (c * xx + s * yy) / math.sqrt(aspect)
    v = (-s * xx + c * yy) * math.sqrt(aspect)
    # disc gauge (area pi r^2 after the area-preserving stretch)
    rho_c = np.hypot(u, v) / r
    # irregular polygon gauge: n faces with jittered normals and distances, area ~ pi r^2
    n = int(rng.integers(4, 8))
    phi = rng.uniform(0, 2 * math.pi)
    angles = phi + 2 * math.pi * np.arange(n) / n + rng.uniform(-0.25, 0.25, n) * (math.pi / n)
    apoth = r * math.sqrt(math.pi / (n * math.tan(math.pi / n))) * rng.uniform(0.88, 1.12, n)
    ca, sa, ap = (x[:, None, None] for x in (np.cos(angles), np.sin(angles), apoth))
    rho_p = ((ca * u + sa * v) / ap).max(axis=0)
    rho = (1 - f) * rho_c + f * rho_p
    mask = rho <= 1.0
    rr = _clip(rho, 0, 1)
    height = r * ((1 - f) * np.sqrt(1 - rr * rr) + f * 0.9 * (1 - rr))
    gy, gx = _gradient(height)
    nz = 1.0 / np.sqrt(1 + gx * gx + gy * gy)
    ndotl = (-gx * LIGHT[1] - gy * LIGHT[0] + LIGHT[2]) * nz
    lap = _laplace(height)
    ridge = _clip(-lap, 0, 2.0)  # facet ridges: strongly concave-down lines of the height field
    rim_w = min(1.6 / r, 0.5)
    rim = _clip((rho - (1 - rim_w)) / rim_w, 0, 1)
    tone = rng.uniform(0.9, 1.1)
    bright = tone * (0.22 + 0.45 * (1 - nz) + 0.40 * _clip(ndotl, 0, 1)) + 0.35 * f * ridge
    bright = bright + 0.22 * rim
    interior = rho <= 1.0 - min(1.2 / r, 0.6)
    return _clip(bright, 0, 1), mask, interior, half


def _place(rng: np.random.Generator, r: float, lo: float, hi: float,
           grid: dict[tuple[int, int], list[tuple[float, float, float]]]):
    """A centre ``(y, x)`` in ``[lo, hi)^2`` for a crystal of radius ``r`` at least
    ``MIN_SEPARATION`` x (sum of radii) from every crystal in ``grid`` (cells of ``GRID_CELL``
    px), which it joins; ``None`` after 12 tries."""
    for _ in range(12):
        cy, cx = rng.uniform(lo, hi, 2).tolist()
        gi, gj = int(cy // GRID_CELL), int(cx // GRID_CELL)
        near = False
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                for oy, ox, orad in grid.get((gi + di, gj + dj), ()):
                    if math.hypot(cy - oy, cx - ox) < MIN_SEPARATION * (r + orad):
                        near = True
                        break
                if near:
                    break
            if near:
                break
        if not near:
            grid.setdefault((gi, gj), []).append((cy, cx, r))
            return cy, cx
    return None


def _paste(layers, cy: float, cx: float, crystal) -> None:
    """Draw a crystal (:func:`_crystal`'s output) centred at ``(cy, x)`` over the tile's
    ``layers`` (brightness, interior, covered), cut by the tile's border."""
    img, interior_all, covered = layers
    bright, mask, interior, half = crystal
    big = img.shape[0]
    y0, x0 = int(round(cy)) - half, int(round(cx)) - half
    w = 2 * half + 1
    y0c, x0c, y1c, x1c = max(y0, 0), max(x0, 0), min(y0 + w, big), min(x0 + w, big)
    if y1c <= y0c or x1c <= x0c:
        return
    sl = (slice(y0c - y0, y1c - y0), slice(x0c - x0, x1c - x0))
    m = mask[sl]
    view = img[y0c:y1c, x0c:x1c]
    view[m] = bright[sl][m]
    iv = interior_all[y0c:y1c, x0c:x1c]
    iv[m] = interior[sl][m]
    covered[y0c:y1c, x0c:x1c] |= m


def _holes(rng: np.random.Generator, img: np.ndarray, interior: np.ndarray, covered: np.ndarray,
           poro: float) -> np.ndarray:
    """Pin-prick holes on the visible crystal interiors: a Poisson number per px^2 of visible
    crystal area, dark Gaussian pits."""
    big = img.shape[0]
    cells = np.flatnonzero(interior)
    area = float(np.count_nonzero(covered))
    n_holes = min(int(rng.poisson(HOLE_DENSITY * poro * area)), len(cells))
    pick = rng.choice(cells, size=n_holes, replace=False) if n_holes else cells[:0]
    hy = pick // big + rng.uniform(0, 1, n_holes) + 3
    hx = pick % big + rng.uniform(0, 1, n_holes) + 3
    sig = rng.uniform(*HOLE_SIGMA, len(hy))
    depth = rng.uniform(*HOLE_DEPTH, len(hy))
    work = np.pad(img, 3, mode="edge")
    yy, xx = np.mgrid[-3:4, -3:4]
    for y, x, sg, dp in zip(hy.tolist(), hx.tolist(), sig.tolist(), depth.tolist()):
        iy, ix = int(y), int(x)
        g = np.exp(-((yy - (y - iy - 0.5)) ** 2 + (xx - (x - ix - 0.5)) ** 2) / (2 * sg * sg))
        work[iy - 3 : iy + 4, ix - 3 : ix + 4] *= 1 - dp * g
    return work[3:-3, 3:-3]


def render_tile(attributes: Mapping[str, float], tile_size: int, seed: int) -> np.ndarray:
    """One ``uint8`` ``(H, W)`` tile from its own seed."""
    size, poro, poly, facet = _attrs(attributes)
    rng = np.random.default_rng(seed)
    big = int(tile_size)
    margin = 0.5 * mean_diameter(size)  # centres may lie just outside: crystals cut by the border
    span = big + 2 * margin
    diam = _sample_diameters(rng, size, poly, span * span)
    # background: dark with a faint low-frequency variation
    bg = ndi.gaussian_filter(rng.normal(0, 1, (big, big)), 8.0, mode="wrap")
    img = 0.10 + 0.04 * bg / (bg.std() + 1e-9)
    interior_all = np.zeros((big, big), bool)
    covered = np.zeros((big, big), bool)
    grid: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    for d in diam.tolist():
        centre = _place(rng, d / 2, -margin, big + margin, grid)
        if centre is None:
            continue
        # each crystal is either faceted (degree ~U(0.8, 1)) with probability `facetness` or
        # rounded (degree ~U(0, 0.2)): the lot's facetness is its fraction of faceted crystals
        f_i = rng.uniform(0.8, 1.0) if rng.random() < facet else rng.uniform(0.0, 0.2)
        _paste((img, interior_all, covered), *centre, _crystal(rng, d, f_i))
    if poro > 0:
        img = _holes(rng, img, interior_all, covered, poro)
    img = ndi.gaussian_filter(img, BLUR_SIGMA)
    img = img + rng.normal(0, NOISE_SIGMA, img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def render_star(args):
    """``render_tile(*args)``, for a process pool's map."""
    return render_tile(*args)


def tile_seeds(rng: np.random.Generator, n: int) -> np.ndarray:
    """The ``n`` per-tile seeds :func:`generate_tiles` draws from ``rng``."""
    return rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)


def generate_tiles(attributes: Mapping[str, float], n: int, tile_size: int,
                   rng: np.random.Generator, workers: int = 1) -> np.ndarray:
    """``n`` tiles of one lot as ``uint8`` ``(n, tile_size, tile_size)``.

    ``rng`` supplies one seed per tile; the tiles are identical for any ``workers`` (>1 renders
    them in a process pool)."""
    attrs = dict(zip(ATTRIBUTES, _attrs(attributes)))
    seeds = tile_seeds(rng, n)
    jobs = [(attrs, int(tile_size), int(s)) for s in seeds]
    if workers > 1 and n > 1:
        with ProcessPoolExecutor(max_workers=int(workers)) as ex:
            tiles = list(ex.map(render_star, jobs, chunksize=max(1, n // (4 * workers))))
    else:
        tiles = [render_tile(*j) for j in jobs]
    if not tiles:
        return np.zeros((0, tile_size, tile_size), np.uint8)
    return np.stack(tiles)
