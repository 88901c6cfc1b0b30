"""Benchmark: the forward sweep's batched edit+predict throughput against a naive loop.

Prints edited-and-predicted tiles per second of ``ForwardSweep.sweep`` (each tile encoded once,
all attribute x step edits decoded and predicted in batches of ``--batch-size``) and of a naive
loop that edits and predicts one tile at one attribute value at a time (``editor.edit`` of a single
tile, then the predictor), both measured in this run, and their ratio.

Uses the registered AttGAN editor and WideResNet predictor (untrained, small sizes: timing only)
when they can be built, else small stand-in torch models.

    python benchmarks/forward_sweep.py --device cpu --tiles 8 --tile-size 64
    python benchmarks/forward_sweep.py --device cuda --tiles 256 --tile-size 128 --batch-size 512
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


def real_components(tile: int, device: torch.device, layers: int):
    from mxplain import plugins

    editor = plugins.create("editor", "attgan", enc_dim=32, dec_dim=32, dis_dim=16,
                            dis_fc_dim=64, n_layers=layers)
    editor.attributes = ATTRS
    editor._build(len(ATTRS), tile)  # untrained weights are enough for timing
    predictor = plugins.create("predictor", "wideresnet", depth=10, widen=1)
    from mxplain_wideresnet.model import WideResNet

    module = WideResNet(10, 1, 0.0)
    predictor.load_state_dict({"model": module.state_dict(), "center": 1000.0,
                               "half_range": 200.0, "depth": 10, "widen": 1, "tile_size": tile})
    return editor.to(device), predictor.to(device), "attgan + wideresnet (untrained)"


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
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--naive-edits", type=int, default=88, help="edits timed in the naive loop")
    ap.add_argument("--layers", type=int, default=4, help="AttGAN encoder/decoder layers")
    ap.add_argument("--fallback", action="store_true", help="use the small stand-in models")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    if args.fallback:
        editor, predictor, label = None, None, ""
    else:
        try:
            editor, predictor, label = real_components(args.tile_size, device, args.layers)
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
    return res


if __name__ == "__main__":
    main()
