"""Seed 003 Tables 2-3 on a tile store: the ``latent_krr`` regressions from TextureVAE latents and
from VGG19 ``pool5`` features side by side.

One TextureVAE is trained (unsupervised, on the training tiles), or an editor's encoder is used;
both feature sets come from the same tiles and the same frozen VGG19. For every feature set and
every regression (``linear``, ``rbf``, ``svr``) the hyperparameters are chosen by lot-grouped CV
on the training tiles, exactly as ``latent_krr``'s ``fit`` does (:func:`~mxplain_texturevae.
latent_regressor.regress`), then scored on the held-out tiles (Table 2: R^2, MAPE) and
leave-one-lot-out (Table 3: MAPE of each unseen lot's mean prediction).

Script: ``python -m mxplain_texturevae.study --help``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mxplain.interfaces import RunContext
from mxplain.store import to_tensor, train_val_split
from mxplain_texturevae import regression as reg
from mxplain_texturevae.cli_store import add_store_arguments, open_or_build_store
from mxplain_texturevae.latent_regressor import FeatureRegressorNet, LatentRegressor, regress

FEATURE_NAMES = {"texturevae": "TextureVAE mu", "vgg19": "VGG19 pool5",
                 "none": "none: training mean"}


def editor_features(editor, x: torch.Tensor, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Both feature sets of tiles ``x`` from a TextureVAE ``editor``: posterior means and the raw
    frozen VGG19 ``pool5`` features its encoder starts from."""
    p = LatentRegressor(batch_size=batch_size).to(editor.device)
    net = FeatureRegressorNet(editor.vgg_, editor.patch_, {}, editor.heads_.mu, editor.feat_mean_,
                              editor.feat_std_)
    return {"texturevae": p.feature_array(net, x),
            "vgg19": p.feature_array(FeatureRegressorNet(editor.vgg_, editor.patch_, {}), x)}


def feature_table(feats: dict[str, np.ndarray], y: np.ndarray, lots: np.ndarray, tr: np.ndarray,
                  va: np.ndarray, predictor: LatentRegressor,
                  kinds=reg.KINDS) -> list[dict]:
    """One row per (feature set, regression): chosen hyperparameters, held-out and
    leave-one-lot-out scores (see :func:`regress`)."""
    rows = []
    for fname, f in feats.items():
        for kind in kinds:
            t0 = time.perf_counter()
            _, m = regress(kind, f, y, lots, tr, va, predictor.grids(),
                           float(predictor.svr_epsilon), int(predictor.cv_folds), True)
            rows.append({"features": fname, "n_features": m["n_features"], "regression": kind,
                         "hyper": m["hyper"], "val": m.get("val", {}),
                         "leave_one_lot_out": m.get("leave_one_lot_out", {}),
                         "seconds": time.perf_counter() - t0})
    return rows


def baseline(y: np.ndarray, lots: np.ndarray, tr: np.ndarray, va: np.ndarray) -> dict:
    """The constant predictor every row must beat: the training tiles' mean property (held out),
    the other lots' tiles' mean (leave-one-lot-out)."""
    lolo = np.array([y[lots != i].mean() for i in lots])
    return {"features": "none", "n_features": 0, "regression": "mean", "hyper": {},
            "val": reg.scores(y[va], np.full(len(va), y[tr].mean()), lots[va]),
            "leave_one_lot_out": reg.scores(y, lolo, lots), "seconds": 0.0}


def structure_property(store, ctx: RunContext | None = None, editor=None,
                       max_tiles_per_lot: int = 0, **params) -> dict:
    """Tables 2-3 on ``store``. Without ``editor`` a TextureVAE is trained on the training tiles
    with ``latent_krr``'s ``vae`` parameters (``params``: any ``latent_krr`` parameter)."""
    ctx = ctx or RunContext(progress=False)
    t0 = time.perf_counter()
    p = LatentRegressor(**params, max_tiles_per_lot=max_tiles_per_lot)
    p._check_params()
    p.to(ctx.device)
    tiles, lots = store.all_tiles(max_per_lot=int(max_tiles_per_lot or 0), seed=int(p.seed))
    x = to_tensor(tiles)
    y = np.asarray(store.properties, dtype=np.float64)[lots]
    tr, va = train_val_split(lots, float(p.val_fraction), p.split, int(p.seed) + 1)
    encoder = {}
    if editor is None:
        net, encoder = p._encoder(x, lots, tr, ctx)
        feats = {"texturevae": p.feature_array(net, x),
                 "vgg19": p.feature_array(FeatureRegressorNet(net.vgg, net.patch, {}), x)}
    else:
        feats = editor_features(editor, x, int(p.batch_size))
    t1 = time.perf_counter()
    rows = [baseline(y, lots, tr, va)] + feature_table(feats, y, lots, tr, va, p)
    return {"tiles": int(len(y)), "lots": int(store.n_lots), "n_train": int(len(tr)),
            "n_val": int(len(va)), "split": p.split,
            "property_cv_percent": float(100 * np.std(store.properties)
                                         / abs(np.mean(store.properties))),
            "encoder": encoder, "encoder_seconds": float(t1 - t0), "rows": rows,
            "seconds": float(time.perf_counter() - t0)}


def format_table(result: dict) -> str:
    """The markdown table of :func:`structure_property`."""
    lines = ["| features | regression | chosen | held-out R^2 | held-out MAPE % | "
             "LOLO lot MAPE % | LOLO lot R^2 | LOLO tile MAPE % |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        v, lo = r["val"], r["leave_one_lot_out"]
        hyper = ", ".join(f"{k} {val:g}" for k, val in r["hyper"].items() if k != "epsilon")
        name = FEATURE_NAMES.get(r["features"], r["features"])
        size = f" ({r['n_features']})" if r["n_features"] else ""
        lines.append(f"| {name}{size} | {r['regression']} | {hyper} | {v.get('r2', float('nan')):.3f} | "
                     f"{v.get('mape', float('nan')):.2f} | {lo.get('lot_mape', float('nan')):.2f} "
                     f"| {lo.get('lot_r2', float('nan')):.3f} | "
                     f"{lo.get('mape', float('nan')):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    a = argparse.ArgumentParser(description="Seed 003 Tables 2-3: latent_krr regressions from "
                                "TextureVAE latents and VGG19 features on a tile store")
    add_store_arguments(a, "texturevae-study", tiles_per_lot=96)
    a.add_argument("--property", default="law", help="synthetic property: law or simulated")
    a.add_argument("--vae", default="{}", help="JSON table of [predictor.vae] overrides")
    a.add_argument("--params", default="{}", help="JSON table of other latent_krr parameters "
                   "(e.g. the CV grids alphas, gammas, svr_c)")
    a.add_argument("--device", default="cpu")
    a.add_argument("--json", help="write the results to this JSON file")
    args = a.parse_args(argv)
    ctx = RunContext(device=torch.device(args.device), progress=False,
                     out_dir=Path(args.workdir))
    store = open_or_build_store(args, ctx, property=args.property)
    result = structure_property(store, ctx, vae=json.loads(args.vae) or None,
                                **json.loads(args.params))
    print(format_table(result), flush=True)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
