"""The search of the backward explainer: eq. 2 solved by proximal gradient with backtracking (or
SPSA where the models give no gradients), the reachability probe, the targets and the solve of one
chunk of a lot's tiles with its second start from the probe (see
:mod:`mxplain_attribute.backward` for the method)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from mxplain.gradients import grad
from mxplain.interfaces import ExplainContext, Lot, latent_take

from ._common import DIRECTIONS, edit_predict

#: ``probe = "corners"`` (and :func:`probe_points`, the probe before issue 20) takes the box
#: corners for at most this many attributes (2^K points per tile)
PROBE_CORNERS_MAX_K = 6
#: the factor by which ``lam`` grows at a stationary point that misses the target (``lam_steps``)
LAM_GROWTH = 4.0


def _iteration_seed(seed: int, it: int) -> int:
    """The SPSA generator's seed of iteration ``it``: one draw per (seed, iteration), shared by
    every row at that iteration whatever batch it is in."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(it)]).generate_state(1)[0])


def probe_points(a: torch.Tensor) -> torch.Tensor:
    """The probe of ``probe = "corners"`` (before issue 20, the only one): ``a``, every
    one-attribute endpoint and, for K <= 6, every corner of [0, 1]^K; ``(P, K)``."""
    pts = [endpoint_points(a)]
    k = a.shape[0]
    if k <= PROBE_CORNERS_MAX_K:
        bits = (torch.arange(2**k)[:, None] >> torch.arange(k)[None]) & 1
        pts.append(bits.to(a))
    return torch.cat(pts)


def endpoint_points(a: torch.Tensor) -> torch.Tensor:
    """``a (K,)`` itself, then every one-attribute endpoint: attribute k at 0 (rows 1..K), at 1
    (rows K+1..2K), the others at ``a``; ``(1 + 2K, K)``."""
    k = a.shape[0]
    pts = [a[None]]
    for v in (0.0, 1.0):
        e = a[None].repeat(k, 1)
        e[torch.arange(k), torch.arange(k)] = v
        pts.append(e)
    return torch.cat(pts)


def additive_extremes(a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """From the predictions ``p (m, 1 + 2K)`` at :func:`endpoint_points`, the points of the box
    where the model without interactions (the sum of the one-attribute changes) is highest and
    lowest: each attribute at whichever of ``a_k``, 0 and 1 moved the prediction most up
    (down); ``(m, 2, K)``, highest first."""
    m, k = len(p), a.shape[0]
    change = torch.stack([torch.zeros_like(p[:, 1 : k + 1]), p[:, 1 : k + 1] - p[:, :1],
                          p[:, k + 1 :] - p[:, :1]], -1)  # (m, K, 3): at a_k, at 0, at 1
    values = torch.stack([a.expand(m, k), torch.zeros(m, k).to(a), torch.ones(m, k).to(a)], -1)
    pick = torch.stack([change.argmax(-1), change.argmin(-1)], 1)  # (m, 2, K)
    return values[:, None].expand(m, 2, k, 3).gather(-1, pick[..., None])[..., 0]


def known_probe(lot: Lot, a_np: np.ndarray, ctx: ExplainContext) -> np.ndarray:
    """The probe's predictions the run already made on this lot (``reads_optional``), ``(n, 1 +
    2K)`` in the order of ``endpoint_points``, NaN where not made: ``p0`` is the pipeline's
    ``reconstruction_prediction`` (the same edit, where the lot's labels are complete and in [0,
    1]), the one-attribute endpoints the forward sweep's first and last steps (values 0 and 1)."""
    n, k = len(lot.tiles), len(a_np)
    known = np.full((n, 1 + 2 * k), np.nan, np.float32)
    rec = ctx.lot_results.get("reconstruction_prediction")
    labels = np.asarray(lot.attributes, np.float32).reshape(-1)
    if rec is not None and len(rec) >= n and np.array_equal(labels, a_np):
        known[:, 0] = np.asarray(rec, np.float32)[:n]
    sweep, values = ctx.lot_results.get("forward_prediction"), ctx.cube_coords.get("value")
    if sweep is None or values is None:
        return known
    sweep, values = np.asarray(sweep, np.float32), np.asarray(values, np.float64).reshape(-1)
    if sweep.ndim == 3 and sweep.shape[0] >= n and sweep.shape[1:] == (k, len(values)) and \
            len(values) >= 2 and values[0] == 0.0 and values[-1] == 1.0:
        known[:, 1 : k + 1], known[:, k + 1 :] = sweep[:n, :, 0], sweep[:n, :, -1]
    return known


def toward(target: torch.Tensor, p0: torch.Tensor, high: torch.Tensor, low: torch.Tensor):
    """Per target ``(m, D)``, its tile's ``high`` where the target lies at or above the start
    ``p0 (m,)``, else its ``low``: values ``(m,)`` -> ``(m, D)``, points ``(m, K)`` -> ``(m, D,
    K)``."""
    up = target >= p0[:, None]
    if high.ndim == 2:
        up = up[..., None]
    return torch.where(up, high[:, None], low[:, None])


def prox_point(x, g, a, eta):
    """The proximal gradient step from ``x`` along ``g`` with steps ``eta (m, 1)``: soft-threshold
    ``A' - A`` by the step, then the box [0, 1]."""
    d = x - eta * g - a
    return (a + torch.sign(d) * (d.abs() - eta).clamp_min(0)).clamp(0.0, 1.0)


class ProximalSolver:
    """The search, the probe and the solve of one chunk of a lot's tiles of
    :class:`~mxplain_attribute.backward.BackwardCounterfactual` (its parameters: ``batch_size``,
    ``lam``, ``lam_steps``, ``lr``, ``max_iter``, ``tol``, ``spsa_c``, ``spsa_samples``,
    ``targets``, ``target_mode``, ``probe``, ``probe_start``; the restarts' starts come from
    the explainer)."""

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

    def _step(self, editor, predictor, latent, rows, x, target, lam):
        """One decode + predict + backward of latent rows ``rows`` at ``x``: the prediction, the
        objective's smooth term ``lam (p - target)^2`` and its gradient, per row."""
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            p = edit_predict(editor, predictor, latent_take(latent, rows), xg)
            f = lam * (p - target) ** 2
            (g,) = grad(f.sum(), xg, "[explain.backward]", (predictor, editor))
        return p.detach(), f.detach(), torch.nan_to_num(g)

    def _spsa_step(self, editor, predictor, latent, rows, x, a, target, lam, eta, pred, gen):
        """One SPSA proximal step of rows whose latent rows are ``rows``: ``(accepted mask, new
        point, its prediction, step)``; accepted when the full objective decreases."""
        f = lam * (pred - target) ** 2
        g = torch.nan_to_num((2 * lam * (pred - target))[:, None] * self._spsa_grad(
            editor, predictor, latent, rows, x, gen))
        xn = prox_point(x, g, a, eta[:, None])
        pn = self._predict(editor, predictor, latent, rows, xn)
        fn = lam * (pn - target) ** 2
        ok = fn + (xn - a).abs().sum(1) <= f + (x - a).abs().sum(1)
        return ok & torch.isfinite(pn), xn, pn, xn - x

    def optimize(self, editor, predictor, latent, a: torch.Tensor, target: torch.Tensor,
                 method: str, seed: int = 0, progress: bool = False,
                 x0: torch.Tensor | None = None, tiles: torch.Tensor | None = None):
        """Solve eq. 2 for ``m`` rows: ``a (K,)`` or ``(m, K)``, ``target (m,)``, starting at
        ``x0 (m, K)`` (default ``a``); row ``i`` edits latent row ``tiles[i]`` (default ``i``).
        Returns ``(A' (m, K), prediction (m,), converged (m,), iterations (m,))``. Each row's
        step, test and stop depend on that row's numbers only; call it under a fixed thread count
        (see the module docstring)."""
        m = len(target)
        a = a.expand(m, -1).float() if a.ndim == 1 else a.float()
        scale = target.abs().clamp_min(1e-12)
        lam = (torch.full_like(target, float(self.lam)) if self.lam is not None
               else 1.0 / (self.tol * scale) ** 2)
        x = (a if x0 is None else x0.float()).clone()
        tiles = torch.arange(m, device=target.device) if tiles is None else tiles
        solve = self._fused if method == "gradient" else self._spsa
        pred, iters = solve(editor, predictor, latent, tiles, x, a, target, lam,
                            self.tol * scale, seed, progress)
        return x, pred, (pred - target).abs() <= self.tol * scale, iters

    def _fused(self, editor, predictor, latent, tiles, x, a, target, lam, thr, seed, progress):
        """Proximal gradient with backtracking, its sufficient-decrease test fused into the next
        gradient pass: the candidate point's decode + predict + backward gives the test its
        prediction and, when the step is accepted, the next iteration its gradient (a rejected
        step retries from the kept point and gradient with half the step). Rows run in one active
        set of at most ``batch_size`` rows, refilled from the rows not yet started as rows stop;
        a row enters with one pass at its start. Updates ``x`` in place; ``(prediction,
        iterations)``."""
        m, dev = len(target), target.device
        pred, f, g = torch.zeros(m, device=dev), torch.zeros(m, device=dev), torch.zeros_like(x)
        eta = torch.full((m,), float(self.lr), device=dev)
        iters = torch.zeros(m, dtype=torch.int32, device=dev)
        grown = torch.zeros(m, dtype=torch.int32, device=dev)
        active = torch.zeros(m, dtype=torch.bool, device=dev)
        cand = x.clone()
        waiting, bs = 0, int(self.batch_size)
        bar = tqdm(total=m, desc="backward (gradient)", disable=not progress, leave=False)
        while True:
            idx = torch.nonzero(active).flatten()
            new = torch.arange(waiting, min(m, waiting + max(0, bs - len(idx))), device=dev)
            waiting += len(new)
            if len(idx) + len(new) == 0:
                break
            rows = torch.cat([idx, new])
            pts = torch.cat([cand[idx], x[new]])
            p, fr, gr = self._step(editor, predictor, latent, tiles[rows], pts, target[rows],
                                   lam[rows])
            j = len(idx)
            pred[new], f[new], g[new] = p[j:], fr[j:], gr[j:]
            active[new] = (p[j:] - target[new]).abs() > thr[new]
            if j:
                self._accept(idx, cand[idx], p[:j], fr[:j], gr[:j], x, a, pred, f, g, eta,
                             iters, active, target, thr)
                self._grow_lam(idx, pred, eta, iters, active, target, thr, lam, grown, f, g)
            idx = torch.nonzero(active).flatten()
            cand[idx] = prox_point(x[idx], g[idx], a[idx], eta[idx][:, None])
            bar.n = int(waiting - active.sum())
            bar.refresh()
        bar.close()
        return pred, iters

    def _accept(self, idx, xn, pn, fn, gn, x, a, pred, f, g, eta, iters, active, target, thr):
        """The sufficient-decrease test of candidates ``xn`` of rows ``idx`` (Beck & Teboulle):
        accepted points replace the rows' point, prediction, value and gradient; the step grows
        1.5x on success and halves on failure; rows stop at the target, at a vanishing step, at a
        vanishing step size or after ``max_iter`` steps."""
        xa, fa, e = x[idx], f[idx], eta[idx]
        step = xn - xa
        bound = fa + (g[idx] * step).sum(1) + (step**2).sum(1) / (2 * e)
        ok = (fn <= bound + 1e-6 * fa.abs() + 1e-12) & torch.isfinite(pn)
        acc = idx[ok]
        x[acc], pred[acc], f[acc], g[acc] = xn[ok], pn[ok], fn[ok], gn[ok]
        eta[idx] = torch.where(ok, e * 1.5, e * 0.5)
        iters[idx] += 1
        reached = (pred[idx] - target[idx]).abs() <= thr[idx]
        stalled = ok & (step.abs().amax(1) < 1e-6)
        spent = (eta[idx] < 1e-9) | (iters[idx] >= int(self.max_iter))
        active[idx] = ~(reached | stalled | spent)

    def _grow_lam(self, idx, pred, eta, iters, active, target, thr, lam, grown, f=None,
                  g=None):
        """Continuation of ``lam`` (``lam_steps``): rows of ``idx`` that stopped short of their
        target before ``max_iter`` (a stationary point of eq. 2 with this ``lam``, or a vanishing
        step size) go on with ``lam`` x :data:`LAM_GROWTH` from where they stopped, at most
        ``lam_steps`` times. The kept objective ``f`` and gradient ``g`` (the gradient path's;
        SPSA keeps neither) are linear in ``lam``, so they are rescaled, not recomputed; the
        step size starts again at ``lr``. Rows that reached their target are
        untouched: the continuation only turns a missed target into a reached one."""
        if not int(self.lam_steps):
            return
        stopped = ~active[idx] & ((pred[idx] - target[idx]).abs() > thr[idx])
        retry = stopped & (iters[idx] < int(self.max_iter)) & (grown[idx] < int(self.lam_steps))
        r = idx[retry]
        lam[r] = lam[r] * LAM_GROWTH
        for kept in (f, g):
            if kept is not None:
                kept[r] = kept[r] * LAM_GROWTH
        eta[r], grown[r], active[r] = float(self.lr), grown[r] + 1, True

    def _spsa(self, editor, predictor, latent, tiles, x, a, target, lam, thr, seed, progress):
        """The SPSA search of all rows together (one generator draw an iteration, shared by every
        row); a row stops at its target, at an accepted step that does not move it (a stationary
        point of the estimate), at a vanishing step size or after ``max_iter`` iterations.
        Updates ``x`` in place, ``(prediction, iterations)``."""
        m, dev = len(target), target.device
        pred = self._predict(editor, predictor, latent, tiles, x)
        eta = torch.full((m,), float(self.lr), device=dev)
        iters = torch.zeros(m, dtype=torch.int32, device=dev)
        active = (pred - target).abs() > thr
        grown = torch.zeros(m, dtype=torch.int32, device=dev)
        bar = tqdm(total=int(self.max_iter), desc="backward (spsa)", disable=not progress,
                   leave=False)
        for it in range(int(self.max_iter)):
            idx = torch.nonzero(active).flatten()
            if len(idx) == 0:
                break
            gen = torch.Generator().manual_seed(_iteration_seed(seed, it))
            ok, xn, pn, step = self._spsa_step(editor, predictor, latent, tiles[idx], x[idx],
                                               a[idx], target[idx], lam[idx], eta[idx],
                                               pred[idx], gen)
            acc = idx[ok]
            x[acc], pred[acc] = xn[ok], pn[ok]
            eta[idx] = torch.where(ok, eta[idx] * 1.5, eta[idx] * 0.5)
            iters[idx] += 1
            reached = (pred[idx] - target[idx]).abs() <= thr[idx]
            stalled = ok & (step.abs().amax(1) < 1e-6)
            active[idx] = ~(reached | stalled | (eta[idx] < 1e-9))
            self._grow_lam(idx, pred, eta, iters, active, target, thr, lam, grown)
            bar.update(1)
        bar.close()
        return pred, iters

    # -- one chunk of a lot ---------------------------------------------------------------------
    def _solve_chunk(self, editor, predictor, tiles, a, method, seed, sl, out, starts,
                     known) -> np.ndarray:
        """Probe, targets, the main solve (from ``A``) of one chunk of tiles into ``out`` and the
        restarts (from ``starts``) of its tiles among the first ``restart_tiles``: returns their
        ``A'``, ``(tiles, restarts, D, K)``. With gradients, main and restart rows run in one
        search (one active set)."""
        m, nd, k = len(tiles), len(DIRECTIONS), len(a)
        with torch.no_grad():
            latent = editor.encode(tiles)
        p0, low, high, at_low, at_high = self._probe_points(editor, predictor, latent, a, m, known)
        target, ext, reach = self._targets(p0, low, high)
        x0r = starts[sl.start : sl.start + m]  # (mr, r, D, K)
        mr, r = x0r.shape[:2]
        dev = a.device
        rows = torch.cat([torch.arange(m, device=dev).repeat_interleave(nd),  # tile, direction
                          torch.arange(mr, device=dev).repeat_interleave(r * nd)])  # t, r, d
        goal = torch.cat([target.reshape(-1), target[:mr, None].expand(mr, r, nd).reshape(-1)])
        x0 = torch.cat([a.expand(m * nd, k), x0r.reshape(-1, k)])
        if method == "gradient":
            x, pred, conv, it = self.optimize(editor, predictor, latent, a, goal, method, seed,
                                              x0=x0, tiles=rows)
        else:  # SPSA draws per (seed, iteration): the restarts keep their own seed
            main, rest = slice(0, m * nd), slice(m * nd, len(goal))
            x, pred, conv, it = self.optimize(editor, predictor, latent, a, goal[main], method,
                                              seed, tiles=rows[main])
            xr, *_ = self.optimize(editor, predictor, latent, a, goal[rest], method,
                                   _iteration_seed(seed, 1 << 32), x0=x0[rest],
                                   tiles=rows[rest])
            x = torch.cat([x, xr])
        main = m * nd
        if self.probe_start:
            beyond = toward(target, p0, at_high, at_low)  # (m, D, K): the probe's point past it
            self._from_probe_points(editor, predictor, latent, a, method, seed, goal[:main],
                                    reach.reshape(-1), beyond.reshape(-1, k),
                                    (x, pred, conv, it))
        out["backward_attributes"][sl] = x[:main].reshape(m, nd, k).detach().cpu().numpy()
        out["backward_prediction"][sl] = pred[:main].reshape(m, nd).cpu().numpy()
        out["backward_target"][sl] = target.cpu().numpy()
        out["backward_converged"][sl] = conv[:main].reshape(m, nd).cpu().numpy()
        out["backward_iterations"][sl] = it[:main].reshape(m, nd).cpu().numpy()
        out["backward_reachable"][sl] = reach.cpu().numpy()
        out["backward_reachable_prediction"][sl] = ext.cpu().numpy()
        return x[main:].reshape(mr, r, nd, k).detach().cpu().numpy()

    def _from_probe_points(self, editor, predictor, latent, a, method, seed, goal, reach,
                           beyond, result) -> None:
        """``probe_start``: the main rows (tile-major, then direction; the first ``len(goal)``
        of ``result = (A', prediction, converged, iterations)``) whose search from ``A`` missed
        a reachable target are solved again from the probe's point past it (``beyond``, where
        the probe met the prediction that made the target reachable); where that search reaches
        the target its answer replaces the missed one (iterations: both searches'). In place."""
        x, pred, conv, it = result
        redo = torch.nonzero(reach & ~conv[: len(goal)]).flatten()
        if not len(redo):
            return
        tiles = torch.div(redo, len(DIRECTIONS), rounding_mode="floor")
        x2, p2, c2, i2 = self.optimize(editor, predictor, latent, a, goal[redo], method,
                                       _iteration_seed(seed, 2 << 32), x0=beyond[redo],
                                       tiles=tiles)
        won = redo[c2]
        x[won], pred[won], conv[won] = x2[c2], p2[c2], True
        it[redo] += i2

    # -- targets and reachability -------------------------------------------------------------
    def _probe(self, editor, predictor, latent, a: torch.Tensor, m: int,
               known: torch.Tensor | None = None):
        """Predictions of the reachability probe for ``m`` tiles: ``(p0, low, high)``, each
        ``(m,)``; ``p0`` at the lot's attributes ``a``, ``low``/``high`` the extremes over ``a``,
        the one-attribute endpoints and the two :func:`additive_extremes` points (``probe =
"corners"``: the box corners instead, for K <= 6). ``known (m, 1 +
        2K)``: predictions at :func:`endpoint_points` the run already made (NaN: not made), not
        made again."""
        return self._probe_points(editor, predictor, latent, a, m, known)[:3]

    def _probe_points(self, editor, predictor, latent, a: torch.Tensor, m: int,
                      known: torch.Tensor | None = None):
        """:meth:`_probe` and the probe's points where each tile's lowest and highest prediction
        were met: ``(p0, low, high, at_low (m, K), at_high (m, K))``."""
        pts = endpoint_points(a)  # (1 + 2K, K)
        n_p, k = len(pts), len(a)
        p = (torch.full((m, n_p), float("nan"), device=a.device) if known is None
             else known.to(a.device, torch.float32).clone())
        todo = torch.nonzero(torch.isnan(p))  # (tile, point), tile-major
        if len(todo):
            p[todo[:, 0], todo[:, 1]] = self._predict(editor, predictor, latent, todo[:, 0],
                                                      pts[todo[:, 1]])
        if self.probe == "corners" and k <= PROBE_CORNERS_MAX_K:
            ext = probe_points(a)[n_p:].repeat(m, 1)  # the 2^K corners of every tile
        else:
            ext = additive_extremes(a, p).reshape(-1, k)
        n_e = len(ext) // max(m, 1)
        rows = torch.arange(m, device=a.device).repeat_interleave(n_e)
        pe = self._predict(editor, predictor, latent, rows, ext).reshape(m, n_e)
        every = torch.cat([p, pe], 1)
        points = torch.cat([pts.expand(m, n_p, k), ext.reshape(m, n_e, k)], 1)
        lo, hi, tile = every.argmin(1), every.argmax(1), torch.arange(m, device=a.device)
        return p[:, 0], every[tile, lo], every[tile, hi], points[tile, lo], points[tile, hi]

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
        ext = toward(target, p0, high, low)
        thr = self.tol * target.abs()  # reached within the tolerance counts as reached
        reach = (target >= low[:, None] - thr) & (target <= high[:, None] + thr)
        if self.target_mode == "reachable":  # a target met at the start is no counterfactual
            reach &= (target - p0[:, None]).abs() > thr
        return target, ext, reach
