"""Benchmark (issue 20 item 3): time to answer of backward's eq. 2 under several solvers.

On the same rows (quickstart sizes: its lots' explained tiles x both directions, the shipped
AttGAN, a WideResNet: ``--predictor`` a trained checkpoint, else freshly initialised), with the
targets, ``lam`` and tolerance of ``[explain.backward]`` (its reachability probe and target rule:
``BackwardCounterfactual._probe`` / ``_targets``), each solver runs until a row's prediction is
within ``tol * |p|`` of its target (the explainer's stopping rule; that iterate is the answer), or
its step vanishes, or ``max_iter``:

* ``proximal`` - the explainer's own ``BackwardCounterfactual.optimize`` (ISTA with backtracking;
  since issue 20 with the sufficient-decrease test fused into the next gradient pass, one
  decode + predict + backward an iteration, in an active set of ``batch_size`` rows);
* ``fused`` - :func:`fused`, the prototype of that change (all rows at once), kept as its
  reference: the same iterates;
* ``adam`` - proximal Adam (``adam:LR``: step size LR, else ``--adam-lr``): Adam's step on the
  smooth term, then the exact proximal operator of ``||A' - A||_1 + box`` in Adam's diagonal
  metric (soft-threshold by ``lr / (sqrt(v) + eps)`` per coordinate, clip to [0, 1]); one
  decode + predict + backward per iteration, no line search;
* ``lbfgs`` - quasi-Newton: scipy's L-BFGS-B on the same objective written smooth with bounds
  (``A' = A + u - v``, ``u, v >= 0``, ``u <= 1 - A``, ``v <= A``, ``||A' - A||_1 = sum(u + v)`` at
  every minimiser: exactly eq. 2 with its box), over all rows at once (one objective, one line
  search); a row that reaches its target is frozen there (its answer; its rows leave the model
  calls).

Two starts: the lot's attributes ``A`` (the main solve) and ``backward``'s restart starts
``clip(A + U(-r, r), 0, 1)`` (the stability check). Printed per solver: reachable targets reached,
reached per CPU second, iterations to the answer, decode rows with and without backward, the mean
``||A' - A||_1`` of the answers (smaller: sparser advice for the same target).

    python benchmarks/backward_solvers.py --lots 4 --predictor runs/quickstart/models/predictor.pt
"""

from __future__ import annotations

import argparse
import time

import _quickstart as qs
import numpy as np
import torch
from _limits import Counter, instrument
from scipy.optimize import minimize

from mxplain.interfaces import latent_take
from mxplain_attribute._common import edit_predict


def _grad(editor, predictor, latent, idx, x, target, lam):
    """Prediction and gradient of ``lam (p - target)^2`` at rows ``idx``, ``x (len(idx), K)``."""
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        p = edit_predict(editor, predictor, latent_take(latent, idx), xg)
        (g,) = torch.autograd.grad((lam[idx] * (p - target[idx]) ** 2).sum(), xg)
    return p.detach(), torch.nan_to_num(g)


def fused(editor, predictor, latent, a, target, lam, thr, max_iter, lr=0.05, x0=None):
    """``optimize``'s proximal gradient with its sufficient-decrease test fused into the next
    gradient pass: the candidate point's decode + predict + backward gives the test its prediction
    and, when the step is accepted, the next iteration its gradient; a rejected step retries from
    the kept point and gradient. The same iterates as ``optimize`` (steps, tests and stops row by
    row), one model pass an iteration instead of one with backward plus one without."""
    m = len(target)
    x = (a if x0 is None else x0).clone()
    pred, g = _grad(editor, predictor, latent, torch.arange(m), x, target, lam)
    f = lam * (pred - target) ** 2
    eta = torch.full((m,), float(lr))
    iters = torch.zeros(m, dtype=torch.int32)
    active = (pred - target).abs() > thr
    for _ in range(max_iter):
        idx = torch.nonzero(active).flatten()
        if not len(idx):
            break
        xa, aa, e = x[idx], a[idx], eta[idx][:, None]
        d = xa - e * g[idx] - aa
        xn = (aa + torch.sign(d) * (d.abs() - e).clamp_min(0)).clamp(0.0, 1.0)
        pn, gn = _grad(editor, predictor, latent, idx, xn, target, lam)
        fn, fa, step = lam[idx] * (pn - target[idx]) ** 2, f[idx], xn - xa
        bound = fa + (g[idx] * step).sum(1) + (step**2).sum(1) / (2 * e[:, 0])
        ok = (fn <= bound + 1e-6 * fa.abs() + 1e-12) & torch.isfinite(pn)
        acc = idx[ok]
        x[acc], pred[acc], f[acc], g[acc] = xn[ok], pn[ok], fn[ok], gn[ok]
        eta[idx] = torch.where(ok, eta[idx] * 1.5, eta[idx] * 0.5)
        iters[idx] += 1
        reached = (pred[idx] - target[idx]).abs() <= thr[idx]
        stalled = ok & (step.abs().amax(1) < 1e-6)
        active[idx] = ~(reached | stalled | (eta[idx] < 1e-9))
    return x, pred, (pred - target).abs() <= thr, iters


def adam(editor, predictor, latent, a, target, lam, thr, max_iter, lr=0.05, x0=None,
         betas=(0.9, 0.999), eps=1e-8):
    """Proximal Adam; ``(A', prediction, converged, iterations)`` like ``optimize``."""
    m = len(target)
    x = (a if x0 is None else x0).clone()
    mom, vel = torch.zeros_like(x), torch.zeros_like(x)
    iters = torch.zeros(m, dtype=torch.int32)
    pred = torch.zeros(m)
    done, conv = torch.zeros(m, dtype=torch.bool), torch.zeros(m, dtype=torch.bool)
    for it in range(max_iter + 1):
        idx = torch.nonzero(~done).flatten()
        if not len(idx):
            break
        p, g = _grad(editor, predictor, latent, idx, x[idx], target, lam)
        pred[idx] = p
        reached = (p - target[idx]).abs() <= thr[idx]
        conv[idx[reached]] = True
        done[idx[reached]] = True
        if it == max_iter:
            break
        go, g = idx[~reached], g[~reached]
        iters[go] += 1
        mom[go] = betas[0] * mom[go] + (1 - betas[0]) * g
        vel[go] = betas[1] * vel[go] + (1 - betas[1]) * g * g
        t = iters[go].float()[:, None]
        d_metric = (vel[go] / (1 - betas[1] ** t)).sqrt() + eps
        xh = x[go] - lr * (mom[go] / (1 - betas[0] ** t)) / d_metric
        d = xh - a[go]
        xn = (a[go] + torch.sign(d) * (d.abs() - lr / d_metric).clamp_min(0)).clamp(0.0, 1.0)
        done[go[(xn - x[go]).abs().amax(1) < 1e-6]] = True
        x[go] = xn
    return x, pred, conv, iters


def lbfgs(editor, predictor, latent, a, target, lam, thr, max_iter, x0=None):
    """L-BFGS-B on ``A' = A + u - v`` over all rows; ``(A', prediction, converged, iterations)``
    with a row's answer the first evaluated point within the tolerance."""
    m, k = a.shape
    start = (a if x0 is None else x0).clone()
    z0 = torch.stack([(start - a).clamp_min(0), (a - start).clamp_min(0)], 1)  # (m, 2, K)
    hi = torch.stack([1 - a, a], 1)
    bounds = list(zip(np.zeros(z0.numel()), hi.flatten().double().numpy()))
    answered = torch.zeros(m, dtype=torch.bool)
    answer, pred = start.clone(), torch.zeros(m)
    frozen = torch.zeros(m, dtype=torch.float64)
    evals = torch.zeros(m, dtype=torch.int32)

    def fun(zf):
        z = torch.from_numpy(zf).float().view(m, 2, k)
        x = (a + z[:, 0] - z[:, 1]).clamp(0.0, 1.0)
        gx = torch.zeros(m, k)
        idx = torch.nonzero(~answered).flatten()
        if len(idx):
            evals[idx] += 1
            p, g = _grad(editor, predictor, latent, idx, x[idx], target, lam)
            pred[idx] = p
            frozen[idx] = (lam[idx] * (p - target[idx]) ** 2).double()
            hit = (p - target[idx]).abs() <= thr[idx]
            answered[idx[hit]] = True
            answer[idx[hit]] = x[idx[hit]]
            gx[idx[~hit]] = g[~hit]
        f = float(frozen.sum()) + float(zf.sum())
        gz = torch.stack([gx + 1.0, -gx + 1.0], 1)
        return f, gz.flatten().double().numpy()

    def stop(_):
        if bool(answered.all()):
            raise StopIteration

    res = minimize(fun, z0.flatten().double().numpy(), jac=True, method="L-BFGS-B",
                   bounds=bounds, callback=stop,
                   options={"maxiter": int(max_iter), "maxfun": 2 * int(max_iter)})
    z = torch.from_numpy(res.x).float().view(m, 2, k)
    last = (a + z[:, 0] - z[:, 1]).clamp(0.0, 1.0)
    answer[~answered] = last[~answered]
    return answer, pred, answered.clone(), evals - 1


def rows_of(bw, editor, predictor, lots, restart: bool):
    """Latent rows, attributes, targets, reachability and starts of ``lots`` (tile-major, then
    direction), as ``backward`` builds them; with ``restart``, one perturbed start per row."""
    lat, aa, tt, rr, xs = [], [], [], [], []
    for lot in lots:
        a = torch.as_tensor(lot.attributes, dtype=torch.float32)
        with torch.no_grad():
            latent = editor.encode(lot.tiles)
        m = len(lot.tiles)
        p0, low, high = bw._probe(editor, predictor, latent, a, m)
        target, _, reach = bw._targets(p0, low, high)
        rows = torch.arange(m).repeat_interleave(2)
        lat.append(latent_take(latent, rows))
        aa.append(a.expand(2 * m, -1))
        tt.append(target.reshape(-1))
        rr.append(reach.reshape(-1))
        rng = np.random.default_rng([lot.index, 7])
        u = torch.as_tensor(rng.uniform(-1, 1, (2 * m, len(a))), dtype=torch.float32)
        xs.append((a + bw.restart_radius * u).clamp(0, 1) if restart else a.expand(2 * m, -1))
    latent = tuple(torch.cat(parts) for parts in zip(*lat))
    return latent, torch.cat(aa).clone(), torch.cat(tt), torch.cat(rr), torch.cat(xs).clone()


def solve(kind, bw, editor, predictor, latent, a, target, x0, lr):
    scale = target.abs().clamp_min(1e-12)
    lam, thr = 1.0 / (bw.tol * scale) ** 2, bw.tol * scale
    if kind == "proximal":
        return bw.optimize(editor, predictor, latent, a, target, "gradient", 0, x0=x0)
    if kind == "fused":
        return fused(editor, predictor, latent, a, target, lam, thr, int(bw.max_iter), bw.lr, x0)
    if kind.startswith("adam"):
        lr = float(kind.split(":")[1]) if ":" in kind else lr
        return adam(editor, predictor, latent, a, target, lam, thr, int(bw.max_iter), lr, x0)
    return lbfgs(editor, predictor, latent, a, target, lam, thr, int(bw.max_iter), x0)


def measure(kind, bw, models, data, counter: Counter, lr: float) -> dict:
    editor, predictor = models
    latent, a, target, reach, x0 = data
    counter.reset()
    counter.active = True
    t0 = time.process_time()
    x, _, conv, it = solve(kind, bw, editor, predictor, latent, a, target, x0, lr)
    sec = time.process_time() - t0
    counter.active = False
    got = conv & reach
    grad_rows = sum(r for (_, op, g), r in counter.rows.items() if op == "decode" and g)
    plain_rows = sum(r for (_, op, g), r in counter.rows.items() if op == "decode" and not g)
    l1 = (x - a).abs().sum(1)
    return {"solver": kind, "answers": x, "cpu_s": sec, "reachable": int(reach.sum()),
            "reached": int(got.sum()),
            "reached_per_s": float(got.sum()) / sec, "iterations_reached":
            float(it[got].float().mean()) if got.any() else float("nan"),
            "grad_rows": grad_rows, "forward_rows": plain_rows,
            "l1_reached": float(l1[got].mean()) if got.any() else float("nan")}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lots", type=int, default=4)
    ap.add_argument("--predictor", default=None)
    ap.add_argument("--solvers", default="proximal,fused,adam,adam:0.1,lbfgs",
                    help="proximal (backward's optimize), fused, adam[:lr], lbfgs")
    ap.add_argument("--adam-lr", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    cfg = qs.config()
    device = torch.device("cpu")
    editor, predictor = qs.models(cfg, device, args.predictor)
    bw = qs.explainers(cfg, ["backward"])["backward"]
    lots = qs.lots(cfg, range(args.lots))
    counter = Counter()
    instrument(editor, predictor, counter, clock=time.process_time)
    out = []
    for restart in (False, True):
        data = rows_of(bw, editor, predictor, lots, restart)
        start = "perturbed starts (restarts)" if restart else "from A (main solve)"
        print(f"{start}: {len(data[2])} rows, {int(data[3].sum())} reachable", flush=True)
        for rep in range(args.repeats):
            for kind in args.solvers.split(","):
                r = measure(kind, bw, (editor, predictor), data, counter, args.adam_lr)
                r.update(start=start, repeat=rep)
                ref = next((o["answers"] for o in out if o["solver"] == "proximal"
                            and o["start"] == start), None)
                r["max_diff_proximal"] = (float((r["answers"] - ref).abs().max())
                                          if ref is not None else float("nan"))
                out.append(r)
                print(f"  {kind:9s} reached {r['reached']}/{r['reachable']} in {r['cpu_s']:.2f} "
                      f"CPU s = {r['reached_per_s']:.2f}/s; {r['iterations_reached']:.1f} "
                      f"iterations to the answer; decode rows {r['grad_rows']} +backward, "
                      f"{r['forward_rows']} forward only; mean |A'-A|_1 {r['l1_reached']:.3f}; "
                      f"max |A' - proximal's| {r['max_diff_proximal']:.2g}",
                      flush=True)
    return out


if __name__ == "__main__":
    main()
