"""Acceptance benchmark of seed 002 on synthetic lots: the F1 grid (layer x featurization) for
classifying lots and size bins, with random-filter VGG16 (no ImageNet weights here).

    python benchmarks/vgg_grid.py --out /tmp/vgg_bench [--lots 12 --tiles 48 --size 64
                                  --trees 100 --trials 3]

Writes the grid cubes/JSON into ``--out`` and copies the heat-maps and texture figures to
``docs/figures/vgg_*.png`` with ``--docs``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import warnings
from pathlib import Path

from mxplain import plugins
from mxplain.interfaces import RunContext
from mxplain_vgg.grid import run_grid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/vgg_bench")
    ap.add_argument("--lots", type=int, default=12)
    ap.add_argument("--tiles", type=int, default=48)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--bins", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--layers", default="image,C1_2,C2_2,C3_3,C4_3,C5_3")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--docs", action="store_true", help="copy figures to docs/figures")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    out = Path(a.out)
    t0 = time.perf_counter()
    store_path = out / "tiles.zarr"
    ctx = RunContext(out_dir=out, progress=False)
    plugins.create("dataset", "synthetic", n_lots=a.lots, tiles_per_lot=a.tiles,
                   tile_size=a.size, seed=0).build(store_path, ctx, resume=True)
    t1 = time.perf_counter()
    res = run_grid(store_path, out, ("lot", "size"), layers=a.layers.split(","),
                   n_estimators=a.trees, n_trials=a.trials, n_bins=a.bins, do_interpret=True,
                   interpret_steps=150, n_jobs=a.jobs, progress=a.progress)
    summary = {"store_seconds": t1 - t0, "grid_seconds": time.perf_counter() - t1,
               "setup": vars(a),
               **{t: {k: r[k] for k in ("best", "by_featurization_best", "grid")}
                  for t, r in res.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    if a.docs:
        dst = Path(__file__).resolve().parents[1] / "docs" / "figures"
        dst.mkdir(parents=True, exist_ok=True)
        for p in (out / "figures").glob("vgg_*.png"):
            shutil.copy(p, dst / p.name)


if __name__ == "__main__":
    main()
