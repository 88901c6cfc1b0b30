"""GradCAM (and Integrated Gradients) pixel-space baselines through Captum.

``GradCAM`` writes two results-cube variables, both raw (signed, *not* min-max scaled):

* ``gradcam (lot, tile, y, x)`` -- :class:`captum.attr.LayerGradCam` on the predictor's scalar
  regression output (``target=0`` of an ``(N, 1)`` wrapper), ``relu_attributions=False``,
  upsampled to the tile size with ``LayerAttribution.interpolate(..., "bilinear")``;
* ``integrated_gradients (lot, tile, y, x)`` -- :class:`captum.attr.IntegratedGradients` with the
  tile's own mean grey level as baseline (only when ``integrated_gradients=True``).

Layer choice (``layer`` param, a dotted module path inside ``predictor.torch_module()``): when not
given, ``predictor.gradcam_layer`` (declared on :class:`mxplain.interfaces.Predictor`) is used; without that,
the *deepest convolutional feature map*: the last module, in execution order of a forward pass, that
is or contains an ``nn.Conv2d`` and returns a 4-D ``(N, C, h, w)`` tensor (for a WideResNet this is
the last residual group; for a plain ``nn.Sequential`` of conv/ReLU/linear layers it is the last
``Conv2d``).
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mxplain.errors import UserError
from mxplain.filters import gaussian_blur
from mxplain.interfaces import ExplainContext, Explainer, Lot, Predictor, Variable


class PredictorModule(nn.Module):
    """``nn.Module`` around ``predictor.forward`` returning the scalar output as ``(N, 1)``.

    The predictor's ``forward`` does its own preprocessing (e.g. per-image standardisation) before
    calling its inner module, so Captum's hooks on a layer of that inner module see exactly the
    computation the predictor performs. The inner module is registered as ``net`` so that
    ``.eval()`` reaches it.
    """

    def __init__(self, predictor: Predictor, module: nn.Module | None = None):
        super().__init__()
        if module is not None:
            self.net = module
        object.__setattr__(self, "_predictor", predictor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._predictor.forward(x).reshape(-1, 1)


def check_differentiable(predictor: Predictor | None, who: str = "gradcam",
                         need_module: bool = True) -> nn.Module | None:
    """The predictor's torch module; :class:`UserError` when it cannot be differentiated."""
    if predictor is None:
        raise UserError(f"{who} needs a predictor (none in the run context)")
    pname = predictor.name
    if not predictor.differentiable:
        raise UserError(
            f"{who} needs a differentiable predictor; predictor {pname!r} is not differentiable "
            f"(remove [explain.{who}] or use a neural predictor)"
        )
    module = predictor.torch_module()
    if need_module and not isinstance(module, nn.Module):
        raise UserError(
            f"{who} needs a differentiable predictor with a torch module; predictor {pname!r} "
            f"returns no torch_module()"
        )
    return module


def _contains_conv(m: nn.Module) -> bool:
    return any(isinstance(s, nn.Conv2d) for s in m.modules())


def default_layer(predictor: Predictor, module: nn.Module, example: torch.Tensor) -> str:
    """Module path of the default GradCAM layer (see the module docstring)."""
    if predictor.gradcam_layer:  # declared on the predictor's class (Predictor.gradcam_layer)
        return str(predictor.gradcam_layer)
    names = {id(m): n for n, m in module.named_modules()}
    candidates = [m for m in module.modules() if _contains_conv(m)]
    if not candidates:
        raise UserError(f"gradcam: predictor {predictor.name!r} has no Conv2d layer; set [explain.gradcam] "
                        f"layer = '<module path>'")
    finished: list[str] = []

    def hook(mod, _inp, out):
        if isinstance(out, torch.Tensor) and out.ndim == 4:
            finished.append(names[id(mod)])

    handles = [m.register_forward_hook(hook) for m in candidates]
    try:
        with torch.no_grad():
            predictor.forward(example[:1])
    finally:
        for h in handles:
            h.remove()
    if not finished:
        raise UserError("gradcam: no convolutional module returned a 4-D feature map; set "
                        "[explain.gradcam] layer = '<module path>'")
    return finished[-1]


def get_layer(module: nn.Module, path: str) -> nn.Module:
    if path == "":
        return module
    try:
        return module.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in module.named_modules() if n]
        raise UserError(f"gradcam: layer {path!r} not found in the predictor's module; available: "
                        f"{', '.join(names[:40])}{' …' if len(names) > 40 else ''}") from None


def default_sigma(x: torch.Tensor) -> float:
    """The blur used for "fully blurred" reference tiles: sigma = tile size / 16 (at least 1)."""
    return max(1.0, min(x.shape[-2:]) / 16.0)


def ig_baseline(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Integrated Gradients baseline: ``"mean"`` (each tile's mean grey level, the default) or
    ``"blur"`` (the tile blurred with sigma = tile size / 16).

    With a predictor that standardises each tile (WideResNet), the straight path from the mean
    grey tile is degenerate (the standardised input is the same for every step > 0), so IG then
    equals ``c * (x - mean) * grad f(x)`` with a quadrature-dependent constant ``c``: a valid
    gradient-times-input ranking whose sum does not equal ``f(x) - f(baseline)``. ``"blur"``
    keeps completeness for such predictors."""
    if kind == "mean":
        return x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x).contiguous()
    if kind == "blur":
        return gaussian_blur(x, default_sigma(x)) if len(x) else x.clone()
    raise UserError(f"[explain.gradcam] ig_baseline must be 'mean' or 'blur', got {kind!r}")


class _EvalMode:
    """Put a module in eval mode for the duration of a block, restoring its flags afterwards."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.module.modules()]
        self.module.eval()
        return self.module

    def __exit__(self, *exc):
        for m, flag in self.flags:
            m.training = flag


class GradCAM(Explainer):
    """Signed, unscaled GradCAM and Integrated Gradients maps of the predictor's output."""

    name: ClassVar[str] = "gradcam"
    test_params: ClassVar[dict] = {"ig_steps": 4}
    requires_gradients: ClassVar[bool] = True

    @classmethod
    def requirements(cls, params: dict) -> frozenset[str]:
        """A differentiable predictor with a torch module (GradCAM hooks one of its layers)."""
        return frozenset({"predictor", "gradients", "torch_module"})

    def __init__(self, layer: str | None = None, batch_size: int = 64,
                 integrated_gradients: bool = True, ig_steps: int = 16,
                 ig_baseline: str = "mean"):
        self.layer = layer
        self.batch_size = batch_size
        self.integrated_gradients = integrated_gradients
        self.ig_steps = ig_steps
        self.ig_baseline = ig_baseline

    # ---------------------------------------------------------------- cube
    @classmethod
    def check_params(cls, params: dict) -> None:
        """``[explain.gradcam]`` choices, when the config is resolved (counts and batch sizes:
        the common rules of :mod:`mxplain.config`)."""
        kind = {**cls.param_defaults(), **params}["ig_baseline"]
        if kind not in ("mean", "blur"):
            raise UserError(f"[explain.gradcam] ig_baseline must be 'mean' or 'blur', got {kind!r}")

    def variables(self, ctx: ExplainContext) -> dict[str, Variable]:
        out = {"gradcam": Variable(("lot", "tile", "y", "x"),
                                   description="GradCAM map, signed, not min-max scaled")}
        if self.integrated_gradients:
            out["integrated_gradients"] = Variable(
                ("lot", "tile", "y", "x"), units=ctx.property_units,
                description="Integrated Gradients attribution per pixel, signed")
        return out

    def explain_lot(self, lot: Lot, ctx: ExplainContext) -> dict[str, np.ndarray]:
        out = {"gradcam": self.gradcam(lot.tiles, ctx.predictor, progress=ctx.progress)}
        if self.integrated_gradients:
            out["integrated_gradients"] = self.ig(lot.tiles, ctx.predictor, progress=ctx.progress)
        return out

    # ---------------------------------------------------------------- maps
    #: the report section's title, shared with the pixel-vs-attribute comparison's
    section_title: ClassVar[str] = "Pixel vs attribute explanations (GradCAM, Integrated Gradients)"

    def report_section(self, run):
        """One section with the pixel-vs-attribute comparison (same title): the summary's
        headline numbers and the ``gradcam_*`` figures."""
        from mxplain.report_sections import default_section

        return default_section(run, self.section_title, ("gradcam_",))

    def layer_name(self, predictor: Predictor, example: torch.Tensor) -> str:
        module = check_differentiable(predictor, "gradcam")
        if self.layer is not None:
            get_layer(module, self.layer)
            return self.layer
        return default_layer(predictor, module, example.to(predictor.device))

    def gradcam(self, tiles: torch.Tensor, predictor: Predictor,
                progress: bool = False) -> np.ndarray:
        """``(N, 1, H, W)`` tiles -> ``(N, H, W)`` float32 GradCAM maps (signed, raw)."""
        from captum.attr import LayerAttribution, LayerGradCam

        module = check_differentiable(predictor, "gradcam")
        n, _, h, w = tiles.shape
        if n == 0:
            return np.zeros((0, h, w), np.float32)
        layer = get_layer(module, self.layer_name(predictor, tiles))
        wrapper = PredictorModule(predictor, module)
        cam = LayerGradCam(wrapper, layer)
        out = []
        with _EvalMode(module), torch.enable_grad():
            for i in tqdm(range(0, n, self.batch_size), desc="gradcam", leave=False,
                          disable=not progress or n <= self.batch_size):
                x = tiles[i: i + self.batch_size].to(predictor.device).float()
                a = cam.attribute(x, target=0, relu_attributions=False)
                a = LayerAttribution.interpolate(a, (h, w), interpolate_mode="bilinear")
                out.append(a.detach()[:, 0].float().cpu())
        return torch.cat(out).numpy().astype(np.float32)

    def ig(self, tiles: torch.Tensor, predictor: Predictor, progress: bool = False) -> np.ndarray:
        """``(N, 1, H, W)`` tiles -> ``(N, H, W)`` Integrated Gradients (baseline: tile mean)."""
        from captum.attr import IntegratedGradients

        module = check_differentiable(predictor, "gradcam", need_module=False)
        ig_baseline(tiles[:0], self.ig_baseline)  # validates the key before any work
        n, _, h, w = tiles.shape
        if n == 0:
            return np.zeros((0, h, w), np.float32)
        wrapper = PredictorModule(predictor, module)
        ig = IntegratedGradients(wrapper)
        out = []
        ctxm = _EvalMode(module) if isinstance(module, nn.Module) else _Null()
        with ctxm, torch.enable_grad():
            for i in tqdm(range(0, n, self.batch_size), desc="integrated gradients", leave=False,
                          disable=not progress or n <= self.batch_size):
                x = tiles[i: i + self.batch_size].to(predictor.device).float()
                base = ig_baseline(x, self.ig_baseline)
                a = ig.attribute(x, baselines=base, target=0, n_steps=int(self.ig_steps),
                                 internal_batch_size=max(int(self.batch_size), 1))
                out.append(a.detach()[:, 0].float().cpu())
        return torch.cat(out).numpy().astype(np.float32)

    def timed(self, tiles: torch.Tensor, predictor: Predictor) -> tuple[dict, dict]:
        """Both maps plus their cost in milliseconds per tile."""
        maps, cost = {}, {}
        for key, fn in (("gradcam", self.gradcam), ("integrated_gradients", self.ig)):
            t0 = time.perf_counter()
            maps[key] = fn(tiles, predictor)
            if predictor.device.type == "cuda":
                torch.cuda.synchronize(predictor.device)
            cost[key] = 1000.0 * (time.perf_counter() - t0) / max(len(tiles), 1)
        return maps, cost


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
