"""Benchmark: the forward sweep's batched edit+predict throughput against a naive loop.

Prints edited-and-predicted tiles per second of ``ForwardSweep.sweep`` (each tile encoded once,
all attribute x step edits decoded and predicted in batches of ``--batch-size``) and of a naive
loop that edits and predicts one tile at one attribute value at a time (``editor.edit`` of a single
tile, then the predictor), both measured in this run, and their ratio.

Uses the registered AttGAN editor and WideResNet predictor (untrained, small sizes: timing only)
when they can be built, else small stand-in torch models.

    python benchmarks/forward_sweep.py --device cpu --tiles 8 --tile-size 64
    python benchmarks/forward_sweep.py --device cuda --tiles 256 --tile-size 128 --batch-size 512

Paper scale (seed 000: 59,690 tiles x 4 attributes x 11 steps = 2.6 M edits at 256 px with the
reference AttGAN and WideResNet-28-1), projected from the measured batched rate:

    python benchmarks/forward_sweep.py --device cuda --tiles 512 --tile-size 256 --layers 5 \
        --dim 64 --depth 28 --batch-size auto --paper-tiles 59690 [--compile]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from mxplain.interfaces import Editor, ExplainContext, NoLearnedState, Predictor
from mxplain_attribute.forward import ForwardSweep

ATTRS = ("size", "porosity", "polydispersity", "facetness")


def real_components(tile: int, device: torch.device, layers: int, dim: int = 32, depth: int = 10):
    from _bench import components

    editor, predictor = components(tile, device, layers, dim, depth)
    return editor, predictor, f"attgan dim {dim} + wideresnet-{depth}-1 (untrained)"


class _SmallEditor(NoLearnedState, Editor):
    name = "bench-editor"
    attributes = ATTRS

    def __init__(self):
        k = len(ATTRS)
        self.enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2))
        self.dec = nn.Sequential(nn.ConvTranspose2d(64 + k, 32, 4, 2, 1), nn.ReLU(),
                                 nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid())

    def to(self, device):
        self.device = torch.device(device)
        self.enc.to(device).eval()
        self.dec.to(device).eval()
        return self

    def encode(self, tiles):
        return self.enc(tiles.to(self.device))

    def decode(self, latent, attributes):
        a = attributes.to(latent.dtype)[:, :, None, None].expand(-1, -1, *latent.shape[2:])
        return self.dec(torch.cat([latent, a], 1))


class _SmallPredictor(NoLearnedState, Predictor):
    name = "bench-predictor"

    def __init__(self):
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 1))

    def to(self, device):
        self.device = torch.device(device)
        self.net.to(device).eval()
        return self

    def forward(self, tiles):
        return self.net(tiles.to(self.device))[:, 0]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiles", type=int, default=8)
    ap.add_argument("--tile-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=11)
    ap.add_argument("--batch-size", default="256",
                    help="an integer, or auto: the best power of two (on CUDA up to the free memory)")
    ap.add_argument("--naive-edits", type=int, default=88, help="edits timed in the naive loop")
    ap.add_argument("--layers", type=int, default=4, help="AttGAN encoder/decoder layers")
    ap.add_argument("--dim", type=int, default=32, help="AttGAN base width")
    ap.add_argument("--depth", type=int, default=10, help="WideResNet depth")
    ap.add_argument("--channels-last", action="store_true", help="(default on CUDA)")
    ap.add_argument("--compile", action="store_true", help="torch.compile decoder and predictor")
    ap.add_argument("--paper-tiles", type=int, default=0,
                    help="also print the projected time of a sweep of this many tiles")
    ap.add_argument("--fallback", action="store_true", help="use the small stand-in models")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    if args.fallback:
        editor, predictor, label = None, None, ""
    else:
        try:
            editor, predictor, label = real_components(args.tile_size, device, args.layers,
                                                       args.dim, args.depth)
            from _bench import prepare

            applied = prepare(editor, predictor, device, args.channels_last, args.compile)
            label += f"; {', '.join(applied) or 'eager float32'}"
        except Exception as exc:  # plugin not there or its private builder changed
            print(f"real components unavailable ({type(exc).__name__}: {exc}); using stand-ins")
            editor = None
    if editor is None:
        editor, predictor = _SmallEditor().to(device), _SmallPredictor().to(device)
        label = "small stand-in conv editor + predictor"
    tiles = torch.rand(args.tiles, 1, args.tile_size, args.tile_size)
    lot_attrs = np.full(len(ATTRS), 0.5, np.float32)
    ctx = ExplainContext(device=device, progress=False, predictor=predictor, editor=editor,
                         attributes=ATTRS)
    if args.batch_size == "auto":
        args.batch_size = _auto_batch(fs_tiles=tiles, lot_attrs=lot_attrs, ctx=ctx, args=args,
                                      device=device)
    args.batch_size = int(args.batch_size)
    fs = ForwardSweep(steps=args.steps, batch_size=args.batch_size)

    fs.sweep(tiles[:2], lot_attrs, ctx)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    preds = fs.sweep(tiles, lot_attrs, ctx)
    _sync(device)
    t_batched = time.perf_counter() - t0
    n_batched = preds.size

    values = fs.values()
    combos = [(t, k, s) for t in range(args.tiles) for k in range(len(ATTRS))
              for s in range(args.steps)][: args.naive_edits]
    a0 = torch.as_tensor(lot_attrs, device=device)

    def naive(items):
        out = []
        for t, k, s in items:
            a = a0.clone()[None]
            a[0, k] = float(values[s])
            img = editor.edit(tiles[t : t + 1].to(device), a)
            out.append(predictor.forward(img).float())
        return out

    naive(combos[:2])  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    ref = naive(combos)
    _sync(device)
    t_naive = time.perf_counter() - t0
    ref = torch.cat(ref).cpu().numpy()
    got = np.array([preds[t, k, s] for t, k, s in combos])
    max_diff = float(np.abs(ref - got).max()) if len(got) else 0.0

    rate_b, rate_n = n_batched / t_batched, len(combos) / t_naive
    res = {"models": label, "device": str(device), "tile_size": args.tile_size,
           "batched_tiles_per_s": rate_b, "naive_tiles_per_s": rate_n,
           "speedup": rate_b / rate_n, "batched_edits": n_batched, "naive_edits": len(combos),
           "max_abs_diff": max_diff}
    print(f"models: {label}; device {device}; {args.tile_size}px tiles; steps {args.steps}; "
          f"batch {args.batch_size}")
    print(f"forward sweep (batched): {n_batched} edits in {t_batched:.3f} s = "
          f"{rate_b:.1f} edited+predicted tiles/s")
    print(f"naive loop (1 tile, 1 value at a time): {len(combos)} edits in {t_naive:.3f} s = "
          f"{rate_n:.1f} tiles/s")
    print(f"speedup: {rate_b / rate_n:.1f}x   (max |batched - naive| = {max_diff:.3g})")
    if args.paper_tiles:
        edits = args.paper_tiles * len(ATTRS) * args.steps
        res["paper_edits"] = edits
        res["paper_projected_s"] = edits / rate_b
        print(f"paper scale: {args.paper_tiles} tiles x {len(ATTRS)} x {args.steps} = {edits:,} "
              f"edits -> {edits / rate_b:.0f} s ({edits / rate_b / 60:.1f} min) at the batched rate")
    return res


def _auto_batch(fs_tiles, lot_attrs, ctx, args, device) -> int:
    """The sweep's fastest batch size among powers of two (CUDA: up to the free memory)."""
    from _bench import activation_bytes, best_batch, candidate_batches

    sample = fs_tiles[: max(1, min(len(fs_tiles), 64))]

    def make(bs):
        fs = ForwardSweep(steps=args.steps, batch_size=bs)
        return lambda: fs.sweep(sample, lot_attrs, ctx)

    per_call = len(sample) * len(ATTRS) * args.steps
    best, _, rates = best_batch(make, candidate_batches(device, activation_bytes(
        args.tile_size, args.dim), lo=32, cpu_max=256), device, items_per_call=lambda bs: per_call,
        repeat=1)
    print("batch size search (edits/s): " + ", ".join(f"{b}: {r:.1f}" for b, r in rates.items()))
    return best


if __name__ == "__main__":
    main()
