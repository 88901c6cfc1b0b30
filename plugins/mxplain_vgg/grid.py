"""``python -m mxplain_vgg.grid --store PATH --out DIR``: the seed's Figure 6 on a tile store.

For each target (``lot`` and/or attribute names, binned into ``--bins`` classes) it writes
``DIR/grid_<target>.zarr`` (the F1 cube), ``DIR/grid_<target>.json`` and the heat-map
``DIR/figures/vgg_grid_<target>.png``; with ``--interpret`` also the interpretation figures
(``vgg_<target>_important_textures.png``, ``..._activation_map.png``,
``..._characteristic_textures.png``) for the best mean-featurization layer.  Features are cached
in ``DIR/cache``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mxplain.errors import UserError

from .classify import feature_grid, interpret, plot_grid, save_grid, tile_labels
from .features import FEATURIZATIONS, GRID_LAYERS, Featurizer, extract_features
from .vgg import load_vgg


def run_grid(store_path, out, targets=("lot",), layers=GRID_LAYERS, featurizations=FEATURIZATIONS,
             n_estimators=400, n_trials=10, n_folds=3, n_bins=3, max_tiles_per_lot=None,
             arch="vgg16", weights=None, seed=0, batch_size=64, n_words=32, device="cpu",
             do_interpret=False, interpret_steps=150, n_jobs=1, progress=True) -> dict:
    """Run the grid for every target; returns ``{target: {"best": ..., "grid": {...}}}``."""
    from mxplain.store import TileStore

    store = TileStore.open(store_path)
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    vgg = load_vgg(arch, weights, seed=seed, device=device)
    results = {}
    t0 = time.perf_counter()
    grids = feature_grid(store, layers=layers, featurizations=featurizations,
                         target=list(targets), n_bins=n_bins, vgg=vgg,
                         n_estimators=n_estimators, n_trials=n_trials, n_folds=n_folds,
                         max_tiles_per_lot=max_tiles_per_lot, cache_dir=out / "cache",
                         batch_size=batch_size, n_words=n_words, seed=seed, n_jobs=n_jobs,
                         progress=progress)
    for target in targets:  # every grid is saved before the (slower) interpretation
        save_grid(grids[target], out / f"grid_{target}.zarr")
        plot_grid(grids[target], out / "figures" / f"vgg_grid_{target}.png")
    for target in targets:
        ds = grids[target]
        m = ds["f1_mean"].values
        i, j = np.unravel_index(np.nanargmax(m), m.shape)
        res = {"best": {"layer": str(ds.layer.values[i]),
                        "featurization": str(ds.featurization.values[j]),
                        "f1_mean": float(m[i, j]), "f1_std": float(ds["f1_std"].values[i, j])},
               "by_featurization_best": {str(f): float(np.nanmax(m[:, k]))
                                         for k, f in enumerate(ds.featurization.values)},
               "grid": {str(r): {str(f): [float(ds["f1_mean"].values[a, b]),
                                          float(ds["f1_std"].values[a, b])]
                                 for b, f in enumerate(ds.featurization.values)}
                        for a, r in enumerate(ds.layer.values)},
               "seconds": float(time.perf_counter() - t0), **dict(ds.attrs)}
        if do_interpret:
            mean_col = list(ds.featurization.values).index("mean") \
                if "mean" in ds.featurization.values else j
            cand = [(m[a, mean_col], str(ds.layer.values[a])) for a in range(m.shape[0])
                    if str(ds.layer.values[a]) not in ("image", "all")
                    and np.isfinite(m[a, mean_col])]
            if cand:
                best_layer = max(cand)[1]
                feat = Featurizer(vgg, [best_layer], "mean", seed=seed)
                X, lot_idx = extract_features(store, feat, out / "cache" /
                                              f"features_{best_layer}_mean.zarr",
                                              max_tiles_per_lot, batch_size)
                y, names = tile_labels(store, lot_idx, target, n_bins)
                res["interpret"] = interpret(store, feat, X, y, lot_idx, names, out / "figures",
                                             prefix=f"vgg_{target}", n_estimators=n_estimators,
                                             steps=interpret_steps, seed=seed, n_jobs=n_jobs)
        (out / f"grid_{target}.json").write_text(json.dumps(res, indent=1, default=str))
        results[target] = res
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mxplain_vgg.grid", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="tile store (tiles.zarr)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--target", action="append", default=None,
                    help="'lot' or an attribute name (binned); repeatable (default: lot)")
    ap.add_argument("--layers", default=",".join(GRID_LAYERS))
    ap.add_argument("--featurizations", default=",".join(FEATURIZATIONS))
    ap.add_argument("--trees", type=int, default=400)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--bins", type=int, default=3)
    ap.add_argument("--max-tiles-per-lot", type=int, default=None)
    ap.add_argument("--vgg", default="vgg16", choices=["vgg16", "vgg19"])
    ap.add_argument("--weights", default=None, help="torchvision-format VGG weights file")
    ap.add_argument("--words", type=int, default=32, help="VLAD dictionary size")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--jobs", type=int, default=1, help="random-forest n_jobs")
    ap.add_argument("--interpret", action="store_true", help="also write the texture figures")
    ap.add_argument("--interpret-steps", type=int, default=150)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    try:
        res = run_grid(a.store, a.out, tuple(a.target or ["lot"]),
                       [s for s in a.layers.split(",") if s],
                       [s for s in a.featurizations.split(",") if s], a.trees, a.trials,
                       a.folds, a.bins, a.max_tiles_per_lot, a.vgg, a.weights, a.seed,
                       a.batch_size, a.words, a.device, a.interpret, a.interpret_steps, a.jobs,
                       not a.quiet)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for t, r in res.items():
        b = r["best"]
        print(f"{t}: best {b['layer']} x {b['featurization']} F1 {b['f1_mean']:.3f} "
              f"± {b['f1_std']:.3f}; best per featurization {r['by_featurization_best']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
