"""Predictor evaluation on every tile of a store: RMSE and MAPE overall and per lot, and the
figures of seed 000's supplement B (Figure 8: predicted vs measured per lot with the spread over
tiles; Figure 9: per-lot RMSE)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mxplain.figures import save_figure
from mxplain.interfaces import Predictor, RunContext
from mxplain.store import TileStore, to_tensor


def predict_lots(predictor: Predictor, store: TileStore, ctx: RunContext) -> list[np.ndarray]:
    from tqdm.auto import tqdm

    out = []
    for i in tqdm(range(store.n_lots), desc="evaluate predictor", unit="lot",
                  disable=not ctx.progress, leave=False):
        out.append(predictor.predict(to_tensor(store.tiles(i)), batch_size=ctx.batch_size))
    return out


def error_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    err = pred - truth
    return {"rmse": float(np.sqrt(np.mean(err**2))),
            "mape_percent": float(100 * np.mean(np.abs(err) / np.abs(truth)))}


def tile_truth_metrics(preds: list[np.ndarray], tile_properties: np.ndarray) -> dict:
    """Predictions scored against each tile's own property (a store with ``tile_property``, e.g.
    simulated): RMSE, Pearson r and R^2 over all tiles."""
    pred = np.concatenate(preds).astype(np.float64)
    truth = np.concatenate([tile_properties[i, : len(p)] for i, p in enumerate(preds)])
    ok = np.isfinite(truth)
    pred, truth = pred[ok], truth[ok]
    if len(truth) < 3 or np.var(truth) <= 0:
        return {"tiles": int(len(truth))}
    res = float(np.sum((pred - truth) ** 2))
    return {"tiles": int(len(truth)), "rmse": float(np.sqrt(res / len(truth))),
            "pearson_r": float(np.corrcoef(pred, truth)[0, 1]),
            "r2": float(1.0 - res / np.sum((truth - truth.mean()) ** 2))}


def evaluate_predictor(predictor: Predictor, store: TileStore, ctx: RunContext) -> dict:
    preds = predict_lots(predictor, store, ctx)
    truth = [np.full(len(p), store.properties[i]) for i, p in enumerate(preds)]
    overall = error_metrics(np.concatenate(preds), np.concatenate(truth))
    per_lot = {}
    for i, p in enumerate(preds):
        per_lot[store.lot_ids[i]] = {
            "measured": float(store.properties[i]), "predicted_mean": float(p.mean()),
            "predicted_std": float(p.std()), **error_metrics(p, truth[i])}
    lot_means = np.array([p.mean() for p in preds])
    r = float(np.corrcoef(lot_means, store.properties)[0, 1]) if store.n_lots > 2 else float("nan")
    metrics = {"all_tiles": overall, "lot_mean_pearson_r": r, "per_lot": per_lot}
    if store.tile_properties is not None:
        metrics["per_tile_truth"] = tile_truth_metrics(preds, store.tile_properties)
    if ctx.figures_dir is not None:
        _figures(per_lot, store, Path(ctx.figures_dir))
    return metrics


def _figures(per_lot: dict, store: TileStore, figdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lots = sorted(per_lot, key=lambda k: per_lot[k]["measured"])
    measured = np.array([per_lot[k]["measured"] for k in lots])
    mean = np.array([per_lot[k]["predicted_mean"] for k in lots])
    std = np.array([per_lot[k]["predicted_std"] for k in lots])
    units = f" ({store.property_units})" if store.property_units else ""
    x = np.arange(len(lots))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(lots)), 4))
    ax.errorbar(x, mean, yerr=std, fmt="o", capsize=3, label="predicted (mean ± sd over tiles)")
    ax.plot(x, measured, "s", color="C3", label="measured")
    ax.set_xticks(x, lots, rotation=90, fontsize=7)
    ax.set_ylabel(store.property_name + units)
    ax.set_title("Predicted vs measured per lot (after Liu et al. 2020, Fig. 8)")
    ax.legend(fontsize=8)
    save_figure(fig, figdir / "predictor_per_lot.png", dpi=110)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(lots)), 3.5))
    ax.bar(x, [per_lot[k]["rmse"] for k in lots], color="C0")
    ax.set_xticks(x, lots, rotation=90, fontsize=7)
    ax.set_ylabel("RMSE" + units)
    ax.set_title("Per-lot RMSE (after Liu et al. 2020, Fig. 9)")
    save_figure(fig, figdir / "predictor_rmse_per_lot.png", dpi=110)
