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

Targets (``targets``: one number per direction, ``increase`` then ``decrease``), by
``target_mode``:

* ``"relative"`` (default): ``p = p0 + t * |p0|``, where ``p0 = R(G(I; A))`` is the prediction on
  the editor's *reconstruction* of the tile (so the counterfactual change is measured against what
  the editor+predictor pair predicts for the unedited attributes, not the raw tile);
* ``"absolute"``: ``p = t`` in property units;
* ``"reachable"`` (data-driven): ``p = p0 + |t| * (p_ext - p0)``, a share ``|t|`` in (0, 1] of the
  tile's *reachable range* in that direction: ``p_ext`` is the highest (increase) or lowest
  (decrease) prediction of the reachability probe below. Targets then never ask for more than the
  editor's attribute box [0, 1] allows for that tile.

Reachability probe (every mode, cheap): each tile is decoded and predicted at its own attributes
``A``, at every one-attribute endpoint (attribute ``k`` at 0 and at 1, the others at ``A``: the
ends of the forward sweep) and, for ``K <= 6`` attributes, at the ``2^K`` corners of the box. The
lowest and highest of these predictions estimate the tile's reachable range; a target is
*reachable* (``backward_reachable``) when it lies inside that range widened by the tolerance
``tol * |p|`` (for ``"reachable"`` targets, also only when the target lies farther than the
tolerance from the start ``p0``: a share ``|t|`` of a range the attributes barely move would be
met by ``A' = A``; such a direction is unreachable, not trivially reached). ``summarize`` reports
the reached share over reachable tile-directions only and counts the unreachable ones (and any
of them reached anyway: the probe's range is an estimate) separately.

A tile has *converged* when ``|R(G(I; A')) - p| <= tol * |p|``; it stops then, or when its step
vanishes (a stationary point), or after ``max_iter`` iterations.

Default ``lam`` (``None``): ``lam = 1 / (tol * |p|)^2`` per tile, i.e. the squared error is
measured in units of the tolerance. Missing the target by exactly the tolerance costs as much as
moving one attribute across its whole range, and at the optimum the remaining error is
``(tol |p|)^2 / (2 |dR/dA_k|)``, inside the tolerance whenever moving attribute ``k`` over its range
changes the prediction by more than ``tol/2`` of ``|p|``.

Reproducibility (``threads``, default 1): the whole lot (probe, optimisation, restarts) runs with a
fixed number of torch intra-op CPU threads, restored afterwards. torch's CPU kernels split some
float reductions by thread count (the backward pass of the decoder's transposed convolutions and of
the predictor's convolutions, for some batch sizes: 3 or 5 still-active rows, not 8 or 16), so a
tile's gradient changed in its last bits between ``mxplain run`` (two threads on a two-core machine)
and a Dask worker (one thread); the backtracking test and the stopping rule turned those bits into
different iterates (differences of up to 0.7 in A' on the quickstart). A lot's batches are the same
in both places, so with the same thread count every operation sees the same operands and the same
kernel: ``mxplain run --workers N`` writes the one-process cube bit for bit. (Kernels may still
depend on the batch size, e.g. a single-row convolution, so a tile's bits may change with
``batch_size``; its explanation does not beyond float noise.) SPSA perturbations are drawn per
iteration from ``(seed, lot, iteration)``, not from one stream consumed chunk after chunk.

Stability (``restarts``, ``restart_tiles``, ``restart_radius``): eq. 2 is not convex and its
solution need not be unique (two attributes with the same effect can trade places). For the first
``restart_tiles`` tiles of a lot the problem is solved again from ``restarts`` seeded perturbed
starts ``clip(A + U(-r, r)^K, 0, 1)``; ``backward_restart_spread`` is, per lot, direction and
attribute, the mean over those tiles of the range (max - min) of A' over all starts, and
``backward_tile_spread`` the standard deviation of A' over the lot's tiles. A spread comparable to
the change ``A' - A`` itself says the counterfactual is ill-posed for that lot; ``summarize``
reports both and the share of (lot, direction) pairs whose largest restart spread exceeds
``UNSTABLE_SPREAD``.

Uncertainty (``n_boot``, default 1000; 0 turns it off): per lot and direction, the mean change
``A' - A`` over the lot's *converged* tiles only (``backward_mean_change``; a tile that missed its
target is no counterfactual and enters no average, here or in ``summarize``), its percentile 95 %
bootstrap interval over those tiles (``backward_change_ci``, resampled with replacement; numpy,
no model call; drawn from (run seed, lot index) alone) and the share of the lot's tiles that
reached their target (``backward_reached_share``). The cube holds finite values only: a
direction where no tile of the lot converged is stored as 0 with a reached share of 0, and skipped.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from mxplain.errors import UserError
from mxplain.gradients import grad
from mxplain.interfaces import ExplainContext, Explainer, Lot, Variable, latent_take
from mxplain.store import to_uint8
from mxplain.truth import negligible_mask

from ._common import (
    BOUNDS,
    DIRECTIONS,
    boot_rng,
    bootstrap,
    check_n_boot,
    edit_predict,
    figures_dir,
    fill_attributes,
    fixed_threads,
    interval,
    interval_summary,
    lot_attribute_vector,
    lot_label,
    model_device,
    pick_lots,
    require_models,
    save_figure,
)

OPTIMIZERS = ("auto", "gradient", "spsa")
TARGET_MODES = ("relative", "absolute", "reachable")
#: a (lot, direction) whose largest restart spread of A' exceeds this is counted as unstable
UNSTABLE_SPREAD = 0.1
#: box corners are probed for at most this many attributes (2^K points per tile)
PROBE_CORNERS_MAX_K = 6
#: the coverage of the bootstrap intervals of the mean change
CI_LEVEL = 0.95


def _iteration_seed(seed: int, it: int) -> int:
    """The SPSA generator's seed of iteration ``it``: one draw per (seed, iteration), shared by
    every row at that iteration whatever batch it is in."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(it)]).generate_state(1)[0])


def probe_points(a: torch.Tensor) -> torch.Tensor:
    """The reachability probe's attribute vectors for lot attributes ``a (K,)``: ``a`` itself,
    every one-attribute endpoint (``a`` with attribute k at 0 or 1) and, for K <= 6, every corner
    of [0, 1]^K; ``(P, K)``."""
    k = a.shape[0]
    pts = [a[None]]
    for v in (0.0, 1.0):
        e = a[None].repeat(k, 1)
        e[torch.arange(k), torch.arange(k)] = v
        pts.append(e)
    if k <= PROBE_CORNERS_MAX_K:
        bits = (torch.arange(2**k)[:, None] >> torch.arange(k)[None]) & 1
        pts.append(bits.to(a))
    return torch.cat(pts)


class BackwardCounterfactual(Explainer):
    """Counterfactual attributes ``A'`` per tile and direction (eq. 2 of seed 000).

    Keys: ``targets``/``target_mode`` (``relative``, ``absolute`` or the data-driven
    ``reachable``), ``lam``, ``lr``, ``max_iter``, ``tol``, ``batch_size``, ``optimizer``,
    ``spsa_c``, ``spsa_samples``, ``threads`` (torch CPU threads of the search, 1: bit-identical
    on Dask workers), ``restarts``, ``restart_tiles`` and ``restart_radius`` (the stability check);
    see the module docstring."""

    name: ClassVar[str] = "backward"
    test_params: ClassVar[dict] = {"max_iter": 10}
    requires_editor: ClassVar[bool] = True

    @classmethod
    def requirements(cls, params: dict) -> frozenset[str]:
        """A predictor and an editor of the data's named attributes; ``optimizer = "gradient"``
        also needs both differentiable (``"auto"`` falls back to SPSA where they are not)."""
        needs = {"predictor", "editor", "attributes"}
        if params.get("optimizer") == "gradient":
            needs |= {"gradients", "editor_gradients"}
        return frozenset(needs)

    @classmethod
    def uses(cls, params: dict) -> frozenset[str]:
        """``"auto"`` uses the gradients of both models where they declare them."""
        extra = {"gradients", "editor_gradients"} if params.get("optimizer") != "spsa" else set()
        return cls.requirements(params) | extra

    def __init__(self, targets: tuple = (0.10, -0.10), target_mode: str = "relative",
                 lam: float | None = None, lr: float = 0.05, max_iter: int = 200,
                 tol: float = 0.01, batch_size: int = 128, optimizer: str = "auto",
                 spsa_c: float = 0.05, spsa_samples: int = 4, threads: int = 1,
                 restarts: int = 2, restart_tiles: int = 2, restart_radius: float = 0.25,
                 n_boot: int = 1000):
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
        self.threads = threads
        self.restarts = restarts
        self.restart_tiles = restart_tiles
        self.restart_radius = restart_radius
        self.n_boot = n_boot
        self.method_: str | None = None
        self._examples: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._check()

    # -- configuration ------------------------------------------------------------------------
    def _check(self) -> None:
        where = "[explain.backward]"
        t = self.targets
        if not isinstance(t, (list, tuple)) or len(t) != len(DIRECTIONS) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                for v in t):
            raise UserError(f"{where} targets = {t!r}; needs two finite numbers "
                            "(increase, decrease)")
        if self.target_mode not in TARGET_MODES:
            raise UserError(f"{where} target_mode = {self.target_mode!r}; use one of "
                            f"{', '.join(TARGET_MODES)}")
        if self.target_mode == "reachable" and not (0 < t[0] <= 1 and -1 <= t[1] < 0):
            raise UserError(f"{where} targets = {list(t)!r} with target_mode = 'reachable'; "
                            "needs shares of the reachable range: increase in (0, 1], decrease "
                            "in [-1, 0) (e.g. [0.5, -0.5])")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"{where} optimizer = {self.optimizer!r}; use one of "
                            f"{', '.join(OPTIMIZERS)}")
        for key in ("lr", "tol", "spsa_c", "restart_radius"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or \
                    not np.isfinite(v):
                raise UserError(f"{where} {key} = {v!r}; needs a positive number")
        if self.spsa_c >= 0.5:
            raise UserError(f"{where} spsa_c = {self.spsa_c!r}; needs a number below 0.5")
        if self.restart_radius > 1:
            raise UserError(f"{where} restart_radius = {self.restart_radius!r}; needs a number "
                            "in (0, 1]")
        lam = self.lam
        if lam is not None and (isinstance(lam, bool) or not isinstance(lam, (int, float))
                                or not lam > 0 or not np.isfinite(lam)):
            raise UserError(f"{where} lam = {lam!r}; needs a positive number or none")
        for key, low in (("max_iter", 1), ("batch_size", 1), ("spsa_samples", 1),
                         ("threads", 1), ("restarts", 0), ("restart_tiles", 0)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise UserError(f"{where} {key} = {v!r}; needs an integer >= {low}")
        check_n_boot(self.n_boot, self.name)

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

    @classmethod
    def check_params(cls, params: dict) -> None:
        cls(**params)  # the constructor checks (before anything trains)

    def _restarting(self) -> bool:
        return self.restarts > 0 and self.restart_tiles > 0

    def variables(self, ctx: ExplainContext) -> dict[str, Variable]:
        self._check()
        p = ctx.property_units
        dirs, attrs = ("lot", "tile", "direction"), ("lot", "direction", "attribute")
        out = {
            "backward_attributes": Variable(dirs + ("attribute",), "float32", units="1",
                                            description="counterfactual attributes A'"),
            "backward_prediction": Variable(dirs, "float32", units=p,
                                            description="predictor on G(I; A')"),
            "backward_target": Variable(dirs, "float32", units=p,
                                        description="the target property"),
            "backward_converged": Variable(dirs, "bool", False,
                                           description="target reached within tolerance"),
            "backward_iterations": Variable(dirs, "int32", 0, units="1"),
            "backward_reachable": Variable(dirs, "bool", False,
                                           description="target in the tile's reachable range"),
            "backward_reachable_prediction": Variable(dirs, "float32", units=p),
            "backward_tile_spread": Variable(attrs, "float32", units="1",
                                             description="std of A' over the lot's tiles"),
        }
        if self._restarting():
            out["backward_restart_spread"] = Variable(attrs, "float32", units="1")
        out["backward_reached_share"] = Variable(
            ("lot", "direction"), "float32", units="1",
            description="share of the lot's tiles whose counterfactual reached its target")
        out["backward_mean_change"] = Variable(
            attrs, "float32", units="1",
            description="mean A' - A over the lot's converged tiles (0 where none converged)")
        if self.n_boot:
            out["backward_change_ci"] = Variable(
                attrs + ("bound",), "float32", units="1",
                description="percentile 95 % bootstrap interval of backward_mean_change")
        return out

    def extra_dims(self) -> dict[str, Any]:
        return {"bound": list(BOUNDS)} if self.n_boot else {}

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

    def _step(self, editor, predictor, latent, idx, x, a, target, lam, eta, pred, method,
              gen):
        """One proximal step of the active rows ``idx``: ``(accepted mask, new point, its
        prediction, step)``."""
        xa, ta, la, aa, e = x[idx], target[idx], lam[idx], a[idx], eta[idx][:, None]
        if method == "gradient":
            xg = xa.clone().requires_grad_(True)
            with torch.enable_grad():
                pa = edit_predict(editor, predictor, latent_take(latent, idx), xg)
                f = la * (pa - ta) ** 2
                (g,) = grad(f.sum(), xg, "[explain.backward]", (predictor, editor))
            f = f.detach()
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
        return ok & torch.isfinite(pn), xn, pn, step

    def optimize(self, editor, predictor, latent, a: torch.Tensor, target: torch.Tensor,
                 method: str, seed: int = 0, progress: bool = False,
                 x0: torch.Tensor | None = None):
        """Solve eq. 2 for ``m`` rows: latent of m tiles, ``a (K,)`` or ``(m, K)``, ``target
        (m,)``, starting at ``x0 (m, K)`` (default ``a``). Returns ``(A' (m, K), prediction (m,),
        converged (m,), iterations (m,))``. Each row's step, test and stop depend on that row's
        numbers only; call it under a fixed thread count (see the module docstring)."""
        m = len(target)
        dev = target.device
        a = a.expand(m, -1).float() if a.ndim == 1 else a.float()
        scale = target.abs().clamp_min(1e-12)
        lam = (torch.full_like(target, float(self.lam)) if self.lam is not None
               else 1.0 / (self.tol * scale) ** 2)
        thr = self.tol * scale
        x = (a if x0 is None else x0.float()).clone()
        pred = self._predict(editor, predictor, latent, torch.arange(m, device=dev), x)
        eta = torch.full((m,), float(self.lr), device=dev)
        iters = torch.zeros(m, dtype=torch.int32, device=dev)
        active = (pred - target).abs() > thr
        bar = tqdm(total=int(self.max_iter), desc=f"backward ({method})", disable=not progress,
                   leave=False)
        for it in range(int(self.max_iter)):
            idx = torch.nonzero(active).flatten()
            if len(idx) == 0:
                break
            gen = (torch.Generator().manual_seed(_iteration_seed(seed, it))
                   if method == "spsa" else None)
            ok, xn, pn, step = self._step(editor, predictor, latent, idx, x, a, target, lam,
                                          eta, pred, method, gen)
            acc = idx[ok]
            x[acc], pred[acc] = xn[ok], pn[ok]
            eta[idx] = torch.where(ok, eta[idx] * 1.5, eta[idx] * 0.5)
            iters[idx] += 1
            reached = (pred[idx] - target[idx]).abs() <= thr[idx]
            stalled = ok & (step.abs().amax(1) < 1e-6) & (method == "gradient")
            tiny = eta[idx] < 1e-9
            active[idx] = ~(reached | stalled | tiny)
            bar.update(1)
        bar.close()
        converged = (pred - target).abs() <= thr
        return x, pred, converged, iters

    # -- targets and reachability -------------------------------------------------------------
    def _probe(self, editor, predictor, latent, a: torch.Tensor, m: int):
        """Predictions of the reachability probe for ``m`` tiles: ``(p0, low, high)``, each
        ``(m,)``; ``p0`` at the lot's attributes ``a``."""
        pts = probe_points(a)  # (P, K)
        n_p = len(pts)
        rows = torch.arange(m, device=a.device).repeat_interleave(n_p)
        p = self._predict(editor, predictor, latent, rows, pts.repeat(m, 1)).reshape(m, n_p)
        return p[:, 0], p.amin(1), p.amax(1)

    def _targets(self, p0, low, high):
        """Targets ``(m, D)``, the probe's extreme toward each target and its reachability."""
        t = torch.as_tensor([float(v) for v in self.targets], dtype=torch.float32,
                            device=p0.device)
        if self.target_mode == "relative":
            target = p0[:, None] + t[None, :] * p0.abs()[:, None]
        elif self.target_mode == "absolute":
            target = t[None, :].expand(len(p0), -1).clone()
        else:
            ext = torch.stack([high, low], 1)
            target = p0[:, None] + t.abs()[None, :] * (ext - p0[:, None])
        ext = torch.where(target >= p0[:, None], high[:, None], low[:, None])
        thr = self.tol * target.abs()  # reached within the tolerance counts as reached
        reach = (target >= low[:, None] - thr) & (target <= high[:, None] + thr)
        if self.target_mode == "reachable":  # a target met at the start is no counterfactual
            reach &= (target - p0[:, None]).abs() > thr
        return target, ext, reach

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
        out = {"backward_attributes": np.zeros((n, nd, k), np.float32),
               "backward_prediction": np.zeros((n, nd), np.float32),
               "backward_target": np.zeros((n, nd), np.float32),
               "backward_converged": np.zeros((n, nd), bool),
               "backward_iterations": np.zeros((n, nd), np.int32),
               "backward_reachable": np.zeros((n, nd), bool),
               "backward_reachable_prediction": np.zeros((n, nd), np.float32)}
        seed = int(ctx.seed) * 1_000_003 + int(lot.index)
        chunk = max(1, int(self.batch_size) // nd)
        with fixed_threads(self.threads):
            for t0 in tqdm(range(0, n, chunk), desc=f"backward lot {lot.lot_id}",
                           disable=not ctx.progress, leave=False):
                self._solve_chunk(editor, predictor, lot.tiles[t0 : t0 + chunk].to(dev), a,
                                  method, seed, slice(t0, t0 + chunk), out)
            x = out["backward_attributes"]
            out["backward_tile_spread"] = (x.std(axis=0) if n else np.zeros((nd, k))).astype(
                np.float32)
            if self._restarting():
                out["backward_restart_spread"] = self._restart_spread(
                    editor, predictor, lot, a, method, seed, out).astype(np.float32)
        lot_stats = change_bootstrap(out["backward_attributes"] - a_np[None, None],
                                     out["backward_converged"], int(self.n_boot),
                                     boot_rng(ctx.seed, lot.index, 1))
        # the cube holds finite values only: a direction where no tile converged is stored as 0
        # and marked by backward_reached_share = 0 (summarize and the figures skip it)
        out.update({key: np.nan_to_num(v) for key, v in lot_stats.items()})
        if n:
            self._examples[lot.index] = (to_uint8(lot.tiles[:1])[0], a_np)
        return out

    def _solve_chunk(self, editor, predictor, tiles, a, method, seed, sl, out) -> None:
        """Probe, targets and the main solve (from ``A``) of one chunk of tiles into ``out``."""
        m, nd, k = len(tiles), len(DIRECTIONS), len(a)
        with torch.no_grad():
            latent = editor.encode(tiles)
        p0, low, high = self._probe(editor, predictor, latent, a, m)
        target, ext, reach = self._targets(p0, low, high)
        rows = torch.arange(m, device=a.device).repeat_interleave(nd)  # tile-major, direction
        x, pred, conv, it = self.optimize(editor, predictor, latent_take(latent, rows), a,
                                          target.reshape(-1), method, seed)
        out["backward_attributes"][sl] = x.reshape(m, nd, k).detach().cpu().numpy()
        out["backward_prediction"][sl] = pred.reshape(m, nd).cpu().numpy()
        out["backward_target"][sl] = target.cpu().numpy()
        out["backward_converged"][sl] = conv.reshape(m, nd).cpu().numpy()
        out["backward_iterations"][sl] = it.reshape(m, nd).cpu().numpy()
        out["backward_reachable"][sl] = reach.cpu().numpy()
        out["backward_reachable_prediction"][sl] = ext.cpu().numpy()

    def _restart_spread(self, editor, predictor, lot, a, method, seed, out) -> np.ndarray:
        """``(D, K)``: over the first ``restart_tiles`` tiles, the mean range of A' over the main
        solve and ``restarts`` solves from seeded starts ``clip(A + U(-r, r), 0, 1)``."""
        n, nd, k = len(lot.tiles), len(DIRECTIONS), len(a)
        nt, r = min(n, int(self.restart_tiles)), int(self.restarts)
        if nt == 0:
            return np.zeros((nd, k))
        rng = np.random.default_rng([int(seed) % 2**63, 1])  # one draw per lot, fixed shape
        u = rng.uniform(-1.0, 1.0, (int(self.restart_tiles), r, nd, k))[:nt]
        x0 = torch.as_tensor(np.clip(a.cpu().numpy() + self.restart_radius * u, 0, 1),
                             dtype=torch.float32, device=a.device).reshape(-1, k)  # (t, r, d)
        target = torch.as_tensor(out["backward_target"][:nt], device=a.device)
        target = target[:, None, :].expand(nt, r, nd).reshape(-1)
        sols = [out["backward_attributes"][:nt][:, None]]  # (nt, 1, D, K)
        bs = max(1, int(self.batch_size) // (r * nd)) * r * nd
        restart_seed = _iteration_seed(seed, 1 << 32)  # not an iteration
        for i in range(0, len(target), bs):
            tiles = lot.tiles[i // (r * nd) : min(nt, (i + bs) // (r * nd))].to(a.device)
            with torch.no_grad():
                latent = editor.encode(tiles)
            rows = torch.arange(len(tiles), device=a.device).repeat_interleave(r * nd)
            x, *_ = self.optimize(editor, predictor, latent_take(latent, rows), a,
                                  target[i : i + bs], method, restart_seed, x0=x0[i : i + bs])
            sols.append(x.reshape(-1, r, nd, k).detach().cpu().numpy())
        restarts = np.concatenate(sols[1:])
        every = np.concatenate([sols[0], restarts], axis=1)  # (nt, 1 + r, D, K)
        return (every.max(axis=1) - every.min(axis=1)).mean(axis=0)

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
        metrics: dict[str, Any] = {"method": method, "target_mode": self.target_mode,
                                   "targets": [float(v) for v in self.targets],
                                   "threads": int(self.threads)}
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
            conv = np.asarray(cube["backward_converged"].isel(lot=li, tile=0).values, bool)
            reach = (np.asarray(cube["backward_reachable"].isel(lot=li, tile=0).values, bool)
                     if "backward_reachable" in cube.data_vars else np.ones_like(conv))
            regen = self._regenerate(ctx, li, xa)
            unit = f" {ctx.property_units}" if ctx.property_units else ""
            titles = ["original"] + [f"{d}: predicted {pred[j]:.3g}{unit}" +
                                     ("" if conv[j] and reach[j] else "\n(target not reached)"
                                      if reach[j] else "\n(unreachable)")
                                     for j, d in enumerate(DIRECTIONS)]
            conv = conv & reach  # an unreachable target is no counterfactual: no bar
            for j in range(3):
                ax = axes[r, j]
                ax.axis("off")
                if regen is not None:
                    ax.imshow(regen[0] if j == 0 else regen[1][j - 1], cmap="gray", vmin=0,
                              vmax=1)
                ax.set_title(titles[j] if j else f"lot {lot_label(cube, li)} ({label})",
                             fontsize=9)
            ax = axes[r, 3]
            for j, d in enumerate(DIRECTIONS):  # a missed target is no advice: no bar
                ax.bar(pos + (j - 0.5) * 0.38, np.where(conv[j], change[j], 0.0), 0.38,
                       label=d if conv[j] else f"{d}: not reached", color=colors[d])
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
            change, err, reached = _lot_change(cube, li, mask, base)  # converged tiles only
            ax = axes[0, c]
            for j, d in enumerate(DIRECTIONS):
                ax.bar(pos + (j - 0.5) * 0.38, np.nan_to_num(change[j]), 0.38, color=colors[d],
                       yerr=err[j], capsize=3, ecolor="k", error_kw={"lw": 0.8},
                       label=f"{d} ({reached[j]:.0%} reached)" if np.isfinite(reached[j])
                       else d)
            ax.axhline(0, color="k", lw=0.6)
            ax.set_xticks(pos, attrs)
            ax.set_title(f"{label} {ctx.property_name}: lot {lot_label(cube, li)}", fontsize=10)
            if c == 0:
                ax.set_ylabel("mean A' - A over reached tiles\n(95 % bootstrap interval)")
                ax.legend(fontsize=8)
        fig.suptitle(_reached_caption(cube, mask), fontsize=9)
        names.append(save_figure(fig, out, "backward_fig7_lot_mean_change.png"))
        return names



def change_bootstrap(change: np.ndarray, conv: np.ndarray, n_boot: int,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per direction, over the converged tiles only: the mean change ``(D, K)``
    (``backward_mean_change``, NaN without a converged tile), its bootstrap interval ``(D, K, 2)``
    (``backward_change_ci``, with ``n_boot`` > 0) and the reached share ``(D,)``
    (``backward_reached_share``, NaN without tiles). ``change (n, D, K)``, ``conv (n, D)``."""
    n, nd, k = change.shape
    mean = np.full((nd, k), np.nan)
    ci = np.full((nd, k, 2), np.nan)
    for j in range(nd):
        terms = np.asarray(change[conv[:, j], j], np.float64)  # (m, K) converged tiles
        if len(terms):
            mean[j] = terms.mean(axis=0)
        draws = bootstrap(terms if len(terms) else np.zeros((0, k)),
                          lambda t: t.mean(axis=1), n_boot, rng)
        ci[j] = interval(draws, mean[j], CI_LEVEL)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        share = conv.mean(axis=0) if n else np.full(nd, np.nan)
    out = {"backward_reached_share": share.astype(np.float32),
           "backward_mean_change": mean.astype(np.float32)}
    if n_boot:
        out["backward_change_ci"] = ci.astype(np.float32)
    return out


def _lot_change(cube, li: int, mask, base):
    """Figure 7's bars of lot ``li``: the mean change over converged tiles ``(D, K)`` (NaN: none
    converged, no bar), error bars ``(D, 2, K)`` (below, above; 0 without an interval) and the
    reached share ``(D,)``. Cubes without the lot variables are recomputed from the tiles."""
    if "backward_mean_change" in cube:
        reached = np.asarray(cube["backward_reached_share"].values[li], np.float64)
        change = np.where((reached > 0)[:, None],
                          np.asarray(cube["backward_mean_change"].values[li], np.float64), np.nan)
    else:
        xa = np.asarray(cube["backward_attributes"].values[li], np.float64)[mask[li]]
        conv = np.asarray(cube["backward_converged"].values[li], bool)[mask[li]]
        ch = change_bootstrap(xa - base[li][None, None], conv, 0, boot_rng(0, 0, 0))
        change, reached = ch["backward_mean_change"], ch["backward_reached_share"]
    err = np.zeros(change.shape[:1] + (2,) + change.shape[1:])
    if "backward_change_ci" in cube:
        ci = np.asarray(cube["backward_change_ci"].values[li], np.float64)  # (D, K, 2)
        err[:, 0] = np.clip(change - ci[..., 0], 0, None)
        err[:, 1] = np.clip(ci[..., 1] - change, 0, None)
    return change, np.nan_to_num(err), reached


def _reached_caption(cube, mask) -> str:
    """"reached 30/32 reachable targets (increase), ...; 4 unreachable" for figure 7."""
    conv = np.asarray(cube["backward_converged"].values, bool)
    reach = (np.asarray(cube["backward_reachable"].values, bool) if "backward_reachable" in cube
             else np.ones(conv.shape, bool))
    parts, unreachable = [], 0
    for j, d in enumerate(DIRECTIONS):
        c, r = conv[..., j][mask], reach[..., j][mask]
        parts.append(f"{int((c & r).sum())}/{int(r.sum())} ({d})")
        unreachable += int((~r).sum())
    return (f"targets reached: {', '.join(parts)} of the reachable; {unreachable} "
            "unreachable tile-directions not counted")


def score_backward(cube, attrs, targets=(0.10, -0.10), target_mode: str = "relative") -> dict:
    """Backward metrics from a cube: per direction, the share of real tiles that reached their
    target within tol, over the tile-directions whose target the reachability probe found
    reachable (``reached_share``; ``reachable`` and ``unreachable`` count them, ``reached_share_all``
    is over every tile-direction, ``reached_unreachable`` counts unreachable ones reached anyway;
    a cube without ``backward_reachable`` counts every target reachable), mean iterations, the mean
    change ``A' - A`` per attribute over all tiles (``mean_change``), the stability of A'
    (``stability``: :func:`score_stability`); with ``true_sensitivity`` (relative or reachable
    targets: the target's sign is the direction's): whether each non-negligible attribute's mean
    change points the way the law says (``direction_agrees``: sign of the truth times the sign of
    the direction's target), the share of lots whose lot-mean change does
    (``direction_lot_share``), and the share of agreeing (direction, attribute) pairs
    (``direction_agreement_overall``)."""
    mask = np.asarray(cube["tile_mask"].values, bool)
    conv = np.asarray(cube["backward_converged"].values, bool)
    iters = np.asarray(cube["backward_iterations"].values, np.float64)
    xa = np.asarray(cube["backward_attributes"].values, np.float64)  # (L, T, D, K)
    base = fill_attributes(np.asarray(cube["lot_attributes"].values))  # (L, K)
    change = xa - base[:, None, None, :]
    real = mask & np.isfinite(xa).all(axis=(2, 3))
    out: dict[str, Any] = {"tiles": int(real.sum())}
    if not real.any():
        return out
    reach = (np.asarray(cube["backward_reachable"].values, bool) if "backward_reachable" in cube
             else np.ones(conv.shape, bool))
    out.update(reached_scores(conv, reach, real))
    out["mean_iterations"] = {d: float(iters[..., j][real].mean())
                              for j, d in enumerate(DIRECTIONS)}
    used = real[..., None] & conv  # (L, T, D): averages count converged tiles only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_change = np.stack([change[..., j, :][used[..., j]].mean(axis=0)
                                for j in range(len(DIRECTIONS))])  # (D, K)
    out["mean_change"] = {d: {a: float(mean_change[j, k]) for k, a in enumerate(attrs)}
                          for j, d in enumerate(DIRECTIONS)}
    out["mean_change_tiles"] = {d: int(used[..., j].sum()) for j, d in enumerate(DIRECTIONS)}
    out.update(change_uncertainty(cube, attrs, mask.any(axis=1)))
    stability = score_stability(cube, attrs, mask.any(axis=1))
    if stability:
        out["stability"] = stability
    if "true_sensitivity" not in cube or target_mode == "absolute":
        return out
    out.update(_direction_scores(cube, attrs, targets, change, used, mean_change))
    return out


def change_uncertainty(cube, attrs, written: np.ndarray) -> dict:
    """Compact bootstrap metrics over the written lots, per direction and attribute: the median
    width of ``backward_change_ci`` and the share of lots whose interval excludes 0
    (``change_ci``); per direction the median over lots of ``backward_reached_share`` and the
    number of lots where no tile reached its target (``lots_none_reached``)."""
    out: dict[str, Any] = {}
    if "backward_change_ci" in cube and written.any():
        ci = np.asarray(cube["backward_change_ci"].values, np.float64)[written]  # (L, D, K, 2)
        if "backward_reached_share" in cube:  # none reached: no interval (stored as 0)
            none = np.asarray(cube["backward_reached_share"].values, np.float64)[written] == 0
            ci = np.where(none[..., None, None], np.nan, ci)
        summary = interval_summary(ci)  # (D, K) each
        out["ci_level"] = CI_LEVEL
        out["change_ci"] = {d: {a: {"width_median": float(summary["width_median"][j, k]),
                                    "excludes_zero_share":
                                        float(summary["excludes_zero_share"][j, k])}
                                for k, a in enumerate(attrs)} for j, d in enumerate(DIRECTIONS)}
    if "backward_reached_share" in cube and written.any():
        share = np.asarray(cube["backward_reached_share"].values, np.float64)[written]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["lot_reached_share_median"] = {d: float(np.nanmedian(share[:, j]))
                                               for j, d in enumerate(DIRECTIONS)}
        out["lots_none_reached"] = {d: int((share[:, j] == 0).sum())
                                    for j, d in enumerate(DIRECTIONS)}
    return out


def reached_scores(conv: np.ndarray, reach: np.ndarray, real: np.ndarray) -> dict:
    """Reached shares against reachable targets only, the unreachable counted separately:
    ``conv``, ``reach`` ``(L, T, D)`` bool, ``real`` ``(L, T)``."""
    out: dict[str, dict] = {"reached_share": {}, "reachable": {}, "unreachable": {},
                            "reached_unreachable": {}, "reached_share_all": {}}
    for j, d in enumerate(DIRECTIONS):
        c, r = conv[..., j][real], reach[..., j][real]
        out["reached_share"][d] = float(c[r].mean()) if r.any() else float("nan")
        out["reachable"][d] = int(r.sum())
        out["unreachable"][d] = int((~r).sum())
        out["reached_unreachable"][d] = int((c & ~r).sum())
        out["reached_share_all"][d] = float(c.mean())
    return out


def score_stability(cube, attrs, written: np.ndarray) -> dict:
    """Stability of A' over the written lots: per direction and attribute the mean over lots of
    ``backward_restart_spread`` and of ``backward_tile_spread``; the largest restart spread, and
    the share of (lot, direction) pairs whose largest restart spread over the attributes exceeds
    :data:`UNSTABLE_SPREAD` (``unstable_share``). Empty without those variables."""
    out: dict[str, Any] = {}
    for name, key in (("backward_restart_spread", "restart_spread"),
                      ("backward_tile_spread", "tile_spread")):
        if name not in cube or not written.any():
            continue
        v = np.asarray(cube[name].values, np.float64)[written]  # (L', D, K)
        mean = v.mean(axis=0)
        out[key] = {d: {a: float(mean[j, k]) for k, a in enumerate(attrs)}
                    for j, d in enumerate(DIRECTIONS)}
        out[f"{key}_max"] = float(v.max())
        if key == "restart_spread":
            out["unstable_share"] = float((v.max(axis=2) > UNSTABLE_SPREAD).mean())
            out["unstable_threshold"] = UNSTABLE_SPREAD
    return out


def _direction_scores(cube, attrs, targets, change, used, mean_change) -> dict:
    """``used (L, T, D)``: the real, converged tile-directions the lot means average."""
    written = np.asarray(cube["tile_mask"].values, bool).any(axis=1)
    truth = np.asarray(cube["true_sensitivity"].values, np.float64)
    lots = written & np.isfinite(truth).all(axis=1)
    if not lots.any():
        return {}
    law = truth[lots].mean(axis=0)
    neg = negligible_mask(law[None])[0]
    agrees: dict[str, dict[str, bool]] = {}
    lot_share: dict[str, dict[str, float]] = {}
    flags = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lot_mean = np.nanmean(np.where(used[..., None], change, np.nan), axis=1)  # (L, D, K)
    for j, d in enumerate(DIRECTIONS):
        sgn = np.sign(float(targets[j]))
        agrees[d], lot_share[d] = {}, {}
        for k, a in enumerate(attrs):
            if neg[k]:
                continue
            want = np.sign(law[k]) * sgn
            if not np.isfinite(mean_change[j, k]):
                continue
            ok = bool(np.sign(mean_change[j, k]) == want)
            agrees[d][a] = ok
            flags.append(ok)
            lm = lot_mean[lots, j, k]
            good = np.isfinite(lm)
            lot_share[d][a] = float((np.sign(lm[good]) == want).mean()) if good.any() else 0.0
    return {"direction_agrees": agrees, "direction_lot_share": lot_share,
            "direction_agreement_overall": float(np.mean(flags)) if flags else float("nan")}


__all__ = ["BackwardCounterfactual", "change_bootstrap", "change_uncertainty", "probe_points",
           "reached_scores", "score_backward", "score_stability"]
