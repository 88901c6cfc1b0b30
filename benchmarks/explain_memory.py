"""Benchmark: peak memory of an explain run of 10 lots against 40 lots (the ratio should stay near 1:
the pipeline streams lot by lot).

Writes two tile stores of random tiles (10 and 40 lots of ``--tiles-per-lot`` tiles), saves an
untrained AttGAN and WideResNet as checkpoints, and runs ``mxplain.pipeline.run`` (checkpoints
loaded, predictor and editor evaluation, the forward sweep over every tile, the cube, summaries) for
each store in a fresh process. Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU
the process's RSS high-water mark (``ru_maxrss``), also given above the high-water mark right
before the run (after imports).

    python benchmarks/explain_memory.py --device cpu --tiles-per-lot 16 --tile-size 32
    python benchmarks/explain_memory.py --device cuda --tiles-per-lot 256 --tile-size 256 \
        --layers 5 --dim 64 --depth 28
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def child(cfg_path: str, out: str, device: str) -> None:
    import torch

    from mxplain.pipeline import run

    if device.startswith("cuda"):
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb()
    run(cfg_path, out=out, device=device, progress=False)
    res = {"rss_peak_mb": _rss_mb(), "rss_before_run_mb": base}
    if device.startswith("cuda"):
        res["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(res))


def make_inputs(root: Path, lots: list[int], tiles: int, size: int, layers: int, dim: int,
                depth: int) -> None:
    import torch
    from _bench import ATTRS, components

    from mxplain.store import LotTable, TileStore

    rng = np.random.default_rng(0)
    n_max = max(lots)
    values = rng.uniform(0, 1, (n_max, len(ATTRS))).astype(np.float32)
    prop = rng.uniform(900, 1100, n_max)
    data = rng.integers(0, 256, (n_max, tiles, size, size), dtype=np.uint8)
    for n in lots:
        path = root / f"tiles{n}.zarr"
        table = LotTable([f"L{i:03d}" for i in range(n)], ATTRS, values[:n], prop[:n])
        TileStore.create(path, table, [tiles] * n, size)
        for i in range(n):
            TileStore.write_lot(path, i, data[i], tiles)
        TileStore.mark_complete(path)
    editor, predictor = components(size, torch.device("cpu"), layers, dim, depth)
    editor.save(root / "editor.pt")
    predictor.save(root / "predictor.pt")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lots", default="10,40", help="the two lot counts")
    ap.add_argument("--tiles-per-lot", type=int, default=16)
    ap.add_argument("--tile-size", type=int, default=32)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--steps", type=int, default=11)
    ap.add_argument("--batch-size", type=int, default=256, help="[explain.forward] batch_size")
    ap.add_argument("--child", nargs=3, metavar=("CONFIG", "OUT", "DEVICE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return {}
    lots = [int(x) for x in args.lots.split(",")]
    res: dict = {"device": args.device, "tile_size": args.tile_size,
                 "tiles_per_lot": args.tiles_per_lot, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_inputs(root, lots, args.tiles_per_lot, args.tile_size, args.layers, args.dim,
                    args.depth)
        for n in lots:
            cfg = root / f"c{n}.toml"
            cfg.write_text(
                f'[data]\nname = "store"\npath = "{root / f"tiles{n}.zarr"}"\n'
                f'[predictor]\nname = "wideresnet"\ndepth = {args.depth}\n'
                f'checkpoint = "{root / "predictor.pt"}"\n'
                f'[editor]\nname = "attgan"\nenc_dim = {args.dim}\ndec_dim = {args.dim}\n'
                f'dis_dim = 16\ndis_fc_dim = 64\nn_layers = {args.layers}\n'
                f'checkpoint = "{root / "editor.pt"}"\n'
                f'[explain.forward]\nsteps = {args.steps}\nbatch_size = {args.batch_size}\n'
                f'[run]\nexplain_tiles = 0\nreport = false\neditor_eval_tiles = 2\n')
            proc = subprocess.run([sys.executable, __file__, "--child", str(cfg),
                                   str(root / f"run{n}"), args.device],
                                  capture_output=True, text=True, env={**os.environ},
                                  cwd=Path(__file__).parent)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                raise SystemExit(f"run of {n} lots failed:\n{proc.stderr[-3000:]}")
            res["runs"][n] = json.loads(line[0][7:])
    a, b = (res["runs"][n] for n in lots)
    key = "cuda_max_allocated_mb" if "cuda_max_allocated_mb" in a else "rss_peak_mb"
    res["measure"] = key
    res["ratio"] = b[key] / a[key]
    grow_a = a["rss_peak_mb"] - a["rss_before_run_mb"]
    grow_b = b["rss_peak_mb"] - b["rss_before_run_mb"]
    res["rss_growth_ratio"] = grow_b / grow_a if grow_a > 0 else float("nan")
    print(f"device {args.device}; {args.tile_size}px, {args.tiles_per_lot} tiles per lot, forward "
          f"sweep of every tile ({args.steps} steps)")
    for n in lots:
        r = res["runs"][n]
        extra = (f", CUDA max allocated {r['cuda_max_allocated_mb']:.1f} MiB"
                 if "cuda_max_allocated_mb" in r else "")
        print(f"{n:>3} lots: RSS peak {r['rss_peak_mb']:.1f} MiB (before the run "
              f"{r['rss_before_run_mb']:.1f} MiB, growth "
              f"{r['rss_peak_mb'] - r['rss_before_run_mb']:.1f} MiB){extra}")
    print(f"peak memory {lots[1]} / {lots[0]} lots ({key}): {res['ratio']:.3f}x; RSS growth "
          f"during the run: {res['rss_growth_ratio']:.3f}x")
    return res


if __name__ == "__main__":
    main()
