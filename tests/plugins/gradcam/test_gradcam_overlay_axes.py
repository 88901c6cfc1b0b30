"""Issue 19 item 3: the overlay's forward panel is drawn on an honest axis (at least the
property's range across lots, a no-effect line at the tile's edited prediction at its own
attributes), and its backward panel draws no bar for a counterfactual that missed its target."""

import numpy as np
import xarray as xr

from mxplain.interfaces import ExplainContext


def _cube():
    n, t, k, s, h = 2, 2, 2, 3, 8
    fp = np.full((n, t, k, s), 331.5, np.float32)
    fp[..., 0], fp[..., 2] = 331.2, 331.9  # a 0.7 HV sweep
    ba = np.full((n, t, 2, k), 0.7, np.float32)
    conv = np.ones((n, t, 2), bool)
    conv[0, 0, 1] = False  # lot 0, tile 0: decrease missed its target
    return xr.Dataset({
        "overlay_image": (("lot", "y", "x"), np.full((n, h, h), 0.5, np.float32)),
        "overlay_gradcam": (("lot", "y", "x"), np.zeros((n, h, h), np.float32)),
        "overlay_ig": (("lot", "y", "x"), np.zeros((n, h, h), np.float32)),
        "forward_prediction": (("lot", "tile", "attribute", "step"), fp),
        "value": (("step",), np.linspace(0, 1, s)),
        "prediction": (("lot", "tile"), np.full((n, t), 331.0, np.float32)),
        "reconstruction_prediction": (("lot", "tile"), np.full((n, t), 331.5, np.float32)),
        "measured_property": (("lot",), np.array([300.0, 360.0], np.float32)),
        "tile_mask": (("lot", "tile"), np.ones((n, t), bool)),
        "lot_attributes": (("lot", "attribute"), np.full((n, k), 0.5, np.float32)),
        "backward_attributes": (("lot", "tile", "direction", "attribute"), ba),
        "backward_converged": (("lot", "tile", "direction"), conv)},
        coords={"lot": ["L0", "L1"], "attribute": ["a", "b"],
                "direction": ["increase", "decrease"]})


def test_overlay_forward_axis_and_unreached_bars(tmp_path, monkeypatch):
    import matplotlib.axes

    from mxplain_gradcam import figures

    calls, bars = [], []
    real_axis, real_bar = figures.honest_axis, matplotlib.axes.Axes.bar

    def spy_axis(ax, lo, hi, spread, **kw):
        calls.append((lo, hi, spread, kw))
        real_axis(ax, lo, hi, spread, **kw)
        calls[-1] = calls[-1] + (ax.get_ylim(),)

    def spy_bar(self, x, height, *a, **kw):
        bars.append((np.asarray(height).copy(), kw.get("label")))
        return real_bar(self, x, height, *a, **kw)

    monkeypatch.setattr(figures, "honest_axis", spy_axis)
    monkeypatch.setattr(matplotlib.axes.Axes, "bar", spy_bar)
    ctx = ExplainContext(attributes=("a", "b"), property_name="hardness", property_units="HV")
    out = figures.overlay_figures(_cube(), ctx, tmp_path, 1)
    assert len(out) == 1
    (lo, hi, spread, kw, ylim), = calls
    assert (lo, hi) == (np.float32(331.2), np.float32(331.9)) and spread == 60.0
    assert kw["zero"] == 331.5 and kw["units"] == "HV"
    assert ylim[1] - ylim[0] >= 60.0 - 1e-6  # 0.7 HV drawn on the lots' 60 HV
    missed = [h for h, label in bars if label == "decrease: target not reached"]
    assert len(missed) == 1 and not missed[0].any()
