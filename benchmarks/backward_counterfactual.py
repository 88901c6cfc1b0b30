"""Benchmark: backward counterfactual search, tiles per second.

Times ``BackwardCounterfactual.explain_lot`` on one lot of random tiles (untrained AttGAN and
WideResNet; timing only): for every tile and both directions, the attribute vector is optimised
(gradient descent through decoder and predictor, ``max_iter`` steps at most) until the prediction
reaches its target. Prints tiles/s (a tile = its two counterfactuals) and the iterations run.

    python benchmarks/backward_counterfactual.py --device cpu --tiles 8 --tile-size 32 --max-iter 20
    python benchmarks/backward_counterfactual.py --device cuda --tiles 512 --tile-size 256 \
        --layers 5 --dim 64 --depth 28
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _bench import ATTRS, add_model_args, components, device_label, prepare, sync

from mxplain.interfaces import ExplainContext, Lot
from mxplain_attribute.backward import BackwardCounterfactual


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(ap, tile_size=64)
    ap.add_argument("--tiles", type=int, default=8)
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=128, help="[explain.backward] batch_size")
    ap.add_argument("--optimizer", default="auto", help="auto | gradient | spsa")
    ap.add_argument("--threads", type=int, default=1,
                    help="[explain.backward] threads (torch CPU threads of the search)")
    ap.add_argument("--restarts", type=int, default=0,
                    help="[explain.backward] restarts (stability check; 0: the search alone)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    editor, predictor = components(args.tile_size, device, args.layers, args.dim, args.depth)
    applied = prepare(editor, predictor, device, args.channels_last, args.compile)
    ctx = ExplainContext(device=device, progress=False, predictor=predictor, editor=editor,
                         attributes=ATTRS, seed=0)
    bw = BackwardCounterfactual(max_iter=args.max_iter, batch_size=args.batch_size,
                                optimizer=args.optimizer, threads=args.threads,
                                restarts=args.restarts)
    t = args.tile_size

    def lot(n, index):
        return Lot(index=index, lot_id=f"bench{index}", tiles=torch.rand(n, 1, t, t),
                   attributes=np.full(len(ATTRS), 0.5, np.float32), property=1000.0)

    bw.explain_lot(lot(min(2, args.tiles), 0), ctx)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    out = bw.explain_lot(lot(args.tiles, 1), ctx)
    sync(device)
    sec = time.perf_counter() - t0
    iters = out["backward_iterations"]
    res = {"device": device_label(device), "tile_size": t, "method": bw.method_,
           "settings": ", ".join(applied) or "-", "tiles": args.tiles,
           "tiles_per_s": args.tiles / sec, "counterfactuals_per_s": iters.size / sec,
           "mean_iterations": float(iters.mean()),
           "converged_share": float(out["backward_converged"].mean())}
    print(f"device {res['device']}; {t}px; AttGAN {args.layers} layers dim {args.dim}, "
          f"WideResNet-{args.depth}-1; method {bw.method_}; search threads {args.threads}, "
          f"restarts {args.restarts}; settings: {res['settings']}")
    print(f"backward counterfactuals: {args.tiles} tiles x 2 directions in {sec:.2f} s = "
          f"{res['tiles_per_s']:.2f} tiles/s ({res['counterfactuals_per_s']:.2f} "
          f"counterfactuals/s); mean {res['mean_iterations']:.1f} iterations (max "
          f"{args.max_iter}), {100 * res['converged_share']:.0f} % converged")
    return res


if __name__ == "__main__":
    main()
