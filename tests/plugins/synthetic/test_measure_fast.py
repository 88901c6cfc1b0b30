"""The synthetic measurement's own peak finding and region loop give what the skimage calls they
replace gave: the same markers in the same order, the same facet score, bit for bit."""

import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import measure as skmeasure
from skimage._shared.coord import ensure_spacing
from skimage.feature import peak_local_max

from mxplain_synthetic import measure
from mxplain_synthetic.generate import render_tile


@pytest.fixture(scope="module")
def tiles():
    rng = np.random.default_rng(7)
    out = []
    for i in range(24):
        a = dict(zip(measure.ATTRIBUTES, rng.uniform(0, 1, 4)))
        t = render_tile(a, 64, 100 + i)
        out.append(t)
        noise = rng.integers(-40, 41, t.shape)  # rougher masks: slivers, plateaus, near labels
        out.append(np.clip(t.astype(int) + noise, 0, 255).astype(np.uint8))
    return out


def _dist_labels(tile):
    cr = measure._crystal_mask(measure._as_float(tile))
    return ndi.distance_transform_edt(cr), skmeasure.label(cr)


def test_peaks_are_peak_local_max(tiles):
    n_peaks = 0
    for t in tiles:
        dist, lab = _dist_labels(t)
        if not lab.any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = peak_local_max(dist, min_distance=measure.PEAK_DISTANCE,
                                  threshold_abs=measure.PEAK_DEPTH, exclude_border=False,
                                  labels=lab)
        got = measure._peaks(dist, lab)
        np.testing.assert_array_equal(got, want)
        n_peaks += len(got)
    assert n_peaks > 200


def test_spacing_is_ensure_spacing():
    rng = np.random.default_rng(0)
    for n in (2, 5, 20, 50, 80):
        coord = rng.integers(0, 9, (n, 2))
        np.testing.assert_array_equal(measure._spaced(coord, 2),
                                      ensure_spacing(coord, spacing=2, p_norm=np.inf))


def _facet_regionprops(img, labels, dist, pit):
    g = ndi.gaussian_filter(img, 0.8)
    clear = ~ndi.binary_dilation(pit > measure.HOLE_DEPTH, iterations=1)
    corrs, weights = [], []
    for p in skmeasure.regionprops(labels):
        m = labels[p.slice] == p.label
        d = dist[p.slice][m]
        keep = (d >= 1.5) & clear[p.slice][m]
        if keep.sum() < 12:
            continue
        v, d = g[p.slice][m][keep], d[keep]
        if v.std() <= 0 or d.std() <= 0:
            continue
        corrs.append(np.corrcoef(v, d)[0, 1])
        weights.append(keep.sum())
    return float(np.average(corrs, weights=weights)) if corrs else float("nan")


def test_facet_score_is_the_regionprops_loop(tiles):
    scores = []
    for t in tiles:
        a = measure._analyse(t)
        got = measure.facet_score(a["img"], a["labels"], a["dist"], a["pit"])
        want = _facet_regionprops(a["img"], a["labels"], a["dist"], a["pit"])
        assert got == want or (np.isnan(got) and np.isnan(want))
        scores.append(got)
    assert np.isfinite(scores).sum() > 20
