"""Independent measurement of the four lot attributes by image analysis alone.

Nothing here reads the generator's parameters: every number comes from the pixels.

Pipeline per tile (``uint8`` ``(H, W)``):

1. **Crystals**: Gaussian smoothing (sigma 1 px), Otsu threshold, holes filled, specks < 6 px
   removed.
2. **Individual crystals**: Euclidean distance transform of the crystal mask, its local maxima
   (>= 1.5 px from the background, 2 px apart) as markers, marker-based watershed on the negated
   distance (splits touching and overlapping crystals).
3. **Pin-holes**: black top-hat (disc radius 2 px) of the lightly smoothed image (sigma 0.5 px)
   above 0.10 grey levels (of 1), inside the crystal mask eroded by 2 px; connected components
   are holes.
4. **Boundaries**: crystal outline (mask minus its erosion) plus watershed lines between crystals.

Raw measurements (columns of :func:`measure_tiles`, in :data:`ATTRIBUTES` order):

* ``size``: mean equivalent diameter (px) of the segmented crystals (regions >= 6 px);
* ``porosity``: pin-holes per px^2 of crystal area;
* ``polydispersity``: coefficient of variation of the equivalent diameters of the crystals
  that do not touch the tile border (all crystals when fewer than 3 such);
* ``facetness``: flat-face score ``1 / kurtosis`` of the gradient magnitude inside crystal interiors
  (>= 3 px from the outline, away from holes): flat faces give near-zero gradients broken by
  sharp ridges (heavy-tailed, high kurtosis -> low score is rounded... see :func:`facet_score`).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation
from skimage.feature import peak_local_max

ATTRIBUTES = ("size", "porosity", "polydispersity", "facetness")
UNITS = {
    "size": "px (mean equivalent diameter)",
    "porosity": "holes per px^2 of crystal area",
    "polydispersity": "coefficient of variation of equivalent diameters",
    "facetness": "flat-face score (dimensionless)",
}

MIN_AREA = 6
_DISK2 = morphology.disk(2)


def _as_float(tile: np.ndarray) -> np.ndarray:
    tile = np.asarray(tile)
    if tile.ndim != 2:
        raise ValueError(f"a tile must be 2-D (H, W), got shape {tile.shape}")
    if tile.dtype == np.uint8:
        return tile.astype(np.float64) / 255.0
    return tile.astype(np.float64)


def _crystal_mask(img: np.ndarray) -> np.ndarray:
    sm = ndi.gaussian_filter(img, 1.0)
    if np.ptp(sm) < 1e-6:
        return np.zeros(img.shape, bool)
    t = filters.threshold_otsu(sm)
    cr = ndi.binary_fill_holes(sm > t)
    lab, n = ndi.label(cr)
    if n:
        sizes = np.bincount(lab.ravel())
        small = sizes < MIN_AREA
        small[0] = False
        cr[small[lab]] = False
    return cr


def _analyse(tile: np.ndarray) -> dict:
    img = _as_float(tile)
    cr = _crystal_mask(img)
    dist = ndi.distance_transform_edt(cr)
    lab = np.zeros(img.shape, np.int32)
    if cr.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peaks = peak_local_max(dist, min_distance=2, threshold_abs=1.5, exclude_border=False,
                                   labels=measure.label(cr))
        markers = np.zeros(img.shape, np.int32)
        if len(peaks):
            markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        # components without a marker (thin slivers) get one of their own
        comp, nc = ndi.label(cr)
        has = np.zeros(nc + 1, bool)
        has[comp[markers > 0]] = True
        for c in np.flatnonzero(~has[1:]) + 1:
            yx = np.argwhere(comp == c)[0]
            markers[tuple(yx)] = markers.max() + 1
        lab = segmentation.watershed(-dist, markers, mask=cr, watershed_line=False)
    eroded2 = ndi.binary_erosion(cr, iterations=2)
    s5 = ndi.gaussian_filter(img, 0.5)
    bth = morphology.black_tophat(s5, _DISK2)
    holes = (bth > 0.10) & eroded2
    edges = cr & ~ndi.binary_erosion(cr)
    lines = segmentation.find_boundaries(lab, mode="inner") & cr & (lab > 0)
    boundaries = edges | (lines & ~edges)
    return {"img": img, "crystals": cr, "labels": lab, "dist": dist, "holes": holes,
            "boundaries": boundaries, "bth": bth}


def segment(tile: np.ndarray) -> dict:
    """Boolean masks ``crystals``, ``boundaries`` (crystal edges), ``holes`` (pin-holes) and the
    ``labels`` image (int, 0 = background, one label per crystal) of a ``uint8`` ``(H, W)`` tile."""
    a = _analyse(tile)
    return {k: a[k] for k in ("crystals", "boundaries", "holes", "labels")}


def facet_score(img: np.ndarray, crystals: np.ndarray, bth: np.ndarray) -> float:
    """Flat faces meeting at ridges make the gradient magnitude inside crystals heavy-tailed (near
    zero on faces, large on ridges); a rounded dome has a smooth, light-tailed gradient. Returns
    ``1 - 3 / kurtosis``-style score: higher = more faceted."""
    g = ndi.gaussian_filter(img, 0.8)
    gm = np.hypot(ndi.sobel(g, 0), ndi.sobel(g, 1))
    near_hole = ndi.binary_dilation(bth > 0.06, iterations=2)
    inner = ndi.binary_erosion(crystals, iterations=3) & ~near_hole
    v = gm[inner]
    if len(v) < 10:
        return float("nan")
    var = v.var()
    if var <= 0:
        return float("nan")
    kurt = ((v - v.mean()) ** 4).mean() / var**2
    return float(kurt)


def measure_tile(tile: np.ndarray) -> np.ndarray:
    a = _analyse(tile)
    lab, cr = a["labels"], a["crystals"]
    h, w = lab.shape
    props = [p for p in measure.regionprops(lab) if p.area >= MIN_AREA]
    eq = np.array([p.equivalent_diameter_area for p in props])
    inner = np.array([p.equivalent_diameter_area for p in props
                      if p.bbox[0] > 0 and p.bbox[1] > 0 and p.bbox[2] < h and p.bbox[3] < w])
    size = float(eq.mean()) if len(eq) else float("nan")
    pool = inner if len(inner) >= 3 else eq
    poly = float(pool.std() / pool.mean()) if len(pool) >= 2 else float("nan")
    area = cr.sum()
    n_holes = measure.label(a["holes"]).max()
    poro = float(n_holes / area) if area > 0 else float("nan")
    facet = facet_score(a["img"], cr, a["bth"])
    return np.array([size, poro, poly, facet])


def measure_tiles(tiles: np.ndarray) -> np.ndarray:
    """Raw measurements ``(N, 4)`` (columns :data:`ATTRIBUTES`, units :data:`UNITS`) of ``uint8``
    tiles ``(N, H, W)``; NaN where a tile shows nothing measurable (e.g. no crystal)."""
    tiles = np.asarray(tiles)
    if tiles.ndim == 2:
        tiles = tiles[None]
    if tiles.ndim != 3:
        raise ValueError(f"tiles must be (N, H, W), got shape {tiles.shape}")
    if len(tiles) == 0:
        return np.zeros((0, len(ATTRIBUTES)))
    return np.stack([measure_tile(t) for t in tiles])


def lot_measurement(tiles: np.ndarray) -> np.ndarray:
    """The lot's measurement: the NaN-ignoring mean of :func:`measure_tiles` over its tiles."""
    m = measure_tiles(tiles)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(m, axis=0)
