"""Benchmark: prototypes of issue 20's speed-ups, measured against what the explainers do today.

Nothing here changes an explainer; each prototype recomputes a piece of one with the plugin's own
functions, once as the explainer does it and once restructured, on the quickstart's lots (the
shipped AttGAN, a WideResNet: ``--predictor`` a trained checkpoint), and prints both CPU times and
the largest difference of the results:

* ``backward-batch``: the search rows of every lot (main solve and restart rows) in one
  ``BackwardCounterfactual.optimize`` call instead of two calls a lot (rows are independent: same
  steps, same stops, so the same answers up to float noise);
* ``compare-batch``: compare's attribute part (slopes from ``sweep_steps`` values of each attribute,
  the reference and the +-delta gains: 1 + K * (steps + 2) decode + predict calls of ``max_tiles``
  rows) as one decode + predict of all rows;
* ``upsample``: the AttGAN's nearest upsampling as ``nn.Upsample(nearest)`` (on a copy of the
  editor: the reference) against the expand + reshape ``mxplain_attgan.model.NearestUp2`` it now
  ships with (the same values, bit for bit): decode + predict at the forward sweep's batch and
  decode + predict + backward at backward's;
* ``latent-batch``: latent_design's latent and pixel paths of every lot's ``max_tiles`` tiles in
  one batch instead of one batch a lot (the paths' step sizes use batch statistics: the mean latent
  norm and the median rise, so the results change; the largest difference is printed);
* ``probe-reuse``: backward's probe points that the forward sweep (its end points) and the
  pipeline's reconstruction prediction (the start) already computed: largest difference of the
  predictions and the probe time they stand for;
* ``probe-corners``: backward's reachability probe without the 2^K box corners (1 + 2K points a
  tile instead of 1 + 2K + 2^K): how many tile-directions change reachability.

    python benchmarks/explain_gains.py --lots 2 --predictor runs/quickstart/models/predictor.pt
"""

from __future__ import annotations

import argparse
import time

import _quickstart as qs
import numpy as np
import torch

from mxplain.interfaces import latent_take
from mxplain_attribute.backward import _iteration_seed
from mxplain_attribute.backward import probe_points as all_points


def cpu(fn):
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def backward_rows(bw, editor, predictor, lots):
    """Per lot: (latent rows, A, targets, starts) of the main solve and of the restarts."""
    per_lot = []
    for lot in lots:
        a = torch.as_tensor(lot.attributes, dtype=torch.float32)
        with torch.no_grad():
            latent = editor.encode(lot.tiles)
        m, nd, k = len(lot.tiles), 2, len(a)
        p0, low, high = bw._probe(editor, predictor, latent, a, m)
        target, _, _ = bw._targets(p0, low, high)
        main = (latent_take(latent, torch.arange(m).repeat_interleave(nd)), a.expand(m * nd, k),
                target.reshape(-1), a.expand(m * nd, k))
        nt, r = min(m, int(bw.restart_tiles)), int(bw.restarts)
        rng = np.random.default_rng([lot.index, 1])
        u = rng.uniform(-1.0, 1.0, (nt, r, nd, k))
        x0 = torch.as_tensor(np.clip(a.numpy() + bw.restart_radius * u, 0, 1),
                             dtype=torch.float32).reshape(-1, k)
        rt = target[:nt][:, None, :].expand(nt, r, nd).reshape(-1)
        rows = torch.arange(nt).repeat_interleave(r * nd)
        per_lot.append((main, (latent_take(latent, rows), a.expand(len(rt), k), rt, x0)))
    return per_lot


def backward_batch(bw, editor, predictor, lots) -> dict:
    per_lot = backward_rows(bw, editor, predictor, lots)
    seed = _iteration_seed(0, 1 << 32)

    def today():
        return [bw.optimize(editor, predictor, lat, a, t, "gradient", seed, x0=x0)[0]
                for pair in per_lot for lat, a, t, x0 in pair]

    def batched():
        parts = [p for pair in per_lot for p in pair]
        lat = tuple(torch.cat(z) for z in zip(*[p[0] for p in parts]))
        a, t, x0 = (torch.cat([p[i] for p in parts]) for i in (1, 2, 3))
        x = bw.optimize(editor, predictor, lat, a, t, "gradient", seed, x0=x0)[0]
        return list(torch.split(x, [len(p[2]) for p in parts]))

    s0, x0 = cpu(today)
    s1, x1 = cpu(batched)
    diff = max(float((u - v).abs().max()) for u, v in zip(x0, x1))
    return {"today_s": s0, "batched_s": s1, "rows": sum(len(x) for x in x0), "max_diff": diff}


def compare_batch(cmp, editor, predictor, lots) -> dict:
    k, steps, m = len(editor.attributes), int(cmp.sweep_steps), int(cmp.max_tiles)
    values = np.linspace(0.0, 1.0, steps)

    def points(base):
        pts = []
        for j in range(k):
            for v in values:
                a = base.copy()
                a[j] = v
                pts.append(a)
        pts.append(base.copy())
        for j in range(k):
            for sign in (1.0, -1.0):
                a = base.copy()
                a[j] = np.clip(a[j] + sign * float(cmp.delta), 0.0, 1.0)
                pts.append(a)
        return np.asarray(pts, np.float32)  # (P, K)

    def predict(x):
        return predictor.predict(x, batch_size=int(cmp.batch_size)).astype(np.float64)

    def today():
        out = []
        for lot in lots:
            sub = lot.tiles[:m]
            with torch.no_grad():
                lat = editor.encode(sub)
                for a in points(np.asarray(lot.attributes, np.float64)):
                    at = torch.as_tensor(np.tile(a, (m, 1)), dtype=torch.float32)
                    out.append(predict(editor.decode(lat, at).float()).mean())
        return np.asarray(out)

    def batched():
        out = []
        for lot in lots:
            sub = lot.tiles[:m]
            pts = torch.as_tensor(points(np.asarray(lot.attributes, np.float64)))
            with torch.no_grad():
                lat = latent_take(editor.encode(sub), torch.arange(m).repeat(len(pts)))
                imgs = editor.decode(lat, pts.repeat_interleave(m, 0))
            out.append(predict(imgs.float()).reshape(len(pts), m).mean(1))
        return np.concatenate(out)

    s0, y0 = cpu(today)
    s1, y1 = cpu(batched)
    return {"today_s": s0, "batched_s": s1, "calls_today": len(y0), "max_diff":
            float(np.abs(y0 - y1).max())}


def latent_batch(design, editor, predictor, lots) -> dict:
    n = int(design.max_tiles)
    xs = [lot.tiles[:n].float() for lot in lots]
    attrs = [torch.as_tensor(np.repeat(np.asarray(lot.attributes, np.float32)[None], len(x), 0))
             for lot, x in zip(lots, xs)]

    def paths(x, a):
        with torch.enable_grad():
            lp, _, _ = design.latent_path(editor, predictor, x, a)
            pp, _ = design.pixel_path(predictor, x, lp[:, -1] - lp[:, 0])
        return torch.cat([lp, pp], 1)

    s0, y0 = cpu(lambda: torch.cat([paths(x, a) for x, a in zip(xs, attrs)]))
    s1, y1 = cpu(lambda: paths(torch.cat(xs), torch.cat(attrs)))
    return {"today_s": s0, "batched_s": s1, "rows": len(y0),
            "max_diff": float((y0 - y1).abs().max())}


def upsample(editor, predictor, lots, batches=(256, 128)) -> dict:
    import copy

    from mxplain_attgan.model import NearestUp2

    fast = editor  # the shipped layers are NearestUp2 (landed); the reference is nn.Upsample
    editor = copy.deepcopy(editor)
    swapped = 0
    for mod in editor.generator_.modules():
        for name, child in mod.named_children():
            if isinstance(child, NearestUp2):
                setattr(mod, name, torch.nn.Upsample(scale_factor=2, mode="nearest"))
                swapped += 1
    tiles = torch.cat([lot.tiles for lot in lots])
    k = len(editor.attributes)
    sec, preds = [0.0, 0.0], [[], []]
    for e, ed in enumerate((editor, fast)):
        for grad, bs in zip((False, True), batches):
            x = tiles[torch.arange(bs) % len(tiles)]
            a = torch.rand(bs, k, generator=torch.Generator().manual_seed(0)).requires_grad_(grad)
            with torch.set_grad_enabled(grad):
                lat = ed.encode(x)
                ed.decode(lat, a)  # warm-up
                t0 = time.process_time()
                p = predictor.forward(ed.decode(lat, a))
                if grad:
                    torch.autograd.grad(p.sum(), a)
                sec[e] += time.process_time() - t0
            preds[e].append(p.detach())
    diff = max(float((u - v).abs().max()) for u, v in zip(*preds))
    return {"today_s": sec[0], "batched_s": sec[1], "layers": swapped, "max_diff": diff}


def probe_reuse(bw, fw, editor, predictor, lots) -> dict:
    from mxplain.interfaces import ExplainContext

    ctx = ExplainContext(progress=False, predictor=predictor, editor=editor,
                         attributes=tuple(editor.attributes))
    diff, sec, total = 0.0, 0.0, 0.0
    for lot in lots:
        a = torch.as_tensor(lot.attributes, dtype=torch.float32)
        m, k = len(lot.tiles), len(a)
        sweep = fw.sweep(lot.tiles, lot.attributes, ctx)  # (m, K, steps)
        with torch.no_grad():
            latent = editor.encode(lot.tiles)
            rec = predictor.predict(editor.edit(lot.tiles, a.expand(m, k)), batch_size=64)
        pts = all_points(a)
        rows = torch.arange(m).repeat_interleave(len(pts))
        t0 = time.process_time()
        p = bw._predict(editor, predictor, latent, rows, pts.repeat(m, 1)).reshape(m, len(pts))
        total += time.process_time() - t0
        sec += (time.process_time() - t0) * (1 + 2 * k) / len(pts)
        p = p.numpy()
        diff = max(diff, float(np.abs(p[:, 1 : 1 + k] - sweep[:, :, 0]).max()),
                   float(np.abs(p[:, 1 + k : 1 + 2 * k] - sweep[:, :, -1]).max()),
                   float(np.abs(p[:, 0] - rec).max()))
    return {"today_s": total, "batched_s": total - sec, "max_diff": diff,
            "reused_points": f"{1 + 2 * k} of {len(all_points(a))}"}


def probe_corners(bw, editor, predictor, lots) -> dict:
    changed = total = 0
    sec = [0.0, 0.0]
    for lot in lots:
        a = torch.as_tensor(lot.attributes, dtype=torch.float32)
        with torch.no_grad():
            latent = editor.encode(lot.tiles)
        m, k = len(lot.tiles), len(a)
        reach = []
        for j, n_pts in enumerate((len(all_points(a)), 1 + 2 * k)):
            pts = all_points(a)[:n_pts]
            rows = torch.arange(m).repeat_interleave(n_pts)
            t0 = time.process_time()
            p = bw._predict(editor, predictor, latent, rows, pts.repeat(m, 1)).reshape(m, n_pts)
            sec[j] += time.process_time() - t0
            reach.append(bw._targets(p[:, 0], p.amin(1), p.amax(1))[2])
        changed += int((reach[0] != reach[1]).sum())
        total += reach[0].numel()
    return {"today_s": sec[0], "batched_s": sec[1], "changed": changed, "tile_directions": total}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lots", type=int, default=2)
    ap.add_argument("--predictor", default=None)
    ap.add_argument("--only", default="", help="comma-separated prototypes (default: all)")
    args = ap.parse_args(argv)
    cfg = qs.config()
    editor, predictor = qs.models(cfg, torch.device("cpu"), args.predictor)
    exps = qs.explainers(cfg, ["forward", "backward", "compare", "latent_design"])
    lots = qs.lots(cfg, range(args.lots))
    only = set(filter(None, args.only.split(",")))
    jobs = {"backward-batch": lambda: backward_batch(exps["backward"], editor, predictor, lots),
            "compare-batch": lambda: compare_batch(exps["compare"], editor, predictor, lots),
            "probe-reuse": lambda: probe_reuse(exps["backward"], exps["forward"], editor,
                                               predictor, lots),
            "probe-corners": lambda: probe_corners(exps["backward"], editor, predictor, lots),
            "upsample": lambda: upsample(editor, predictor, lots),
            "latent-batch": lambda: latent_batch(exps["latent_design"], editor, predictor, lots)}
    res = {name: job() for name, job in jobs.items() if not only or name in only}
    for name, r in res.items():
        extra = {k: v for k, v in r.items() if k not in ("today_s", "batched_s")}
        print(f"{name:15s} today {r['today_s']:.2f} s, prototype {r['batched_s']:.2f} s CPU "
              f"({r['today_s'] / max(r['batched_s'], 1e-9):.2f}x); {extra}", flush=True)
    return res


if __name__ == "__main__":
    main()
