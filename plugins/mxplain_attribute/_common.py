"""Helpers shared by the forward and backward attribute explainers."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.figures import save_figure as _save_figure
from mxplain.interfaces import ExplainContext, Lot, latent_take
from mxplain.store import to_uint8

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


def example_edits(editor, tile: torch.Tensor, attrs: np.ndarray, device,
                  threads: int | None = 1) -> np.ndarray:
    """The figures' edited example tiles, written to the cube with the lot: one tile ``(1, H,
    W)`` (or ``(1, 1, H, W)``) decoded at each row of ``attrs (M, K)`` -> ``uint8 (M, H, W)``.
    Under ``threads`` torch CPU threads (the same bits in every process) and with the global
    generators saved and restored, so that nothing the explainers compute after it changes."""
    device = torch.device(device)
    x = tile.reshape(1, 1, *tile.shape[-2:]).float().to(device)
    a = torch.as_tensor(np.asarray(attrs, np.float32), device=device)
    if len(a) == 0:
        return np.zeros((0, *x.shape[-2:]), np.uint8)
    rng_devices = [device] if device.type == "cuda" else []
    with fixed_threads(threads), torch.random.fork_rng(devices=rng_devices), torch.no_grad():
        lat = latent_take(editor.encode(x), torch.zeros(len(a), dtype=torch.long, device=device))
        return to_uint8(editor.decode(lat, a).float().cpu())


def cube_example(cube, name: str, lot: int) -> np.ndarray | None:
    """Lot ``lot``'s ``cube[name]`` (an example tile or its edits, ``uint8``) as float grey levels
    in [0, 1], ``None`` where the cube has no such variable (written before it existed)."""
    if name not in cube.data_vars:
        return None
    return np.asarray(cube[name].isel(lot=int(lot)).values, np.float32) / 255.0


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


#: the ``bound`` dimension of bootstrap intervals (cube coordinate)
BOUNDS = ("low", "high")
#: draws of the bootstrap statistic are computed this many values at a time (memory bound)
_BOOT_BLOCK = 4_000_000


def boot_rng(seed: int, lot_index: int, stream: int) -> np.random.Generator:
    """The bootstrap generator of one lot: from (run seed, lot index, stream) only, so a lot's
    intervals do not depend on the lot order, the other lots or the Dask worker."""
    return np.random.default_rng([int(seed) % 2**63, int(lot_index), int(stream)])


def check_n_boot(n_boot, who: str) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise UserError(f"[explain.{who}] n_boot = {n_boot!r}; needs an integer >= 0 "
                        "(0: no bootstrap intervals)")


def bootstrap(terms: np.ndarray, reduce, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap draws over tiles: ``terms (n, K, ...)`` per tile, ``reduce`` maps an array
    ``(B, n, K, ...)`` of resampled tiles to ``(B, K)`` statistics; returns ``(n_boot, K)``
    (NaN without tiles). Tiles are drawn with replacement, ``(n_boot, n)`` indices at once."""
    n = len(terms)
    if n == 0 or n_boot == 0:
        return np.full((n_boot,) + terms.shape[1:2], np.nan)
    idx = rng.integers(0, n, size=(n_boot, n))
    per_draw = max(1, int(np.prod(terms.shape)))
    block = max(1, _BOOT_BLOCK // per_draw)
    return np.concatenate([reduce(terms[idx[b : b + block]])
                           for b in range(0, n_boot, block)])


def interval(draws: np.ndarray, estimate: np.ndarray, level: float = 0.95):
    """Percentile interval ``(..., 2)`` (low, high) of ``draws (B, ...)`` and the sign stability
    ``(...)``: the share of finite draws with the sign of ``estimate`` (NaN without draws)."""
    alpha = 100.0 * (1.0 - level) / 2.0
    estimate = np.asarray(estimate, np.float64)
    if draws.shape[0] == 0:
        return np.full(estimate.shape + (2,), np.nan), np.full(estimate.shape, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = np.moveaxis(np.nanpercentile(draws, [alpha, 100.0 - alpha], axis=0), 0, -1)
        finite = np.isfinite(draws)
        same = (np.sign(draws) == np.sign(estimate)[None]) & finite
        stability = same.sum(axis=0) / finite.sum(axis=0)
    return ci, np.where(np.isfinite(estimate), stability, np.nan)


def interval_summary(ci: np.ndarray) -> dict:
    """Compact metrics of intervals ``(L, ..., 2)`` over lots (axis 0): the median width and the
    share of lots whose interval excludes 0 (over lots with a finite interval)."""
    ci = np.asarray(ci, np.float64)
    ok = np.isfinite(ci).all(axis=-1)
    width = np.where(ok, ci[..., 1] - ci[..., 0], np.nan)
    excl = (ci[..., 0] > 0) | (ci[..., 1] < 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(width, axis=0)
        share = (excl & ok).sum(axis=0) / ok.sum(axis=0)
    return {"width_median": med, "excludes_zero_share": share}
