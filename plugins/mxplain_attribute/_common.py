"""Helpers shared by the forward and backward attribute explainers."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.figures import save_figure as _save_figure
from mxplain.interfaces import ExplainContext, Lot

DIRECTIONS = ("increase", "decrease")


def require_models(ctx: ExplainContext, who: str):
    """The context's predictor and editor, or a UserError naming what is missing."""
    if ctx.predictor is None:
        raise UserError(f"explainer {who!r} needs a predictor ([predictor] table)")
    if ctx.editor is None:
        raise UserError(f"explainer {who!r} needs an editor ([editor] table)")
    return ctx.predictor, ctx.editor


def lot_attribute_vector(lot: Lot, k: int, who: str) -> np.ndarray:
    """The lot's attribute labels as a float32 ``(K,)`` vector; unlabelled (NaN) entries -> 0.5
    (the middle of the range) with a warning, out-of-range labels clipped to [0, 1]."""
    a = np.asarray(lot.attributes, dtype=np.float32).reshape(-1)
    if a.shape[0] != k:
        raise UserError(f"explainer {who!r}: lot {lot.lot_id!r} has {a.shape[0]} attribute "
                        f"labels but the editor uses {k} attributes")
    if np.isnan(a).any():
        warnings.warn(f"lot {lot.lot_id!r}: unlabelled attributes held at 0.5", stacklevel=3)
    return fill_attributes(a)


def fill_attributes(a: np.ndarray) -> np.ndarray:
    """NaN -> 0.5, clipped to [0, 1] (the same rule in explain_lot and summarize)."""
    return np.clip(np.nan_to_num(np.asarray(a, dtype=np.float32), nan=0.5), 0.0, 1.0)


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def fixed_threads(n: int | None):
    """Run the block with ``n`` torch intra-op CPU threads (``None``: leave the setting), restoring
    the caller's count afterwards: the block's float reductions are then split the same way in
    every process (``mxplain run`` on a two-core machine, a one-thread Dask worker)."""
    old = torch.get_num_threads()
    if n is None or int(n) == old:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def model_device(model, fallback: torch.device) -> torch.device:
    dev = getattr(model, "device", None)
    return torch.device(dev) if dev is not None else torch.device(fallback)


def edit_predict(editor, predictor, latent, attrs: torch.Tensor) -> torch.Tensor:
    """Predictor on ``decode(latent, attrs)``; ``(N,)`` float32 on the attributes' device."""
    imgs = editor.decode(latent, attrs)
    pdev = model_device(predictor, imgs.device)
    out = predictor.forward(imgs.to(pdev))
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(np.asarray(out))
    return out.reshape(-1).float().to(attrs.device)


def to_device_latent(latent, device):
    if isinstance(latent, (tuple, list)):
        return type(latent)(to_device_latent(z, device) for z in latent)
    return latent.to(device)


def pick_lots(cube) -> dict[str, int]:
    """Cube positions of the lots with the low, median and high measured property (written lots
    only; a lot with no real tile is skipped). Falls back to mean prediction without a property."""
    mask = np.asarray(cube["tile_mask"].values, dtype=bool)
    written = mask.any(axis=1)
    if "measured_property" in cube:
        prop = np.asarray(cube["measured_property"].values, dtype=np.float64)
    else:
        pred = np.where(mask, np.asarray(cube["prediction"].values, np.float64), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            prop = np.nanmean(pred, axis=1)
    ok = np.flatnonzero(written & np.isfinite(prop))
    if ok.size == 0:
        ok = np.flatnonzero(written)
        if ok.size == 0:
            return {}
        prop = np.zeros(len(written))
    order = ok[np.argsort(prop[ok], kind="stable")]
    return {"low": int(order[0]), "median": int(order[len(order) // 2]), "high": int(order[-1])}


def lot_label(cube, i: int) -> str:
    if "lot" in cube.coords:
        return str(cube["lot"].values[i])
    return str(i)


def figures_dir(ctx):
    d = ctx.figures_dir
    if d is None:
        return None
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_figure(fig, out, name: str) -> str:
    """Save ``fig`` as ``out/name`` (PNG), close it, return ``name``."""
    _save_figure(fig, out / name, dpi=110)
    return name
