"""Random-forest classification of texture features and its interpretation (seed 002).

* :func:`cv_f1` -- a ``RandomForestClassifier`` (400 trees) scored by macro F1 over ``n_trials``
  (10) repetitions of stratified ``n_folds``-fold (3) cross-validation: mean and std over trials.
* :func:`feature_grid` -- the paper's Figure 6: F1 for every (layer x featurization) cell, as an
  ``xarray.Dataset`` (:func:`save_grid` writes zarr) and a heat-map (:func:`plot_grid`).
  Targets: ``"lot"`` (each tile labelled with its lot) or an attribute name (the lot labels of that
  attribute cut into ``n_bins`` equal-count bins over lots).
* Interpretability (Figures 9-12): :func:`important_features` (forest importances mapped back to
  layer/filter), :func:`activation_map` (a filter's response over a tile),
  :func:`maximize_activation` (gradient ascent on an input image: the texture a filter stands
  for), :func:`characteristic_features` (per class, the feature whose class mean differs most from
  the other classes), and :func:`interpret` which writes the figures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.figures import save_figure

from .features import FEATURIZATIONS, GRID_LAYERS, Featurizer, extract_features, fit_featurizer
from .vgg import VGG

# ---- labels ------------------------------------------------------------------------------------


def attribute_bins(store, attribute: str, n_bins: int = 3) -> np.ndarray:
    """Per-lot class of ``attribute``: lots ranked by their label and cut into ``n_bins``
    equal-count bins (0 = lowest)."""
    if attribute not in store.attributes:
        raise UserError(f"attribute {attribute!r} is not in tile store {str(store.path)!r} "
                        f"(attributes: {list(store.attributes)})")
    v = store.lot_attributes[:, store.attributes.index(attribute)]
    if n_bins < 2 or n_bins > len(v):
        raise UserError(f"n_bins = {n_bins}: need 2 <= n_bins <= number of lots ({len(v)})")
    rank = np.argsort(np.argsort(v, kind="stable"), kind="stable")
    return (rank * n_bins // len(v)).astype(np.int64)


def tile_labels(store, lot_idx: np.ndarray, target: str = "lot", n_bins: int = 3
                ) -> tuple[np.ndarray, list[str]]:
    """Labels of tiles (given their lot indices) and the class names."""
    if target == "lot":
        return lot_idx.astype(np.int64), list(store.lot_ids)
    bins = attribute_bins(store, target, n_bins)
    return bins[lot_idx], [f"{target} bin {b}" for b in range(n_bins)]


# ---- cross-validated forests ---------------------------------------------------------------------


def make_forest(n_estimators: int = 400, seed: int = 0, n_jobs: int = 1):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=int(n_estimators), random_state=int(seed),
                                  n_jobs=int(n_jobs))


def cv_f1(X: np.ndarray, y: np.ndarray, n_estimators: int = 400, n_trials: int = 10,
          n_folds: int = 3, seed: int = 0, n_jobs: int = 1) -> dict:
    """Macro F1 of a random forest over ``n_trials`` of stratified ``n_folds``-fold CV.

    Each trial reshuffles the folds (``seed + trial``) and scores the pooled out-of-fold
    predictions; returns ``{"mean", "std", "trials"}``."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        raise UserError("classification needs at least 2 classes")
    if counts.min() < n_folds:
        raise UserError(f"every class needs at least n_folds = {n_folds} tiles, the smallest "
                        f"has {counts.min()}")
    scores = []
    for t in range(int(n_trials)):
        skf = StratifiedKFold(n_splits=int(n_folds), shuffle=True, random_state=int(seed) + t)
        pred = np.empty_like(y)
        for tr, te in skf.split(X, y):
            rf = make_forest(n_estimators, int(seed) + t, n_jobs).fit(X[tr], y[tr])
            pred[te] = rf.predict(X[te])
        scores.append(float(f1_score(y, pred, average="macro")))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "trials": scores}


def feature_grid(store, layers: Sequence[str] = GRID_LAYERS,
                 featurizations: Sequence[str] = FEATURIZATIONS, target="lot",
                 n_bins: int = 3, vgg: VGG | None = None, n_estimators: int = 400,
                 n_trials: int = 10, n_folds: int = 3, max_tiles_per_lot: int | None = None,
                 cache_dir: str | Path | None = None, batch_size: int = 64, n_words: int = 32,
                 union: bool = True, seed: int = 0, n_jobs: int = 1, progress: bool = False):
    """F1 of every (layer x featurization) cell (+ a row ``all`` = union of the VGG layers for the
    ``mean`` and ``max`` featurizations, Figure 7) as an ``xarray.Dataset`` with ``f1_mean``,
    ``f1_std``, ``n_features``, ``seconds`` over ``(layer, featurization)``.

    ``target`` is ``"lot"``, an attribute name, or a list of them: then a dict target -> Dataset,
    every cell's features computed once for all targets."""
    from tqdm.auto import tqdm

    if vgg is None:
        from .vgg import load_vgg

        vgg = load_vgg(seed=seed)
    targets = [target] if isinstance(target, str) else list(target)
    layers = list(layers)
    rows = layers + (["all"] if union else [])
    vgg_layers = [n for n in layers if n != "image"]
    shape = (len(rows), len(featurizations))
    acc = {t: {"f1_mean": np.full(shape, np.nan), "f1_std": np.full(shape, np.nan),
               "n_features": np.zeros(shape, np.int64), "seconds": np.full(shape, np.nan)}
           for t in targets}
    cells = [(r, f) for r in rows for f in featurizations
             if r != "all" or (f in ("mean", "max") and vgg_layers)]
    labels: dict[str, tuple[np.ndarray, list[str]]] = {}
    for r, f in tqdm(cells, desc="grid", disable=not progress):
        t0 = time.perf_counter()
        lay = vgg_layers if r == "all" else [r]
        feat = Featurizer(vgg, lay, f, n_words=n_words, seed=seed)
        fit_featurizer(feat, store, max_tiles_per_lot=max_tiles_per_lot, batch_size=batch_size)
        cache = None if cache_dir is None else Path(cache_dir) / f"features_{r}_{f}.zarr"
        X, lot_idx = extract_features(store, feat, cache, max_tiles_per_lot, batch_size)
        t_feat = time.perf_counter() - t0
        i, j = rows.index(r), list(featurizations).index(f)
        for t in targets:
            t1 = time.perf_counter()
            if t not in labels:
                labels[t] = tile_labels(store, lot_idx, t, n_bins)
            res = cv_f1(X, labels[t][0], n_estimators, n_trials, n_folds, seed, n_jobs)
            a = acc[t]
            a["f1_mean"][i, j], a["f1_std"][i, j] = res["mean"], res["std"]
            a["n_features"][i, j] = X.shape[1]
            a["seconds"][i, j] = t_feat + time.perf_counter() - t1
    out = {t: _grid_dataset(acc[t], rows, featurizations, t, labels.get(t), store, vgg,
                            n_bins, n_estimators, n_trials, n_folds) for t in targets}
    return out[targets[0]] if isinstance(target, str) else out


def _grid_dataset(a, rows, featurizations, target, labels, store, vgg, n_bins, n_estimators,
                  n_trials, n_folds):
    import xarray as xr

    dims = ("layer", "featurization")
    y, names = labels if labels is not None else (np.zeros(0), [])
    return xr.Dataset(
        {k: (dims, v) for k, v in a.items()},
        coords={"layer": np.array(rows, dtype=str),
                "featurization": np.array(list(featurizations), dtype=str)},
        attrs={"target": target, "n_bins": int(n_bins), "n_classes": len(names),
               "n_estimators": int(n_estimators), "n_trials": int(n_trials),
               "n_folds": int(n_folds), "vgg": vgg.arch,
               "vgg_weights": str(getattr(vgg, "source", "?")),
               "store": str(store.path), "n_tiles": int(len(y))})


def save_grid(ds, path: str | Path) -> Path:
    from mxplain.zarrio import quiet

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet():
        ds.to_zarr(path, mode="w")
    return path


def plot_grid(ds, path: str | Path, title: str | None = None) -> Path:
    """Heat-map of ``f1_mean`` (layer x featurization) with ``mean±std`` written in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, s = ds["f1_mean"].values, ds["f1_std"].values
    fig, ax = plt.subplots(figsize=(1.6 * m.shape[1] + 2, 0.55 * m.shape[0] + 1.6))
    im = ax.imshow(np.ma.masked_invalid(m), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2f}±{s[i, j]:.2f}", ha="center", va="center",
                        color="white" if m[i, j] < 0.6 else "black", fontsize=8)
    ax.set_xticks(range(m.shape[1]), [str(x) for x in ds["featurization"].values])
    ax.set_yticks(range(m.shape[0]), [str(x) for x in ds["layer"].values])
    ax.set_xlabel("featurization")
    ax.set_ylabel("VGG layer")
    ax.set_title(title or f"RF macro F1, target={ds.attrs.get('target')} "
                 f"({ds.attrs.get('n_trials')}x{ds.attrs.get('n_folds')}-fold CV)", fontsize=9)
    fig.colorbar(im, ax=ax, label="F1")
    return save_figure(fig, path, dpi=120)


# ---- interpretability ----------------------------------------------------------------------------


def important_features(forest, featurizer: Featurizer, k: int = 3) -> list[dict]:
    """The ``k`` most important features of a fitted forest (impurity importance), each mapped
    back to its layer and filter(s)."""
    imp = np.asarray(forest.feature_importances_)
    order = np.argsort(-imp, kind="stable")[:k]
    names = featurizer.feature_names()
    out = []
    for rank, idx in enumerate(order):
        d = featurizer.describe(int(idx))
        out.append({"rank": rank + 1, "index": int(idx), "name": names[idx],
                    "importance": float(imp[idx]), **d})
    return out


def characteristic_features(X: np.ndarray, y: np.ndarray, candidates: Sequence[int] | None = None
                            ) -> dict[int, dict]:
    """For each class: the feature (among ``candidates``, default all) whose class mean exceeds the
    mean of the other classes by most, in units of the feature's overall std."""
    X = np.asarray(X, np.float64)
    cand = np.arange(X.shape[1]) if candidates is None else np.asarray(candidates)
    sd = X[:, cand].std(0) + 1e-12
    out = {}
    for c in np.unique(y):
        diff = (X[y == c][:, cand].mean(0) - X[y != c][:, cand].mean(0)) / sd
        j = int(np.argmax(diff))
        out[int(c)] = {"index": int(cand[j]), "score": float(diff[j]),
                       "class_mean": float(X[y == c, cand[j]].mean()),
                       "other_mean": float(X[y != c, cand[j]].mean())}
    return out


def _act_name(featurizer: Featurizer, layer: str) -> str | None:
    return featurizer.acts[featurizer.layers.index(layer)]


def activation_map(vgg: VGG, tile: torch.Tensor, layer: str, filter: int) -> np.ndarray:
    """Response of ``filter`` of VGG activation ``layer`` (e.g. ``relu3_3``) over one tile
    ``(1, H, W)`` or ``(H, W)``: an ``(h, w)`` array (Figure 10)."""
    t = tile.reshape(1, 1, *tile.shape[-2:]).float().to(next(vgg.parameters()).device)
    with torch.no_grad():
        a = vgg(t, [layer])[layer]
    return a[0, int(filter)].cpu().numpy()


def maximize_activation(vgg: VGG, layer: str, filters: Sequence[int] | int, size: int = 64,
                        steps: int = 150, lr: float = 0.05, seed: int = 0,
                        tv_weight: float = 0.0) -> np.ndarray:
    """The grey image in [0, 1] that maximises the mean activation of ``filters`` of ``layer`` (a
    product of two filters for a Gram feature), found by gradient ascent (Adam) from seeded noise,
    as in the seed's Keras recipe; ``(size, size)``."""
    filters = [int(filters)] if np.isscalar(filters) else [int(f) for f in filters]
    device = next(vgg.parameters()).device
    g = torch.Generator().manual_seed(int(seed))
    z = (0.1 * torch.randn(1, 1, size, size, generator=g)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(int(steps)):
        x = torch.sigmoid(z)
        a = vgg(x, [layer])[layer][0]
        act = a[filters[0]] if len(filters) == 1 else a[filters[0]] * a[filters[1]]
        loss = -act.mean()
        if tv_weight:
            loss = loss + tv_weight * ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
                                       + (x[..., 1:] - x[..., :-1]).abs().mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.sigmoid(z).detach()[0, 0].cpu().numpy()


def interpret(store, featurizer: Featurizer, X: np.ndarray, y: np.ndarray, lot_idx: np.ndarray,
              class_names: Sequence[str], figures_dir: str | Path, prefix: str = "vgg",
              n_estimators: int = 400, k: int = 3, steps: int = 150, seed: int = 0,
              n_jobs: int = 1) -> dict:
    """Fit a forest on all tiles and write the seed's interpretation figures:

    ``{prefix}_important_textures.png`` (Fig. 9: the ``k`` most important features' textures by
    activation maximisation), ``{prefix}_activation_map.png`` (Fig. 10: a tile and the response of
    the top feature's filter), ``{prefix}_characteristic_textures.png`` (Figs. 11/12: per class a
    sample tile above the texture of its most characteristic feature).  Returns the numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mxplain.store import to_tensor

    figures_dir = Path(figures_dir)
    vgg = featurizer.vgg
    size = store.tile_size
    rf = make_forest(n_estimators, seed, n_jobs).fit(X, y)
    top = important_features(rf, featurizer, k)
    for t in top:
        act = _act_name(featurizer, t["layer"])
        if act is None:  # the raw image has no filter to visualise
            t["texture"] = None
            continue
        t["texture"] = maximize_activation(vgg, act, t["filters"], size, steps, seed=seed)
        t["class_means"] = [float(X[y == c, t["index"]].mean()) for c in np.unique(y)]
    # Figure 9
    fig, axes = plt.subplots(1, len(top), figsize=(3 * len(top), 3.8), squeeze=False)
    for ax, t in zip(axes[0], top):
        if t["texture"] is not None:
            ax.imshow(t["texture"], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"#{t['rank']} {t['name']}\nimportance {t['importance']:.3f}", fontsize=8)
        ax.axis("off")
    p9 = save_figure(fig, figures_dir / f"{prefix}_important_textures.png", dpi=110)
    # Figure 10: the tile of the class where the top feature is strongest
    t0 = top[0]
    j = int(np.argmax(X[:, t0["index"]]))
    lot = int(lot_idx[j])
    within = int(j - np.flatnonzero(lot_idx == lot)[0])
    tile = to_tensor(store.tiles(lot)[within:within + 1])[0]
    act = _act_name(featurizer, t0["layer"])
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.5))
    axes[0].imshow(tile[0].numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(f"lot {store.lot_ids[lot]} tile {within}", fontsize=9)
    if act is not None:
        amap = activation_map(vgg, tile, act, t0["filter"])
        im = axes[1].imshow(amap, cmap="inferno", extent=(0, size, size, 0))
        fig.colorbar(im, ax=axes[1], fraction=0.046)
        axes[1].set_title(f"{t0['layer']} filter {t0['filter']} activation", fontsize=9)
    for ax in axes:
        ax.axis("off")
    p10 = save_figure(fig, figures_dir / f"{prefix}_activation_map.png", dpi=110)
    # Figures 11/12: characteristic textures among the forest's 50 most important features
    cand = np.argsort(-rf.feature_importances_, kind="stable")[:50]
    char = characteristic_features(X, y, cand)
    classes = sorted(char)
    fig, axes = plt.subplots(2, len(classes), figsize=(2.6 * len(classes), 5.6), squeeze=False)
    for col, c in enumerate(classes):
        d = featurizer.describe(char[c]["index"])
        char[c].update(d)
        i = int(np.flatnonzero(y == c)[0])
        lot = int(lot_idx[i])
        axes[0, col].imshow(store.tiles(lot)[0], cmap="gray", vmin=0, vmax=255)
        axes[0, col].set_title(str(class_names[c]), fontsize=8)
        a = _act_name(featurizer, d["layer"])
        if a is not None:
            tex = maximize_activation(vgg, a, d["filters"], size, steps, seed=seed)
            axes[1, col].imshow(tex, cmap="gray", vmin=0, vmax=1)
        axes[1, col].set_title(f"{d['layer']} f{d['filter']} (+{char[c]['score']:.1f} sd)",
                               fontsize=8)
        for ax in axes[:, col]:
            ax.axis("off")
    p11 = save_figure(fig, figures_dir / f"{prefix}_characteristic_textures.png", dpi=110)
    return {"important": [{k_: v for k_, v in t.items() if k_ != "texture"} for t in top],
            "characteristic": {str(class_names[c]): char[c] for c in classes},
            "figures": [str(p9), str(p10), str(p11)]}
