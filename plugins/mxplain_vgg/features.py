"""Translation-invariant texture featurizations of VGG16 layer outputs (Ling et al., seed 002).

Layers (paper names -> VGG activations; the paper's ``C_{b,c}`` is the ReLU output of conv b_c):

    ``image`` (the untransformed tile, one channel), ``C1_2`` = relu1_2 (64 filters),
    ``C2_2`` = relu2_2 (128), ``C3_3`` = relu3_3 (256), ``C4_3`` = relu4_3 (512),
    ``C5_3`` = relu5_3 (512).  Any VGG layer name (``conv3_3`` -> its ReLU, ``relu3_3``,
    ``pool3``) is accepted too; several layers give the union (concatenation) of their features.

Featurizations of a layer output ``F`` (C filters x J positions):

    ``mean``  mean_j F_ij                       C features
    ``max``   max_j F_ij                        C features
    ``gram``  G = F F^T / J, upper triangle     C (C + 1) / 2 features (G is symmetric)
    ``vlad``  residuals to a k-means dictionary of ``n_words`` (32) visual words, summed per
              word, each word's residual L2-normalised (intra-normalisation), then the whole vector
              L2-normalised                       C * n_words features

Features are computed in batches on the VGG's device and cached lot by lot in a zarr cube
``features (lot, tile, feature)`` (:func:`extract_features`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mxplain.errors import UserError

from .vgg import LAYER_NAMES, VGG

FEATURIZATIONS = ("mean", "max", "gram", "vlad")
PAPER_LAYERS = {"image": None, "C1_2": "relu1_2", "C2_2": "relu2_2", "C3_3": "relu3_3",
                "C4_3": "relu4_3", "C5_3": "relu5_3"}
GRID_LAYERS = tuple(PAPER_LAYERS)
FLAG = "lot_done"


def resolve_layer(name: str, arch: str = "vgg16") -> str | None:
    """Paper or VGG layer name -> VGG activation name (``None`` for the raw image)."""
    if name in PAPER_LAYERS:
        return PAPER_LAYERS[name]
    if name in ("raw", "input"):
        return None
    if name.startswith("conv") and name in LAYER_NAMES[arch]:
        return "relu" + name[4:]  # the paper's C_{b,c} is the ReLU output
    if name in LAYER_NAMES[arch]:
        return name
    raise UserError(f"layer {name!r} is unknown: use one of {list(PAPER_LAYERS)} or a VGG layer "
                    f"name such as 'conv3_3'")


def _check_featurization(featurization: str) -> None:
    if featurization not in FEATURIZATIONS:
        raise UserError(f"featurization {featurization!r} is unknown: use one of "
                        f"{list(FEATURIZATIONS)}")


# ---- single featurizations of an activation batch (N, C, H, W) --------------------------------
def feat_mean(a: torch.Tensor) -> torch.Tensor:
    return a.mean(dim=(2, 3))


def feat_max(a: torch.Tensor) -> torch.Tensor:
    return a.amax(dim=(2, 3))


def gram_matrix(a: torch.Tensor) -> torch.Tensor:
    n, c, h, w = a.shape
    f = a.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (h * w)


def feat_gram(a: torch.Tensor) -> torch.Tensor:
    c = a.shape[1]
    iu = torch.triu_indices(c, c, device=a.device)
    return gram_matrix(a)[:, iu[0], iu[1]]


def local_descriptors(a: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W, C) local descriptors."""
    n, c, h, w = a.shape
    return a.reshape(n, c, h * w).transpose(1, 2)


def feat_vlad(a: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """VLAD encoding with hard assignment, intra-normalisation and a final L2 normalisation."""
    d = local_descriptors(a)  # (N, J, C)
    k = centers.shape[0]
    assign = torch.cdist(d, centers[None].expand(len(d), -1, -1)).argmin(dim=2)  # (N, J)
    onehot = torch.nn.functional.one_hot(assign, k).to(d.dtype)  # (N, J, K)
    v = onehot.transpose(1, 2) @ d - onehot.sum(1)[..., None] * centers[None]  # (N, K, C)
    v = v / v.norm(dim=2, keepdim=True).clamp_min(1e-12)
    v = v.reshape(len(d), -1)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


class Featurizer:
    """VGG layer outputs -> texture feature vectors; holds the VLAD dictionaries when fitted.

    ``layers``: names (see :func:`resolve_layer`); ``featurization``: one of ``FEATURIZATIONS``.
    """

    def __init__(self, vgg: VGG, layers: Sequence[str] = ("C3_3",), featurization: str = "mean",
                 n_words: int = 32, seed: int = 0, vlad_sample: int = 20000):
        _check_featurization(featurization)
        if isinstance(layers, str):
            layers = (layers,)
        if not layers:
            raise UserError("layers is empty: name at least one layer, e.g. ['C3_3']")
        self.vgg = vgg
        self.layers = tuple(layers)
        self.acts = tuple(resolve_layer(n, vgg.arch) for n in self.layers)
        self.featurization = featurization
        self.n_words = int(n_words)
        self.seed = int(seed)
        self.vlad_sample = int(vlad_sample)
        self.centers: dict[str, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.vgg.parameters()).device

    def activations(self, tiles: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of every requested layer (``"image"`` -> the tile itself)."""
        tiles = tiles.to(self.device, torch.float32)
        names = [a for a in self.acts if a is not None]
        out = self.vgg(tiles, names) if names else {}
        return {n: (tiles if a is None else out[a]) for n, a in zip(self.layers, self.acts)}

    def channels(self, layer: str) -> int:
        a = resolve_layer(layer, self.vgg.arch)
        return 1 if a is None else self.vgg.channels(a)

    @property
    def needs_fit(self) -> bool:
        return self.featurization == "vlad"

    def fit(self, tile_batches, progress: bool = False) -> Featurizer:
        """Fit the VLAD dictionary of each layer (MiniBatchKMeans, ``n_words`` words) on a random
        sample of at most ``vlad_sample`` local descriptors from ``tile_batches`` (an iterable of
        ``(n, 1, H, W)`` tensors). A no-op for the other featurizations."""
        if not self.needs_fit:
            return self
        from sklearn.cluster import MiniBatchKMeans
        from tqdm.auto import tqdm

        rng = np.random.default_rng(self.seed)
        pools: dict[str, list[np.ndarray]] = {n: [] for n in self.layers}
        batches = list(tile_batches)
        per_batch = max(1, self.vlad_sample // max(1, len(batches)))
        with torch.no_grad():
            for t in tqdm(batches, desc="vlad descriptors", disable=not progress, leave=False):
                for n, a in self.activations(t).items():
                    d = local_descriptors(a).reshape(-1, a.shape[1]).cpu().numpy()
                    take = rng.choice(len(d), size=min(per_batch, len(d)), replace=False)
                    pools[n].append(d[take])
        for n in self.layers:
            d = np.concatenate(pools[n]).astype(np.float32)
            if len(d) < self.n_words:
                raise UserError(f"VLAD needs at least n_words={self.n_words} descriptors, "
                                f"layer {n} gave {len(d)}")
            km = MiniBatchKMeans(n_clusters=self.n_words, random_state=self.seed, n_init=3,
                                 batch_size=1024).fit(d)
            self.centers[n] = torch.from_numpy(km.cluster_centers_.astype(np.float32))
        return self

    def _one(self, layer: str, a: torch.Tensor) -> torch.Tensor:
        f = self.featurization
        if f == "mean":
            return feat_mean(a)
        if f == "max":
            return feat_max(a)
        if f == "gram":
            return feat_gram(a)
        if layer not in self.centers:
            raise RuntimeError("VLAD featurizer is not fitted: call fit() first")
        return feat_vlad(a, self.centers[layer].to(a.device))

    def transform_tensor(self, tiles: torch.Tensor) -> torch.Tensor:
        """Features of one batch, as a tensor on the VGG's device (differentiable in the tiles
        for mean/max/gram)."""
        acts = self.activations(tiles)
        return torch.cat([self._one(n, acts[n]) for n in self.layers], dim=1)

    def transform(self, tiles: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """``(N, 1, H, W)`` tiles -> ``(N, F)`` float32 features."""
        out = []
        with torch.no_grad():
            for i in range(0, len(tiles), batch_size):
                out.append(self.transform_tensor(tiles[i:i + batch_size]).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.n_features), np.float32)
        return np.concatenate(out).astype(np.float32)

    def feature_size(self, layer: str) -> int:
        c = self.channels(layer)
        return {"mean": c, "max": c, "gram": c * (c + 1) // 2, "vlad": c * self.n_words}[
            self.featurization]

    @property
    def n_features(self) -> int:
        return sum(self.feature_size(n) for n in self.layers)

    def feature_names(self) -> list[str]:
        """One name per feature: ``layer:featurization:i`` (mean/max: filter i; gram:
        ``i-j``; vlad: ``word-filter``)."""
        names = []
        for n in self.layers:
            c = self.channels(n)
            if self.featurization in ("mean", "max"):
                names += [f"{n}:{self.featurization}:{i}" for i in range(c)]
            elif self.featurization == "gram":
                iu = np.triu_indices(c)
                names += [f"{n}:gram:{i}-{j}" for i, j in zip(*iu)]
            else:
                names += [f"{n}:vlad:{k}-{i}" for k in range(self.n_words) for i in range(c)]
        return names

    def describe(self, index: int) -> dict:
        """Map feature ``index`` back to its layer and filter(s)."""
        for n in self.layers:
            size = self.feature_size(n)
            if index < size:
                c = self.channels(n)
                if self.featurization in ("mean", "max"):
                    return {"layer": n, "filter": int(index), "filters": [int(index)]}
                if self.featurization == "gram":
                    iu = np.triu_indices(c)
                    i, j = int(iu[0][index]), int(iu[1][index])
                    return {"layer": n, "filter": i, "filters": [i, j]}
                w, i = divmod(int(index), c)
                return {"layer": n, "filter": i, "filters": [i], "word": w}
            index -= size
        raise IndexError("feature index out of range")

    # ---- plain-data state (VLAD dictionaries) -------------------------------------------------
    def state_dict(self) -> dict:
        return {"centers": {n: c.cpu() for n, c in self.centers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.centers = {str(n): torch.as_tensor(c, dtype=torch.float32)
                        for n, c in state.get("centers", {}).items()}


def _store_tiles(store, lot: int, limit: int | None) -> torch.Tensor:
    from mxplain.store import to_tensor

    t = store.tiles(lot)
    return to_tensor(t[:limit] if limit else t)


def fit_featurizer(featurizer: Featurizer, store, lots=None, max_tiles_per_lot: int | None = None,
                   batch_size: int = 64, progress: bool = False) -> Featurizer:
    """Fit the featurizer's VLAD dictionary on the store's tiles (streamed lot by lot)."""
    if not featurizer.needs_fit:
        return featurizer
    lots = range(store.n_lots) if lots is None else lots

    def batches():
        for i in lots:
            t = _store_tiles(store, i, max_tiles_per_lot)
            for j in range(0, len(t), batch_size):
                yield t[j:j + batch_size]

    return featurizer.fit(batches(), progress=progress)


def _cache_key(featurizer: Featurizer, store, max_tiles_per_lot) -> str:
    payload = {"store": str(Path(store.path).resolve()), "layers": featurizer.layers,
               "featurization": featurizer.featurization, "arch": featurizer.vgg.arch,
               "source": getattr(featurizer.vgg, "source", "?"), "n_words": featurizer.n_words,
               "max_tiles": max_tiles_per_lot,
               "centers": [float(c.sum()) for c in featurizer.centers.values()]}
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def extract_features(store, featurizer: Featurizer, path: str | Path | None = None,
                     max_tiles_per_lot: int | None = None, batch_size: int = 64,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features of every real tile, streamed lot by lot: ``(N, F)`` float32 and the tile's lot
    index ``(N,)``.  With ``path`` they are cached in a zarr cube ``features (lot, tile, feature)``
    (one region write per lot, ``lot_done`` flags); a cube of the same store/featurizer is reused
    and only its missing lots are computed."""
    from tqdm.auto import tqdm

    from mxplain import zarrio

    counts = np.array([min(c, max_tiles_per_lot) if max_tiles_per_lot else c
                       for c in store.counts])
    nf = featurizer.n_features
    key = _cache_key(featurizer, store, max_tiles_per_lot)
    done = np.zeros(store.n_lots, bool)
    if path is not None:
        path = Path(path)
        fresh = True
        if path.exists():
            try:
                fresh = zarrio.read_attrs(path).get("cache_key") != key
            except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt
                fresh = True
        if fresh:
            from mxplain.outputs import prepare_store

            prepare_store(path, "cache_key", "VGG feature cache", resume=False)
            sizes = {"lot": store.n_lots, "tile": int(counts.max()), "feature": nf}
            coords = {"lot": np.array(store.lot_ids, dtype=str)}
            import xarray as xr

            data = {"tile_count": xr.DataArray(counts.astype(np.int32), dims=("lot",))}
            zarrio.create_template(path, {"features": (("lot", "tile", "feature"), "float32")},
                                   sizes, coords,
                                   {"cache_key": key, "layers": list(featurizer.layers),
                                    "featurization": featurizer.featurization}, FLAG,
                                   chunks={"feature": min(nf, 65536)}, data=data)
        else:
            done = zarrio.lots_done(path, FLAG)
    feats: list[np.ndarray | None] = [None] * store.n_lots
    for i in tqdm(range(store.n_lots), desc=f"features {featurizer.featurization}",
                  disable=not progress, leave=False):
        if done[i]:
            continue
        f = featurizer.transform(_store_tiles(store, i, max_tiles_per_lot), batch_size)
        feats[i] = f
        if path is not None:
            pad = np.full((int(counts.max()) - len(f), nf), np.nan, np.float32)
            zarrio.write_lot(path, i, {"features": (("tile", "feature"),
                                                    np.concatenate([f, pad]))}, FLAG)
    if path is not None and done.any():
        ds = zarrio.open_dataset(path)
        for i in np.flatnonzero(done):
            feats[i] = np.asarray(ds["features"][i, : counts[i]].values)
    X = np.concatenate(feats).astype(np.float32)
    lots = np.concatenate([np.full(c, i, np.int64) for i, c in enumerate(counts)])
    return X, lots
