"""Backward (counterfactual) explanations: seed 000, §4.3, eq. 2, Figures 6 and 7.

For each tile ``I`` with the lot's attributes ``A`` and a target property ``p``::

    min over A' in [0, 1]^K   lam * (p - R(G(I; A')))^2 + ||A - A'||_1          (eq. 2)

solved by proximal gradient (ISTA): a gradient step on the smooth term, the proximal step of the
L1 term (soft-thresholding of ``A' - A`` toward 0 by the step size) and projection onto [0, 1]
(for this separable problem, clipping the soft-thresholded point is the exact proximal operator of
``L1 + box``). The step size of every tile is chosen by backtracking (Beck & Teboulle's
sufficient-decrease test; halved on failure, grown 1.5x on success, starting at ``lr``), so the
objective never increases. An attribute without effect on the prediction has zero gradient and is
never moved off ``A`` by the soft-threshold: the explanation is sparse.

Gradient-free path (``optimizer = "spsa"``, or ``"auto"`` with a predictor or editor that is not
differentiable): the gradient of ``R(G(I; A'))`` is estimated by SPSA with deterministic
Hadamard perturbations (at least ``spsa_samples`` simultaneous +-1 perturbations of size ``spsa_c``,
central differences, batched; see ``_spsa_grad``), and the same proximal step is taken, accepted
only when the full objective decreases.

Targets: ``target_mode = "relative"``: ``p = p0 + t * |p0|`` for ``t`` in ``targets`` (one per
direction, ``increase`` then ``decrease``), where ``p0 = R(G(I; A))`` is the prediction on the
editor's *reconstruction* of the tile (so the counterfactual change is measured against what the
editor+predictor pair predicts for the unedited attributes, not the raw tile); ``"absolute"``: ``p =
t`` in property units. A tile has *converged* when ``|R(G(I; A')) - p| <= tol * |p|``; it stops
then, or when its step vanishes (a stationary point), or after ``max_iter`` iterations.

Default ``lam`` (``None``): ``lam = 1 / (tol * |p|)^2`` per tile, i.e. the squared error is
measured in units of the tolerance. Missing the target by exactly the tolerance costs as much as
moving one attribute across its whole range, and at the optimum the remaining error is
``(tol |p|)^2 / (2 |dR/dA_k|)``, inside the tolerance whenever moving attribute ``k`` over its range
changes the prediction by more than ``tol/2`` of ``|p|``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from mxplain.errors import UserError
from mxplain.interfaces import ExplainContext, Explainer, Lot, Variable, latent_take
from mxplain.store import to_uint8

from ._common import (
    DIRECTIONS,
    edit_predict,
    figures_dir,
    fill_attributes,
    lot_attribute_vector,
    lot_label,
    model_device,
    negligible_mask,
    pick_lots,
    require_models,
    save_figure,
)

OPTIMIZERS = ("auto", "gradient", "spsa")


class BackwardCounterfactual(Explainer):
    """Counterfactual attributes ``A'`` per tile and direction (eq. 2 of seed 000)."""

    name: ClassVar[str] = "backward"
    test_params: ClassVar[dict] = {"max_iter": 10}
    requires_editor: ClassVar[bool] = True

    def __init__(self, targets: tuple = (0.10, -0.10), target_mode: str = "relative",
                 lam: float | None = None, lr: float = 0.05, max_iter: int = 200,
                 tol: float = 0.01, batch_size: int = 128, optimizer: str = "auto",
                 spsa_c: float = 0.05, spsa_samples: int = 4):
        self.targets = targets
        self.target_mode = target_mode
        self.lam = lam
        self.lr = lr
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.spsa_c = spsa_c
        self.spsa_samples = spsa_samples
        self.method_: str | None = None
        self._examples: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- configuration ------------------------------------------------------------------------
    def _check(self) -> None:
        where = "[explain.backward]"
        t = self.targets
        if not isinstance(t, (list, tuple)) or len(t) != len(DIRECTIONS) or not all(
                isinstance(v, (int, float)) for v in t):
            raise UserError(f"{where} targets = {t!r}; needs two numbers (increase, decrease)")
        if self.target_mode not in ("relative", "absolute"):
            raise UserError(f"{where} target_mode = {self.target_mode!r}; use relative or absolute")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"{where} optimizer = {self.optimizer!r}; use one of "
                            f"{', '.join(OPTIMIZERS)}")
        for key in ("lr", "tol", "spsa_c"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or v <= 0:
                raise UserError(f"{where} {key} = {v!r}; needs a positive number")
        if self.spsa_c >= 0.5:
            raise UserError(f"{where} spsa_c = {self.spsa_c!r}; needs a number below 0.5")
        if self.lam is not None and (not isinstance(self.lam, (int, float)) or self.lam <= 0):
            raise UserError(f"{where} lam = {self.lam!r}; needs a positive number or none")
        for key in ("max_iter", "batch_size", "spsa_samples"):
            v = getattr(self, key)
            if not isinstance(v, int) or v < 1:
                raise UserError(f"{where} {key} = {v!r}; needs an integer >= 1")

    def resolve_method(self, ctx: ExplainContext) -> str:
        """"gradient" or "spsa" for this context's predictor and editor."""
        self._check()
        predictor, editor = require_models(ctx, self.name)
        diff = bool(getattr(predictor, "differentiable", False)) and bool(
            getattr(editor, "differentiable", False))
        if self.optimizer == "auto":
            return "gradient" if diff else "spsa"
        if self.optimizer == "gradient" and not diff:
            raise UserError("[explain.backward] optimizer = 'gradient' but the predictor or the "
                            "editor is not differentiable; use 'spsa' or 'auto'")
        return self.optimizer

    def variables(self, ctx: ExplainContext) -> dict[str, Variable]:
        self._check()
        return {
            "backward_attributes": Variable(("lot", "tile", "direction", "attribute"), "float32"),
            "backward_prediction": Variable(("lot", "tile", "direction"), "float32"),
            "backward_target": Variable(("lot", "tile", "direction"), "float32"),
            "backward_converged": Variable(("lot", "tile", "direction"), "bool", False),
            "backward_iterations": Variable(("lot", "tile", "direction"), "int32", 0),
        }

    # -- optimisation -------------------------------------------------------------------------
    def _predict(self, editor, predictor, latent, rows: torch.Tensor, attrs: torch.Tensor):
        """No-grad predictions for latent rows ``rows`` at ``attrs``, in batches."""
        out = []
        bs = int(self.batch_size)
        with torch.no_grad():
            for i in range(0, len(rows), bs):
                lat = latent_take(latent, rows[i : i + bs])
                out.append(edit_predict(editor, predictor, lat, attrs[i : i + bs]))
        return torch.cat(out) if out else attrs.new_zeros(0)

    def _spsa_grad(self, editor, predictor, latent, rows, x, gen) -> torch.Tensor:
        """SPSA estimate of d R(G(I; x)) / dx, ``(m, K)``, by central differences along
        simultaneous +-1 perturbations of size ``spsa_c``. The perturbations are the rows of a
        Sylvester-Hadamard matrix (``s`` = the power of two >= max(K, spsa_samples) rows; K of its
        columns drawn at random, random signs): deterministic-perturbation SPSA (Bhatnagar et al.
        2003), whose estimate is exact for a locally linear model, so an attribute without effect
        gets no spurious gradient. The perturbation centre is kept ``spsa_c`` inside the box so
        every evaluated point is a valid attribute vector."""
        m, k = x.shape
        c = float(self.spsa_c)
        s = 1 << max(0, int(np.ceil(np.log2(max(k, int(self.spsa_samples))))))
        h = torch.ones(1, 1)
        while h.shape[0] < s:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        cols = torch.randperm(s, generator=gen)[:k]
        signs = torch.randint(0, 2, (k,), generator=gen) * 2 - 1
        delta = (h[:, cols] * signs).to(x.device)[:, None, :].expand(s, m, k)  # (s, m, K)
        centre = x.clamp(c, 1 - c)
        pts = torch.cat([centre[None] + c * delta, centre[None] - c * delta]).reshape(-1, k)
        p = self._predict(editor, predictor, latent, rows.repeat(2 * s), pts).reshape(2, s, m)
        diff = (p[0] - p[1]) / (2 * c)  # (s, m)
        return (diff[..., None] * delta).mean(0)

    def optimize(self, editor, predictor, latent, a: torch.Tensor, target: torch.Tensor,
                 method: str, gen: torch.Generator | None = None, progress: bool = False):
        """Solve eq. 2 for ``m`` rows: latent of m tiles, ``a (K,)`` or ``(m, K)``, ``target
        (m,)``. Returns ``(A' (m, K), prediction (m,), converged (m,), iterations (m,))``."""
        m = len(target)
        dev = target.device
        a = a.expand(m, -1).float() if a.ndim == 1 else a.float()
        scale = target.abs().clamp_min(1e-12)
        lam = (torch.full_like(target, float(self.lam)) if self.lam is not None
               else 1.0 / (self.tol * scale) ** 2)
        thr = self.tol * scale
        x = a.clone()
        allrows = torch.arange(m, device=dev)
        pred = self._predict(editor, predictor, latent, allrows, x)
        eta = torch.full((m,), float(self.lr), device=dev)
        iters = torch.zeros(m, dtype=torch.int32, device=dev)
        active = (pred - target).abs() > thr
        gen = gen or torch.Generator().manual_seed(0)
        bar = tqdm(total=int(self.max_iter), desc=f"backward ({method})", disable=not progress,
                   leave=False)
        for _ in range(int(self.max_iter)):
            idx = torch.nonzero(active).flatten()
            if len(idx) == 0:
                break
            xa, ta, la, aa, e = x[idx], target[idx], lam[idx], a[idx], eta[idx][:, None]
            lat = latent_take(latent, idx)
            if method == "gradient":
                xg = xa.clone().requires_grad_(True)
                with torch.enable_grad():
                    pa = edit_predict(editor, predictor, lat, xg)
                    f = la * (pa - ta) ** 2
                    (g,) = torch.autograd.grad(f.sum(), xg)
                f, pa = f.detach(), pa.detach()
            else:
                pa = pred[idx]
                f = la * (pa - ta) ** 2
                g = (2 * la * (pa - ta))[:, None] * self._spsa_grad(
                    editor, predictor, latent, idx, xa, gen)
            g = torch.nan_to_num(g)
            d = xa - e * g - aa  # gradient step, then soft-threshold A' - A, then the box
            d = torch.sign(d) * (d.abs() - e).clamp_min(0)
            xn = (aa + d).clamp(0.0, 1.0)
            pn = self._predict(editor, predictor, latent, idx, xn)
            fn = la * (pn - ta) ** 2
            step = xn - xa
            if method == "gradient":
                bound = f + (g * step).sum(1) + (step**2).sum(1) / (2 * e[:, 0])
                ok = fn <= bound + 1e-6 * f.abs() + 1e-12
            else:
                ok = fn + (xn - aa).abs().sum(1) <= f + (xa - aa).abs().sum(1)
            ok &= torch.isfinite(pn)
            acc = idx[ok]
            x[acc], pred[acc] = xn[ok], pn[ok]
            eta[idx] = torch.where(ok, eta[idx] * 1.5, eta[idx] * 0.5)
            iters[idx] += 1
            reached = (pred[idx] - ta).abs() <= thr[idx]
            stalled = ok & (step.abs().amax(1) < 1e-6) & (method == "gradient")
            tiny = eta[idx] < 1e-9
            active[idx] = ~(reached | stalled | tiny)
            bar.update(1)
        bar.close()
        converged = (pred - target).abs() <= thr
        return x, pred, converged, iters

    # -- one lot -------------------------------------------------------------------------------
    def explain_lot(self, lot: Lot, ctx: ExplainContext) -> dict[str, np.ndarray]:
        method = self.resolve_method(ctx)
        self.method_ = method
        predictor, editor = require_models(ctx, self.name)
        dev = model_device(editor, ctx.device)
        k = len(ctx.attributes) if ctx.attributes else len(np.atleast_1d(lot.attributes))
        a_np = lot_attribute_vector(lot, k, self.name)
        a = torch.as_tensor(a_np, dtype=torch.float32, device=dev)
        n, nd = len(lot.tiles), len(DIRECTIONS)
        out_x = np.zeros((n, nd, k), np.float32)
        out_p = np.zeros((n, nd), np.float32)
        out_t = np.zeros((n, nd), np.float32)
        out_c = np.zeros((n, nd), bool)
        out_i = np.zeros((n, nd), np.int32)
        gen = torch.Generator().manual_seed(int(ctx.seed) * 1_000_003 + int(lot.index))
        chunk = max(1, int(self.batch_size) // nd)
        t = torch.as_tensor([float(v) for v in self.targets], dtype=torch.float32, device=dev)
        for t0 in tqdm(range(0, n, chunk), desc=f"backward lot {lot.lot_id}",
                       disable=not ctx.progress, leave=False):
            tiles = lot.tiles[t0 : t0 + chunk].to(dev)
            m = len(tiles)
            with torch.no_grad():
                latent = editor.encode(tiles)
                p0 = self._predict(editor, predictor, latent, torch.arange(m, device=dev),
                                   a.expand(m, k))
            if self.target_mode == "relative":
                target = p0[:, None] + t[None, :] * p0.abs()[:, None]  # (m, D)
            else:
                target = t[None, :].expand(m, nd)
            rows = torch.arange(m, device=dev).repeat_interleave(nd)  # tile-major, then direction
            lat = latent_take(latent, rows)
            x, pred, conv, it = self.optimize(editor, predictor, lat, a, target.reshape(-1),
                                              method, gen)
            sl = slice(t0, t0 + m)
            out_x[sl] = x.reshape(m, nd, k).detach().cpu().numpy()
            out_p[sl] = pred.reshape(m, nd).cpu().numpy()
            out_t[sl] = target.cpu().numpy()
            out_c[sl] = conv.reshape(m, nd).cpu().numpy()
            out_i[sl] = it.reshape(m, nd).cpu().numpy()
        if n:
            self._examples[lot.index] = (to_uint8(lot.tiles[:1])[0], a_np)
        return {"backward_attributes": out_x, "backward_prediction": out_p,
                "backward_target": out_t, "backward_converged": out_c,
                "backward_iterations": out_i}

    # -- after all lots ------------------------------------------------------------------------
    def summarize(self, cube, ctx: ExplainContext) -> dict:
        attrs = [str(a) for a in (cube["attribute"].values if "attribute" in cube.coords
                                  else ctx.attributes)]
        method = self.method_
        if method is None:
            try:
                method = self.resolve_method(ctx)
            except UserError:
                method = "unknown"
        metrics: dict[str, Any] = {"method": method, "target_mode": self.target_mode}
        metrics.update(score_backward(cube, attrs, self.targets, self.target_mode))
        if metrics.get("tiles", 0):
            try:
                metrics["figures"] = self._figures(cube, ctx, attrs)
            except Exception as exc:  # a figure must not lose the run's numbers
                warnings.warn(f"backward figures failed: {type(exc).__name__}: {exc}",
                              stacklevel=2)
        return metrics

    def _regenerate(self, ctx, lot_index: int, new_attrs: np.ndarray):
        ex = self._examples.get(lot_index)
        if ex is None or ctx.editor is None or not np.isfinite(new_attrs).all():
            return None
        tile, _ = ex
        editor = ctx.editor
        dev = model_device(editor, ctx.device)
        x = torch.from_numpy(tile.astype(np.float32) / 255.0)[None, None].to(dev)
        with torch.no_grad():
            lat = editor.encode(x)
            lat = latent_take(lat, torch.zeros(len(new_attrs), dtype=torch.long, device=dev))
            imgs = editor.decode(lat, torch.as_tensor(new_attrs, dtype=torch.float32, device=dev))
        return tile.astype(np.float32) / 255.0, [im[0].float().cpu().numpy() for im in imgs]

    def _figures(self, cube, ctx, attrs) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = figures_dir(ctx)
        if out is None:
            return []
        lots = pick_lots(cube)
        if not lots:
            return []
        mask = np.asarray(cube["tile_mask"].values, bool)
        base = fill_attributes(np.asarray(cube["lot_attributes"].values))
        bx = cube["backward_attributes"]
        order = [(r, lots[r]) for r in ("low", "median", "high")]
        seen, rows = set(), []
        for r, li in order:
            if li not in seen:
                seen.add(li)
                rows.append((r, li))
        names = []
        pos = np.arange(len(attrs))
        colors = {"increase": "C2", "decrease": "C3"}

        # Figure 6: original and the two hypothetical tiles with the attribute-change bar chart
        fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3 * len(rows)), squeeze=False,
                                 gridspec_kw={"width_ratios": [1, 1, 1, 1.8]})
        for r, (label, li) in enumerate(rows):
            xa = np.asarray(bx.isel(lot=li, tile=0).values, np.float64)  # (D, K)
            change = xa - base[li][None]
            pred = np.asarray(cube["backward_prediction"].isel(lot=li, tile=0).values)
            regen = self._regenerate(ctx, li, xa)
            titles = ["original"] + [f"{d} ({pred[j]:.3g})" for j, d in enumerate(DIRECTIONS)]
            for j in range(3):
                ax = axes[r, j]
                ax.axis("off")
                if regen is not None:
                    ax.imshow(regen[0] if j == 0 else regen[1][j - 1], cmap="gray", vmin=0,
                              vmax=1)
                ax.set_title(titles[j] if j else f"lot {lot_label(cube, li)} ({label})",
                             fontsize=9)
            ax = axes[r, 3]
            for j, d in enumerate(DIRECTIONS):
                ax.bar(pos + (j - 0.5) * 0.38, change[j], 0.38, label=d, color=colors[d])
            ax.axhline(0, color="k", lw=0.6)
            ax.set_xticks(pos, attrs)
            ax.set_ylabel("A' - A")
            if r == 0:
                ax.legend(fontsize=8)
        fig.suptitle(f"backward explanation of one tile ({ctx.property_name})")
        names.append(save_figure(fig, out, "backward_fig6_tile_counterfactual.png"))

        # Figure 7: per-lot mean change for the low, median and high lots
        fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.4), squeeze=False,
                                 sharey=True)
        for c, (label, li) in enumerate(rows):
            xa = np.asarray(bx.isel(lot=li).values, np.float64)[mask[li]]  # (n, D, K)
            change = np.nanmean(xa - base[li][None, None], axis=0)
            ax = axes[0, c]
            for j, d in enumerate(DIRECTIONS):
                ax.bar(pos + (j - 0.5) * 0.38, change[j], 0.38, label=d, color=colors[d])
            ax.axhline(0, color="k", lw=0.6)
            ax.set_xticks(pos, attrs)
            ax.set_title(f"{label} {ctx.property_name}: lot {lot_label(cube, li)}", fontsize=10)
            if c == 0:
                ax.set_ylabel("mean A' - A over tiles")
                ax.legend(fontsize=8)
        names.append(save_figure(fig, out, "backward_fig7_lot_mean_change.png"))
        return names



def score_backward(cube, attrs, targets=(0.10, -0.10), target_mode: str = "relative") -> dict:
    """Backward metrics from a cube: per direction, the share of real tiles that reached their
    target within tol (``reached_share``), mean iterations, the mean change ``A' - A`` per attribute
    over all tiles (``mean_change``); with ``true_sensitivity`` (relative targets): whether each
    non-negligible attribute's mean change points the way the law says (``direction_agrees``: sign
    of the truth times the sign of the direction's target), the share of lots whose lot-mean
    change does (``direction_lot_share``), and the share of agreeing (direction, attribute) pairs
    (``direction_agreement_overall``)."""
    mask = np.asarray(cube["tile_mask"].values, bool)
    written = mask.any(axis=1)
    conv = np.asarray(cube["backward_converged"].values, bool)
    iters = np.asarray(cube["backward_iterations"].values, np.float64)
    xa = np.asarray(cube["backward_attributes"].values, np.float64)  # (L, T, D, K)
    base = fill_attributes(np.asarray(cube["lot_attributes"].values))  # (L, K)
    change = xa - base[:, None, None, :]
    real = mask & np.isfinite(xa).all(axis=(2, 3))
    out: dict[str, Any] = {"tiles": int(real.sum())}
    if not real.any():
        return out
    out["reached_share"] = {d: float(conv[..., j][real].mean()) for j, d in enumerate(DIRECTIONS)}
    out["mean_iterations"] = {d: float(iters[..., j][real].mean())
                              for j, d in enumerate(DIRECTIONS)}
    mean_change = change[real].mean(axis=0)  # (D, K)
    out["mean_change"] = {d: {a: float(mean_change[j, k]) for k, a in enumerate(attrs)}
                          for j, d in enumerate(DIRECTIONS)}
    if "true_sensitivity" not in cube or target_mode != "relative":
        return out
    truth = np.asarray(cube["true_sensitivity"].values, np.float64)
    lots = written & np.isfinite(truth).all(axis=1)
    if not lots.any():
        return out
    law = truth[lots].mean(axis=0)
    neg = negligible_mask(law[None])[0]
    agrees: dict[str, dict[str, bool]] = {}
    lot_share: dict[str, dict[str, float]] = {}
    flags = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lot_mean = np.nanmean(np.where(real[..., None, None], change, np.nan), axis=1)  # (L,D,K)
    for j, d in enumerate(DIRECTIONS):
        sgn = np.sign(float(targets[j]))
        agrees[d], lot_share[d] = {}, {}
        for k, a in enumerate(attrs):
            if neg[k]:
                continue
            want = np.sign(law[k]) * sgn
            ok = bool(np.sign(mean_change[j, k]) == want)
            agrees[d][a] = ok
            flags.append(ok)
            lm = lot_mean[lots, j, k]
            good = np.isfinite(lm)
            lot_share[d][a] = float((np.sign(lm[good]) == want).mean()) if good.any() else 0.0
    out["direction_agrees"] = agrees
    out["direction_lot_share"] = lot_share
    out["direction_agreement_overall"] = float(np.mean(flags)) if flags else float("nan")
    return out


__all__ = ["BackwardCounterfactual", "score_backward"]
