"""GradCAM / Integrated Gradients explainer: agreement with Captum and with an independent
implementation, signed and unscaled maps, layer choice, errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from gradcam_fakes import ForestLike, RegionPredictor, TinyConvPredictor
from torch import nn

from mxplain.errors import UserError
from mxplain.interfaces import ExplainContext, Lot
from mxplain_gradcam.gradcam import GradCAM, PredictorModule, default_layer


def tiles(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, size // 4, size // 4, generator=g)
    # smooth-ish structured tiles (not pure noise) in [0, 1]
    return F.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


def manual_gradcam(predictor, layer, x):
    """Independent GradCAM: hooks, spatial mean of gradients, weighted sum, no ReLU, bilinear."""
    store = {}

    def fwd(_m, _i, out):
        out.retain_grad()
        store["act"] = out

    h = layer.register_forward_hook(fwd)
    try:
        x = x.clone()
        y = predictor.forward(x)
        y.sum().backward()
    finally:
        h.remove()
    act = store["act"]
    weights = act.grad.mean(dim=(2, 3), keepdim=True)
    cam = (weights * act).sum(1, keepdim=True)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return cam[:, 0].detach().numpy()


def test_default_layer_is_deepest_conv_feature_map():
    p = TinyConvPredictor()
    assert default_layer(p, p.net, tiles(1)) == "2"

    class Wrapped(nn.Module):  # root -> one child holding convs *and* the head
        def __init__(self, net):
            super().__init__()
            self.body = net

        def forward(self, x):
            return self.body(x)

    q = TinyConvPredictor()
    q.net = Wrapped(q.net)
    assert default_layer(q, q.net, tiles(1)) == "body.2"

    class Advertised(TinyConvPredictor):
        gradcam_layer = "0"

    a = Advertised()
    assert default_layer(a, a.net, tiles(1)) == "0"


def test_equals_direct_captum_call():
    p = TinyConvPredictor(seed=1)
    x = tiles(5)
    ours = GradCAM(layer="2").gradcam(x, p)
    cam = LayerGradCam(lambda t: p.forward(t).reshape(-1, 1), p.net[2])
    ref = cam.attribute(x, target=0, relu_attributions=False)
    ref = LayerAttribution.interpolate(ref, (32, 32), interpolate_mode="bilinear")[:, 0]
    assert ours.shape == (5, 32, 32) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-5, atol=1e-9)
    # the default layer gives the same maps
    np.testing.assert_allclose(GradCAM().gradcam(x, p), ours, rtol=1e-6, atol=1e-10)


def test_matches_independent_reimplementation():
    p = TinyConvPredictor(seed=2)
    x = tiles(4, seed=3)
    ours = GradCAM(layer="2").gradcam(x, p)
    ref = manual_gradcam(p, p.net[2], x)
    for a, b in zip(ours, ref):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.999
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-8)


def test_signed_and_not_minmax_scaled():
    p = TinyConvPredictor(seed=0)
    m = GradCAM().gradcam(tiles(4, seed=5), p)
    assert (m < 0).any() and (m > 0).any()  # signed: no ReLU
    lo, hi = m.reshape(4, -1).min(1), m.reshape(4, -1).max(1)
    assert not (np.allclose(lo, 0) and np.allclose(hi, 1))  # not per-tile min-max scaled
    assert np.abs(hi).max() < 0.5 and not np.allclose(hi[0], hi[1])


def test_explain_lot_variables_and_frozen_params_and_eval_mode():
    p = TinyConvPredictor(seed=4)
    for q in p.net.parameters():
        q.requires_grad_(False)
    p.net.train()  # the explainer must evaluate in eval mode and restore the flag
    ex = GradCAM(ig_steps=4, batch_size=2)
    ctx = ExplainContext(predictor=p, progress=False)
    assert set(ex.variables(ctx)) == {"gradcam", "integrated_gradients"}
    assert ex.variables(ctx)["gradcam"].dims == ("lot", "tile", "y", "x")
    lot = Lot(0, "a", tiles(3), np.full(4, 0.5), 1.0)
    out = ex.explain_lot(lot, ctx)
    assert out["gradcam"].shape == (3, 32, 32) and out["integrated_gradients"].shape == (3, 32, 32)
    assert np.abs(out["gradcam"]).sum() > 0 and np.isfinite(out["integrated_gradients"]).all()
    assert p.net.training
    again = ex.explain_lot(lot, ctx)  # deterministic
    np.testing.assert_array_equal(again["gradcam"], out["gradcam"])
    assert set(GradCAM(integrated_gradients=False).explain_lot(lot, ctx)) == {"gradcam"}


def test_integrated_gradients_region_model_completeness():
    p = RegionPredictor(size=32, lo=8, hi=16)
    x = tiles(3, seed=7)
    ig = GradCAM(ig_steps=8).ig(x, p)
    outside = np.ones((32, 32), bool)
    outside[8:16, 8:16] = False
    assert np.abs(ig[:, outside]).max() == 0.0
    base = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
    delta = (p.forward(x) - p.forward(base)).detach().numpy()
    np.testing.assert_allclose(ig.sum((1, 2)), delta, rtol=1e-4, atol=1e-6)
    blur = GradCAM(ig_steps=8, ig_baseline="blur").ig(x, p)
    assert np.abs(blur[:, outside]).max() == 0.0 and not np.allclose(blur, ig)


def test_wrapper_returns_column():
    p = TinyConvPredictor()
    out = PredictorModule(p, p.torch_module())(tiles(2))
    assert out.shape == (2, 1)


def test_non_differentiable_and_bad_layer_are_user_errors():
    ctx = ExplainContext(predictor=ForestLike(), progress=False)
    lot = Lot(0, "a", tiles(2), np.full(4, 0.5), 1.0)
    with pytest.raises(UserError, match="differentiable predictor"):
        GradCAM().explain_lot(lot, ctx)
    with pytest.raises(UserError, match="needs a predictor"):
        GradCAM().explain_lot(lot, ExplainContext(progress=False))
    ctx = ExplainContext(predictor=TinyConvPredictor(), progress=False)
    with pytest.raises(UserError, match="layer 'nope' not found"):
        GradCAM(layer="nope").explain_lot(lot, ctx)
    with pytest.raises(UserError, match="ig_baseline"):
        GradCAM(ig_baseline="zeros").explain_lot(lot, ctx)


def test_registered_as_plugin():
    from mxplain_gradcam import mxplain_explainers

    names = {c.name for c in mxplain_explainers()}
    assert names == {"gradcam", "compare"}
    assert GradCAM.requires_gradients


def test_wideresnet_smoke():
    mod = pytest.importorskip("mxplain_wideresnet.predictor")
    from mxplain_wideresnet.model import WideResNet

    torch.manual_seed(0)
    net = WideResNet(10, 1, 0.0)
    with torch.no_grad():
        net.fc.weight.normal_(0, 0.5)
    p = mod.WideResNetPredictor(depth=10, widen=1)
    p.load_state_dict({"model": net.state_dict(), "center": 0.0, "half_range": 1.0,
                       "depth": 10, "widen": 1, "tile_size": 32})
    x = tiles(2, seed=9)
    m = GradCAM(ig_steps=4).gradcam(x, p)
    ref = manual_gradcam(p, p.torch_module().block3, x)
    assert m.shape == (2, 32, 32) and (m < 0).any() and (m > 0).any()
    for a, b in zip(m, ref):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.999
