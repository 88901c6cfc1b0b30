"""Benchmark: forward sweep throughput against the model-only limit.

The limit is decoder + predictor forward on resident random tensors (latents and attributes already
on the device, nothing copied, nothing written) at the best batch size, found by trying powers of
two (on CUDA up to what the free memory holds). The sweep (``ForwardSweep.sweep``: tiles copied in,
encoded once, every attribute x step decoded and predicted, predictions copied out) then runs at
that batch size. Both are measured in this run; the ratio is sweep / limit.

    python benchmarks/model_limit.py --device cpu --tiles 8 --tile-size 32
    python benchmarks/model_limit.py --device cuda --tiles 512 --tile-size 256 --layers 5 \
        --dim 64 --depth 28
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _bench import (
    ATTRS,
    activation_bytes,
    add_model_args,
    best_batch,
    candidate_batches,
    components,
    device_label,
    prepare,
    timed,
)

from mxplain.interfaces import ExplainContext
from mxplain_attribute._common import autocast
from mxplain_attribute.forward import ForwardSweep


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, tile_size=64)
    ap.add_argument("--tiles", type=int, default=8, help="tiles in the timed sweep")
    ap.add_argument("--steps", type=int, default=11)
    ap.add_argument("--batches", default="", help="comma-separated batch sizes to try (default: "
                    "powers of two, on CUDA up to the free memory)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    editor, predictor = components(args.tile_size, device, args.layers, args.dim, args.depth)
    applied = prepare(editor, predictor, device, args.channels_last, args.compile)
    k, t = len(ATTRS), args.tile_size
    mf = torch.channels_last if "channels-last" in applied else torch.contiguous_format

    def make(bs):
        tiles = torch.rand(bs, 1, t, t, device=device).contiguous(memory_format=mf)
        with autocast(device):
            latent = editor.encode(tiles)
        attrs = torch.rand(bs, k, device=device)

        def fn():
            with autocast(device):
                return predictor.forward(editor.decode(latent, attrs))
        return fn

    batches = ([int(b) for b in args.batches.split(",")] if args.batches else
               candidate_batches(device, activation_bytes(t, args.dim)))
    best, limit, rates = best_batch(make, batches, device)

    fs = ForwardSweep(steps=args.steps, batch_size=best)
    ctx = ExplainContext(device=device, progress=False, predictor=predictor, editor=editor,
                         attributes=ATTRS)
    tiles = torch.rand(args.tiles, 1, t, t)
    lot = np.full(k, 0.5, np.float32)
    sec = timed(lambda: fs.sweep(tiles, lot, ctx), device)
    sweep = args.tiles * k * args.steps / sec
    res = {"device": device_label(device), "tile_size": t, "settings": ", ".join(applied) or "-",
           "best_batch": best, "limit_tiles_per_s": limit, "sweep_tiles_per_s": sweep,
           "ratio": sweep / limit, "rates_by_batch": rates}
    print(f"device {res['device']}; {t}px; AttGAN {args.layers} layers dim {args.dim}, "
          f"WideResNet-{args.depth}-1; settings: {res['settings']}")
    print("model-only decode+predict, tiles/s by batch: " +
          ", ".join(f"{b}: {r:.1f}" for b, r in rates.items()))
    print(f"model-only limit (batch {best}): {limit:.1f} tiles/s")
    print(f"forward sweep ({args.tiles} tiles x {k} attributes x {args.steps} steps, batch {best}): "
          f"{sweep:.1f} tiles/s")
    print(f"sweep / limit: {100 * sweep / limit:.1f} %")
    return res


if __name__ == "__main__":
    main()
