"""Morphology descriptors of grey tiles for the attribute probe (:mod:`mxplain.probe`).

Grey-level and texture statistics cannot see a few-pixel pit or the spread of particle sizes; the
descriptors a materials scientist uses for two-phase microstructures can. All are computed from the
pixels alone, segmentation-light and generic (no parameter of any generator is read), in numpy and
``scipy.ndimage``. Per tile (grey levels in [0, 1]):

* **phases**: the tile smoothed (Gaussian, sigma 1 px) and split by its own Otsu threshold into a
  bright phase (particles) and a dark phase (background, gaps, pores): the bright area fraction;
* **lineal path**: chord lengths (runs) of each phase along rows and columns: mean, and the
  coefficient of variation of the bright chords (a wide particle-size distribution has a wide chord
  distribution);
* **two-point correlation**: the radially averaged autocorrelation of the grey level at 1, 2, 4, 8
  and 16 px (normalised by the variance) and the correlation length (first lag below 1/e);
* **granulometry**: the pattern spectra of grey openings (bright features) and closings (dark
  features) by squares of 1-8 px side: the share of the grey-level sum removed at each size, the
  spectra's mean size and spread;
* **phase granulometry**: openings of the bright phase itself by squares of 1-24 px: the mean and
  spread of its log size distribution and its coefficient of variation (:func:`phase_granulometry`:
  the spread is the width of the particle-size distribution whatever the mean size);
* **pits**: the black top-hat (closing minus tile) at 3 px inside the bright phase: its mean and the
  share of bright-phase pixels deeper than 0.04; and isolated dark spots (pores) per 1000 px^2 of
  bright phase at three depths (:func:`dark_spots`);
* **particles**: the bright phase split into particles by a watershed of its distance transform
  (touching particles apart): their number per 1000 px^2, the mean and coefficient of variation
  of the equivalent diameters of those inside the tile, and of the inscribed diameters of all
  (twice the distance-transform maximum in each): the size distribution and its spread;
* **edges**: the share of pixels whose Sobel gradient exceeds the tile's own Otsu threshold of the
  gradient (boundary density), and the orientation coherence of the gradients (the structure
  tensor averaged over 5 px windows: 1 for straight edges, 0 for isotropic texture) and of the
  whole tile's doubled-angle orientation histogram (straight facets give peaks).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

LAGS = (1, 2, 4, 8, 16)
GRANULES = (1, 2, 3, 5, 8)
SPOT_DEPTHS = (0.04, 0.08, 0.12)
PHASE_GRANULES = (1, 2, 3, 5, 8, 12, 16, 24)
MORPHOLOGY_NAMES: tuple[str, ...] = (
    ("bright_fraction", "chord_bright_mean", "chord_dark_mean", "chord_bright_cv")
    + tuple(f"autocorr_{r}" for r in LAGS) + ("corr_length",)
    + tuple(f"open_{s}" for s in GRANULES) + ("open_mean_size", "open_size_spread")
    + tuple(f"close_{s}" for s in GRANULES) + ("close_mean_size", "close_size_spread")
    + ("phase_size_log_mean", "phase_size_log_spread", "phase_size_cv")
    + ("pit_tophat", "pit_share") + tuple(f"spots_{t}" for t in SPOT_DEPTHS)
    + ("particles_per_kpx", "particle_diameter", "particle_cv", "inscribed_diameter",
       "inscribed_cv")
    + ("edge_density", "coherence_local", "coherence_global"))


def otsu(values: np.ndarray, bins: int = 64) -> float:
    """Otsu's threshold of ``values`` (the level maximising the between-class variance)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    idx = np.minimum(((v - lo) / (hi - lo) * bins).astype(np.int64), bins - 1)
    hist = np.bincount(idx, minlength=bins)
    edges = lo + (hi - lo) * np.arange(bins + 1) / bins
    mids = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * mids)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[1:][np.argmax(between[:-1])]) if bins > 1 else lo


def chords(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True along the rows and columns of a 2-D ``mask`` (lineal path)."""
    h, w = mask.shape
    rows = np.zeros((h, w + 1), dtype=np.int8)
    rows[:, :w] = mask
    cols = np.zeros((w, h + 1), dtype=np.int8)
    cols[:, :h] = mask.T
    flat = np.concatenate([[0], rows.ravel(), cols.ravel()])
    d = np.diff(flat)
    return (np.flatnonzero(d == -1) - np.flatnonzero(d == 1)).astype(np.float64)


def _cv(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.std(ddof=1) / x.mean()) if len(x) >= 2 and x.mean() > 0 else 0.0


def autocorrelation(t: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, len(LAGS) + 1): the radial two-point correlation of the mean-subtracted
    grey level (circular, over the variance) at :data:`LAGS` px, and the correlation length (the
    first integer lag where it falls below 1/e, at most the half tile)."""
    n, h, w = t.shape
    z = t - t.mean(axis=(1, 2), keepdims=True)
    f = np.fft.rfft2(z)
    ac = np.fft.irfft2(np.abs(f) ** 2, s=(h, w))
    ac = ac / np.maximum(ac[:, :1, :1], 1e-12)
    dy = np.minimum(np.arange(h), h - np.arange(h))[:, None]
    dx = np.minimum(np.arange(w), w - np.arange(w))[None, :]
    r = np.rint(np.hypot(dy, dx)).astype(int).ravel()
    top = min(h, w) // 2
    counts = np.bincount(r, minlength=top + 1)[:top + 1]
    radial = np.stack([np.bincount(r, weights=a.ravel(), minlength=top + 1)[:top + 1]
                       for a in ac]) / np.maximum(counts, 1)
    below = radial < np.exp(-1.0)
    length = np.where(below.any(axis=1), below.argmax(axis=1), top).astype(np.float64)
    return np.concatenate([radial[:, [min(r, top) for r in LAGS]], length[:, None]], axis=1)


def granulometry(t: np.ndarray, closing: bool) -> np.ndarray:
    """(N, H, W) -> (N, len(GRANULES) + 2): the pattern spectrum of grey openings (closings with
    ``closing``) by squares of :data:`GRANULES` px: the share of the tile's grey-level sum (of its
    inverse for closings) removed between consecutive sizes, their mean size and spread."""
    x = (1.0 - t if closing else t).astype(np.float32)
    total = x.sum(axis=(1, 2)) + 1e-9
    prev = x.sum(axis=(1, 2))
    spec = []
    for s in GRANULES:
        opened = ndi.grey_opening(x, size=(1, s + 1, s + 1)) if s > 0 else x
        cur = opened.sum(axis=(1, 2))
        spec.append((prev - cur) / total)
        prev = cur
    spec = np.clip(np.stack(spec, axis=1), 0.0, None)
    sizes = np.asarray(GRANULES, dtype=np.float64)
    w = spec / np.maximum(spec.sum(axis=1, keepdims=True), 1e-12)
    mean = (w * sizes).sum(axis=1)
    spread = np.sqrt((w * (sizes - mean[:, None]) ** 2).sum(axis=1))
    return np.concatenate([spec, mean[:, None], spread[:, None]], axis=1)


def phase_granulometry(bright: np.ndarray) -> np.ndarray:
    """(N, H, W) bright-phase masks -> (N, 3): the granulometric size distribution of the phase
    (the share of its area removed by openings with squares of :data:`PHASE_GRANULES` px between
    consecutive sizes): its mean log size, its spread in log size (independent of the mean size:
    the width of the particle-size distribution) and its coefficient of variation."""
    x = bright.astype(np.float32)
    prev = x.sum(axis=(1, 2))
    total = prev + 1e-9
    spec = []
    for s in PHASE_GRANULES:
        cur = ndi.grey_opening(x, size=(1, s + 1, s + 1)).sum(axis=(1, 2))
        spec.append((prev - cur) / total)
        prev = cur
    w = np.clip(np.stack(spec, axis=1), 0.0, None)
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    sizes = np.asarray(PHASE_GRANULES, dtype=np.float64)
    log_mean = (w * np.log(sizes)).sum(axis=1)
    log_spread = np.sqrt((w * (np.log(sizes) - log_mean[:, None]) ** 2).sum(axis=1))
    mean = (w * sizes).sum(axis=1)
    cv = np.sqrt((w * (sizes - mean[:, None]) ** 2).sum(axis=1)) / np.maximum(mean, 1e-12)
    return np.stack([log_mean, log_spread, cv], axis=1)


def dark_spots(t: np.ndarray, bright: np.ndarray) -> np.ndarray:
    """(N, H, W) grey tiles and their bright-phase masks -> (N, len(SPOT_DEPTHS)):
    isolated dark spots per 1000 px^2 of bright phase: connected groups of pixels darker by more
    than each depth than the darkest pixel of the ring 1.5-2.5 px around them (a pore a few px
    across is dark in every direction; a gap between particles or a groove is not, some ring
    pixel lies in it)."""
    yy, xx = np.mgrid[-2:3, -2:3]
    ring = (np.hypot(yy, xx) >= 1.5) & (np.hypot(yy, xx) <= 2.5)
    ring_min = ndi.minimum_filter(t, footprint=ring[None], mode="reflect")
    depth = ring_min - t
    area = np.maximum(bright.sum(axis=(1, 2)), 1)
    counts = [[ndi.label((depth[i] > d) & bright[i])[1] for d in SPOT_DEPTHS]
              for i in range(len(t))]
    return 1000.0 * np.asarray(counts, dtype=np.float64).reshape(len(t), -1) / area[:, None]


def split_particles(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The bright phase ``mask`` split into particles: a watershed of the negated distance
    transform from its local maxima (>= 1.5 px from the background, 5 px neighbourhood), so touching
    particles are told apart. Returns the label image, the distance transform and the count."""
    from skimage.segmentation import watershed

    edt = ndi.distance_transform_edt(mask)
    markers, n = ndi.label((edt >= 1.5) & (edt == ndi.maximum_filter(edt, size=5)))
    return (watershed(-edt, markers, mask=mask) if n else markers), edt, int(n)


def _particles(mask: np.ndarray) -> list[float]:
    """Particles per 1000 px^2; mean and CV of the equivalent diameters of the particles that do
    not touch the border; mean and CV of the inscribed diameters (twice the distance-transform
    maximum) of all (:func:`split_particles`)."""
    lab, edt, n = split_particles(mask)
    if n == 0:
        return [0.0] * 5
    idx = np.arange(1, n + 1)
    inscribed = 2.0 * np.asarray(ndi.maximum(edt, lab, idx), dtype=np.float64)
    area = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    eq = 2.0 * np.sqrt(area[~np.isin(idx, border)] / np.pi)
    return [1000.0 * n / mask.size, float(eq.mean()) if len(eq) else 0.0, _cv(eq),
            float(inscribed.mean()), _cv(inscribed)]


def sobel(t: np.ndarray, axis: int) -> np.ndarray:
    """The Sobel derivative of tiles (N, H, W) along ``axis`` (1 or 2), smoothed along the other
    image axis only (``scipy.ndimage.sobel`` would also mix neighbouring tiles of the batch)."""
    d = ndi.correlate1d(t, [-1.0, 0.0, 1.0], axis=axis, mode="reflect")
    return ndi.correlate1d(d, [1.0, 2.0, 1.0], axis=3 - axis, mode="reflect")


def coherence(gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """(N, H, W) gradients -> (N, 2): the orientation coherence of the structure tensor averaged
    over 5 px windows (energy-weighted; 1: straight edges, 0: isotropic), and of the whole tile's
    doubled-angle gradient orientations (peaks of the orientation histogram)."""
    jxx, jyy, jxy = (ndi.uniform_filter(a, size=(1, 5, 5)) for a in (gx * gx, gy * gy, gx * gy))
    num = np.hypot(jxx - jyy, 2 * jxy).sum(axis=(1, 2))
    energy = np.maximum((gx * gx + gy * gy).sum(axis=(1, 2)), 1e-12)
    glob = np.hypot((gx * gx - gy * gy).sum(axis=(1, 2)), (2 * gx * gy).sum(axis=(1, 2)))
    return np.stack([num / np.maximum((jxx + jyy).sum(axis=(1, 2)), 1e-12), glob / energy], 1)


def _per_tile(tile: np.ndarray, smooth: np.ndarray, mag: np.ndarray) -> list[float]:
    level = otsu(smooth)
    bright = smooth > level
    cb, cd = chords(bright), chords(~bright)
    return ([float(bright.mean()), float(cb.mean()) if len(cb) else 0.0,
             float(cd.mean()) if len(cd) else 0.0, _cv(cb)] + _particles(bright)
            + [float((mag > otsu(mag)).mean()), level])


def morphology_features(t: np.ndarray) -> np.ndarray:
    """Grey tiles (N, H, W) in [0, 1] -> (N, len(:data:`MORPHOLOGY_NAMES`)) float64."""
    t = np.asarray(t, dtype=np.float64)
    smooth = ndi.gaussian_filter(t, sigma=(0, 1.0, 1.0))
    gy, gx = sobel(smooth, 1), sobel(smooth, 2)
    mag = np.hypot(gx, gy)
    per = np.array([_per_tile(t[i], smooth[i], mag[i]) for i in range(len(t))],
                   dtype=np.float64).reshape(len(t), 11)
    bright = smooth > per[:, 10][:, None, None]
    tophat = ndi.grey_closing(t, size=(1, 3, 3)) - t
    area = np.maximum(bright.sum(axis=(1, 2)), 1)
    pits = np.stack([(tophat * bright).sum(axis=(1, 2)) / area,
                     ((tophat > 0.04) & bright).sum(axis=(1, 2)) / area], 1)
    spots = dark_spots(t, bright)
    return np.concatenate([per[:, :4], autocorrelation(t), granulometry(smooth, False),
                           granulometry(t, True), phase_granulometry(bright), pits, spots,
                           per[:, 4:9], per[:, 9:10], coherence(gy, gx)], axis=1)
