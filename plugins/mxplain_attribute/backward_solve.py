"""The search of the backward explainer: eq. 2 solved by proximal gradient with backtracking (or
SPSA where the models give no gradients), the reachability probe and the targets (see
:mod:`mxplain_attribute.backward` for the method)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from mxplain.gradients import grad
from mxplain.interfaces import latent_take

from ._common import edit_predict

#: box corners are probed for at most this many attributes (2^K points per tile)
PROBE_CORNERS_MAX_K = 6


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


class ProximalSolver:
    """The search and the probe of :class:`~mxplain_attribute.backward.BackwardCounterfactual`
    (its parameters: ``batch_size``, ``lam``, ``lr``, ``max_iter``, ``tol``, ``spsa_c``,
    ``spsa_samples``, ``targets``, ``target_mode``)."""

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
