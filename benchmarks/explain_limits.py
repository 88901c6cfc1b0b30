"""Benchmark: every explainer of the packaged quickstart against its model-only limit (issue 20).

At the quickstart's sizes (its config as packaged: 64 px tiles, ``[run] explain_tiles`` tiles a
lot, the shipped AttGAN, a WideResNet of its depth; ``--predictor`` loads a trained one, else it is
freshly initialised), each explainer explains ``--lots`` lots with its quickstart parameters while
counting proxies on the models (``_limits.instrument``) record every call; in the same repeat the
model-only per-row times are measured batched at the explainer's batch size (decode + predict,
decode + predict + backward, predict, predict + backward, encode; resident tensors, nothing else).
The limit is the counted work at those times (``_limits.limits``: the issue's definition and the
full one); achieved / limit is printed per explainer. ``--repeats`` runs all of it again (ratios
are taken within a repeat: the machine may be shared) and the spread is printed.

    python benchmarks/explain_limits.py --device cpu --lots 2 --repeats 3 \
        --predictor runs/quickstart/models/predictor.pt
    python benchmarks/explain_limits.py --profile benchmarks/profile   # cProfile top entries
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from pathlib import Path

import _quickstart as qs
import numpy as np
import torch
from _bench import device_label, sync
from _limits import Counter, instrument, limits, needed, ratios

from mxplain.components import base_values, order_explainers, reader_context
from mxplain_attribute._common import autocast

#: latent_design has no batch size (it takes its max_tiles tiles at once): its rows are priced at
#: this batch, what batching them across lots would give
LATENT_BATCH = 64


def clock_for(device: torch.device):
    """CPU time of this process on a CPU (other jobs on a shared machine barely change it; torch
    runs on one thread here), wall time on a GPU."""
    return time.process_time if device.type == "cpu" else time.perf_counter


def timed(fn, device, repeat: int = 3) -> float:
    """The fastest of ``repeat`` calls of ``fn`` after one warm-up (``clock_for`` seconds)."""
    clock = clock_for(device)
    fn()
    best = float("inf")
    for _ in range(repeat):
        sync(device)
        t0 = clock()
        fn()
        sync(device)
        best = min(best, clock() - t0)
    return best


def batch_of(name: str, exp) -> int:
    if name == "latent_design":
        return LATENT_BATCH
    return int(getattr(exp, "batch_size", 64))


def model_rates(editor, predictor, tiles: torch.Tensor, batch: int, device,
                keys=("enc", "dp", "dpb", "p", "pb")) -> dict[str, float]:
    """Seconds per row of encode, decode + predict (``dp``), decode + predict + backward to the
    attributes (``dpb``), predict (``p``) and predict + backward to the pixels (``pb``), at
    ``batch`` rows on resident tensors; the editor under the explainers' autocast (bf16 on CUDA,
    nothing on a CPU; the predictor casts for itself)."""
    x = tiles[torch.arange(batch) % len(tiles)].to(device)
    k = len(editor.attributes)
    with torch.no_grad():
        lat = editor.encode(x)
        imgs = editor.decode(lat, torch.full((batch, k), 0.5, device=device))
    a = torch.rand(batch, k, generator=torch.Generator().manual_seed(0)).to(device)

    def enc():
        with torch.no_grad(), autocast(device):
            editor.encode(x)

    def dp():
        with torch.no_grad(), autocast(device):
            predictor.forward(editor.decode(lat, a))

    def dpb():
        ag = a.clone().requires_grad_(True)
        with torch.enable_grad(), autocast(device):
            torch.autograd.grad(predictor.forward(editor.decode(lat, ag)).sum(), ag)

    def p():
        with torch.no_grad():
            predictor.forward(imgs)

    def pb():
        xg = imgs.clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(predictor.forward(xg).sum(), xg)

    fns = {"enc": enc, "dp": dp, "dpb": dpb, "p": p, "pb": pb}
    return {key: timed(fns[key], device) / batch for key in keys}


def run_explainer(name, exp, lots, ctx, counter: Counter, device, earlier: dict | None = None
                  ) -> tuple[float, dict]:
    """Wall seconds of ``explain_lot`` over ``lots`` (counted) and what the explainer reported.
    ``earlier``: per lot what the pipeline and the explainers before this one wrote, as the
    pipeline passes it (``ExplainContext.lot_results``: what ``exp`` declares it reads); this
    explainer's values and seconds are added to it."""
    counter.reset()
    counter.active = True
    reported: dict = {}
    clock = clock_for(device)
    sync(device)
    t0, w0 = clock(), time.perf_counter()
    try:
        for lot in lots:
            lot_ctx = ctx
            if earlier is not None:
                e = earlier[lot.index]
                lot_ctx = reader_context(ctx, exp, e["values"], e["by"], e["explainers"],
                                         e["seconds"])
            l0 = time.perf_counter()
            out = exp.explain_lot(lot, lot_ctx)
            if earlier is not None:
                e["values"].update(out)
                e["by"].update(dict.fromkeys(out, name))
                e["seconds"][name] = time.perf_counter() - l0
            if "backward_iterations" in out:
                reported["iterations"] = reported.get("iterations", 0) + int(
                    out["backward_iterations"].sum())
        sync(device)
    finally:
        counter.active = False
    reported["wall_seconds"] = time.perf_counter() - w0
    return clock() - t0, reported


def pipeline_values(exps, lots, ctx) -> dict:
    """Per lot the pipeline's own variables (computed outside the counted calls, as the pipeline
    does before any explainer), to which each explainer's values are added as it runs."""
    out = {}
    with torch.no_grad():
        for lot in lots:
            values = base_values(lot, ctx)
            out[lot.index] = {"values": values, "by": dict.fromkeys(values, "pipeline"),
                              "explainers": exps, "seconds": {}}
    return out


def one_repeat(exps, lots, ctx, counter, device) -> dict:
    """Every explainer in the pipeline's order, each reading what the earlier ones wrote."""
    res = {}
    tiles = torch.cat([lot.tiles for lot in lots])
    earlier = pipeline_values(exps, lots, ctx)
    for name, exp in exps.items():
        bs = batch_of(name, exp)
        sec, reported = run_explainer(name, exp, lots, ctx, counter, device, earlier)
        rates = model_rates(ctx.editor, ctx.predictor, tiles, bs, device,
                            sorted(needed(name, counter.rows)))
        lim = limits(name, dict(counter.rows), rates)
        res[name] = {"seconds": sec, "batch": bs, "rates": rates, "limit": lim,
                     "ratio": ratios(lim, sec), "model_seconds": counter.model_seconds(),
                     "rows": dict(counter.rows), "calls": dict(counter.calls),
                     "phase_seconds": dict(counter.seconds), "reported": reported}
        r = res[name]
        print(f"  {name:14s} {sec:7.2f} s CPU ({reported['wall_seconds']:.2f} s wall); "
              f"limit {lim['issue']:6.2f} s (issue), "
              f"{lim['full']:6.2f} s (every model call): {100 * r['ratio']['issue']:5.1f} % / "
              f"{100 * r['ratio']['full']:5.1f} %; in model calls {r['model_seconds']:.2f} s",
              flush=True)
    return res


def breakdown(r: dict) -> list[str]:
    """Per (phase, op, grad): calls, rows, seconds inside the counted calls."""
    lines = []
    for key in sorted(r["rows"], key=lambda k: -r["phase_seconds"][k]):
        ph, op, g = key
        lines.append(f"    {ph:20s} {op:8s}{' +grad' if g else '      '} calls {r['calls'][key]:5d} "
                     f"rows {r['rows'][key]:6d}  {r['phase_seconds'][key]:7.2f} s")
    return lines


def profile(exps, lots, ctx, folder: Path, top: int = 30) -> dict[str, str]:
    """cProfile (this process's CPU time on a CPU) of each explainer on ``lots``: the top entries
    by own and by cumulative time, written to ``folder/<explainer>.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, exp in exps.items():
        prof = cProfile.Profile(clock_for(ctx.device))
        prof.enable()
        for lot in lots:
            exp.explain_lot(lot, ctx)
        prof.disable()
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime")
        st.print_stats(top)
        st.sort_stats("cumulative").print_stats(top)
        (folder / f"{name}.txt").write_text(buf.getvalue())
        out[name] = buf.getvalue()
        print(f"profile of {name} -> {folder / (name + '.txt')}", flush=True)
    return out


def summary(reps: list[dict]) -> dict:
    """Per explainer: median and range over the repeats of both ratios and the wall time."""
    out = {}
    for name in reps[0]:
        vals = {key: [r[name]["ratio"][key] for r in reps] for key in ("issue", "full")}
        secs = [r[name]["seconds"] for r in reps]
        out[name] = {**{f"ratio_{k}": (float(np.median(v)), min(v), max(v))
                        for k, v in vals.items()},
                     "seconds": (float(np.median(secs)), min(secs), max(secs)),
                     "limit_issue_s": float(np.median([r[name]["limit"]["issue"] for r in reps])),
                     "limit_full_s": float(np.median([r[name]["limit"]["full"] for r in reps]))}
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lots", type=int, default=2, help="lots each explainer explains a repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--explainers", default="", help="comma-separated (default: the quickstart's)")
    ap.add_argument("--predictor", default=None, help="a trained predictor checkpoint")
    ap.add_argument("--profile", default=None, help="folder: cProfile each explainer instead")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    cfg = qs.config()
    editor, predictor = qs.models(cfg, device, args.predictor)
    ctx = qs.context(cfg, editor, predictor, device)
    # the pipeline's order (producers of declared reads first) and its cube coordinates
    exps = order_explainers(qs.explainers(cfg, [e for e in args.explainers.split(",") if e]
                                          or None))
    ctx.cube_coords = {k: np.asarray(v[1] if isinstance(v, tuple) else v)
                       for exp in exps.values() for k, v in {**exp.extra_dims(),
                                                             **exp.extra_coords()}.items()}
    lots = qs.lots(cfg, range(args.lots))
    print(f"device {device_label(device)}; quickstart sizes: {len(lots)} lots x "
          f"{len(lots[0].tiles)} tiles of {cfg['data']['tile_size']} px; predictor "
          f"{args.predictor or 'freshly initialised'}", flush=True)
    if args.profile:
        return {"profile": profile(exps, lots, ctx, Path(args.profile))}
    counter = Counter()
    instrument(editor, predictor, counter, sync=lambda: sync(device), clock=clock_for(device))
    reps = []
    for i in range(args.repeats):
        print(f"repeat {i + 1}/{args.repeats}", flush=True)
        reps.append(one_repeat(exps, lots, ctx, counter, device))
    for name, r in reps[-1].items():
        print(f"{name}: counted calls of the last repeat")
        print("\n".join(breakdown(r)))
        if r["reported"]:
            print(f"    reported by the explainer: {r['reported']}")
        if "iterations" in r["reported"]:  # the proxy's count against the explainer's own
            main = r["rows"].get(("_step", "decode", True), 0)
            print(f"    main-search gradient rows counted {main}, backward_iterations summed "
                  f"{r['reported']['iterations']}")
    res = {"device": device_label(device), "lots": len(lots), "tiles": len(lots[0].tiles),
           "predictor": args.predictor or "freshly initialised", "repeats": reps,
           "summary": summary(reps)}
    for name, s in res["summary"].items():
        print(f"{name:14s} achieved / limit {100 * s['ratio_issue'][0]:.1f} % "
              f"({100 * s['ratio_issue'][1]:.1f}-{100 * s['ratio_issue'][2]:.1f}), every model "
              f"call {100 * s['ratio_full'][0]:.1f} % ({100 * s['ratio_full'][1]:.1f}-"
              f"{100 * s['ratio_full'][2]:.1f}); {s['seconds'][0]:.2f} s")
    return res


if __name__ == "__main__":
    main()
