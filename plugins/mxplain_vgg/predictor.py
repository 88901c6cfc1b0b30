"""``texture_rf``: VGG texture features + a random forest regressor of the lot property.

Each tile is featurized (:mod:`mxplain_vgg.features`) and a ``RandomForestRegressor`` learns the
property of the tile's lot.  The forest is stored as plain node arrays (:mod:`mxplain_vgg.forest`)
so checkpoints load with ``torch.load(weights_only=True)``; predictions always go through those
arrays, so a loaded model predicts exactly what the fitted one did.  Not differentiable: the
explainers use their gradient-free paths (forward sweep, SPSA).
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.interfaces import Predictor, RunContext
from mxplain.store import train_val_split

from .features import FEATURIZATIONS, Featurizer, resolve_layer
from .forest import ForestArrays
from .vgg import load_vgg


def _vgg_fingerprint(vgg, acts) -> float:
    """A checksum of the VGG weights the features use (to detect other weights on load)."""
    idx = [vgg.layer_names[a] for a in acts if a is not None]
    last = max(idx) if idx else -1
    total = 0.0
    for i, m in enumerate(vgg.features):
        if i > last:
            break
        for p in m.parameters():
            total += float(p.detach().double().abs().sum().cpu())
    return total


class TextureForestPredictor(Predictor):
    """VGG texture features (``layers`` x ``featurization``) -> random forest -> property.

    Parameters (all ``[predictor]`` keys): ``layers`` (paper names ``C1_2`` ... ``C5_3``,
    ``image`` or VGG names such as ``conv3_3``; several = union), ``featurization``
    (mean/max/gram/vlad), ``n_estimators``, ``max_tiles_per_lot`` (cap per lot for training),
    ``vgg`` (vgg16/vgg19), ``weights`` (torchvision-format file; else hub cache; else random
    filters), ``seed``, ``batch_size``, ``split`` ("tile" or "lots") and ``val_fraction`` for the
    held-out metrics, ``n_words`` (VLAD dictionary size), ``min_samples_leaf``, ``n_jobs``.
    """

    name: ClassVar[str] = "texture_rf"
    differentiable: ClassVar[bool] = False
    test_params: ClassVar[dict] = {"layers": ("conv2_2",), "featurization": "mean",
                                   "n_estimators": 5, "batch_size": 16}

    def __init__(self, layers: tuple | str = ("conv3_3",), featurization: str = "mean",
                 n_estimators: int = 400, max_tiles_per_lot: int | None = None, vgg: str = "vgg16",
                 weights: str | None = None, seed: int = 0, batch_size: int = 64,
                 split: str = "tile", val_fraction: float = 0.2, n_words: int = 32,
                 min_samples_leaf: int = 1, n_jobs: int = 1):
        self.layers = layers
        self.featurization = featurization
        self.n_estimators = n_estimators
        self.max_tiles_per_lot = max_tiles_per_lot
        self.vgg = vgg
        self.weights = weights
        self.seed = seed
        self.batch_size = batch_size
        self.split = split
        self.val_fraction = val_fraction
        self.n_words = n_words
        self.min_samples_leaf = min_samples_leaf
        self.n_jobs = n_jobs
        self._featurizer: Featurizer | None = None
        self._forest: ForestArrays | None = None
        self._fingerprint: float | None = None

    # ---- helpers ------------------------------------------------------------------------------
    @classmethod
    def check_params(cls, params: dict) -> None:
        """Every ``[predictor]`` value, when the config is resolved."""
        cls(**{**cls.param_defaults(), **params})._check_params()

    def _check_params(self) -> None:
        layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers or ())
        if not layers:
            raise UserError("[predictor] layers is empty: name at least one layer, e.g. "
                            "['conv3_3']")
        if not all(isinstance(n, str) for n in layers):
            raise UserError(f"[predictor] layers = {self.layers!r}: layer names are strings, "
                            f"e.g. ['conv3_3']")
        for n in layers:
            resolve_layer(n, self.vgg if self.vgg in ("vgg16", "vgg19") else "vgg16")
        if self.featurization not in FEATURIZATIONS:
            raise UserError(f"[predictor] featurization = {self.featurization!r}: use one of "
                            f"{list(FEATURIZATIONS)}")
        if not isinstance(self.n_estimators, int) or self.n_estimators < 1:
            raise UserError(f"[predictor] n_estimators = {self.n_estimators!r}: must be an "
                            "integer >= 1")
        if self.split not in ("tile", "lots"):
            raise UserError(f"[predictor] split = {self.split!r}: use \"tile\" or \"lots\"")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise UserError(f"[predictor] val_fraction = {self.val_fraction!r}: must be in (0, 1)")

    def _make_featurizer(self, device) -> Featurizer:
        vgg = load_vgg(self.vgg, self.weights, seed=int(self.seed), device=device)
        layers = (self.layers,) if isinstance(self.layers, str) else tuple(self.layers)
        return Featurizer(vgg, layers, self.featurization, n_words=int(self.n_words),
                          seed=int(self.seed))

    def _load_data(self, store) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        from mxplain.store import to_tensor

        tiles, lot_idx = store.all_tiles(max_per_lot=int(self.max_tiles_per_lot or 0),
                                         seed=int(self.seed))
        if len(tiles) < 2:
            raise UserError(f"tile store {str(store.path)!r} holds fewer than 2 tiles to train on")
        y = np.asarray(store.properties, dtype=np.float64)[lot_idx]
        return to_tensor(tiles), y, lot_idx

    def split_indices(self, lot_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return train_val_split(lot_idx, float(self.val_fraction), self.split, int(self.seed) + 1)

    # ---- training -----------------------------------------------------------------------------
    def fit(self, store, ctx: RunContext | None = None) -> dict:
        from sklearn.ensemble import RandomForestRegressor

        ctx = ctx or RunContext()
        self._check_params()
        t0 = time.perf_counter()
        device = torch.device(ctx.device)
        x, y, lot_idx = self._load_data(store)
        tr, va = self.split_indices(lot_idx)
        feat = self._make_featurizer(device)
        if feat.needs_fit:
            bs = int(self.batch_size)
            feat.fit((x[tr][i:i + bs] for i in range(0, len(tr), bs)), progress=ctx.progress)
        t1 = time.perf_counter()
        X = self._features(feat, x, ctx.progress)
        t2 = time.perf_counter()
        rf = RandomForestRegressor(n_estimators=int(self.n_estimators), random_state=int(self.seed),
                                   min_samples_leaf=int(self.min_samples_leaf),
                                   n_jobs=int(self.n_jobs))
        rf.fit(X[tr], y[tr])
        t3 = time.perf_counter()
        self._featurizer = feat
        self._forest = ForestArrays.from_sklearn(rf)
        self._fingerprint = _vgg_fingerprint(feat.vgg, feat.acts)
        self.device = device
        pred = self._forest.predict(X)

        def rmse(idx):
            return float(np.sqrt(np.mean((pred[idx] - y[idx]) ** 2)))

        def mape(idx):
            return float(np.mean(np.abs(pred[idx] - y[idx]) / np.abs(y[idx]).clip(1e-12)) * 100)

        va_lots = np.unique(lot_idx[va])
        lot_pred = np.array([pred[va][lot_idx[va] == i].mean() for i in va_lots])
        lot_true = np.asarray(store.properties, np.float64)[va_lots]
        return {
            "n_features": int(X.shape[1]),
            "n_train_tiles": int(len(tr)),
            "n_val_tiles": int(len(va)),
            "train_rmse": rmse(tr),
            "val_rmse": rmse(va),
            "train_mape": mape(tr),
            "val_mape": mape(va),
            "val_lot_mape": float(np.mean(np.abs(lot_pred - lot_true) / np.abs(lot_true)) * 100),
            "feature_seconds": float(t2 - t1),
            "forest_seconds": float(t3 - t2),
            "train_seconds": float(time.perf_counter() - t0),
            "vgg_weights": str(getattr(feat.vgg, "source", "?")),
        }

    def _features(self, feat: Featurizer, x: torch.Tensor, progress: bool = False) -> np.ndarray:
        from tqdm.auto import tqdm

        bs = int(self.batch_size)
        out = []
        with torch.no_grad():
            for i in tqdm(range(0, len(x), bs), desc="texture_rf features", disable=not progress,
                          leave=False):
                out.append(feat.transform(x[i:i + bs], bs))
        return np.concatenate(out)

    # ---- prediction ---------------------------------------------------------------------------
    def _require(self) -> None:
        if self._forest is None or self._featurizer is None:
            raise RuntimeError("texture_rf is not fitted: call fit() or load()")

    def features(self, tiles: torch.Tensor) -> np.ndarray:
        """The texture features the forest sees, ``(N, F)``."""
        self._require()
        return self._featurizer.transform(tiles.detach().float(), int(self.batch_size))

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        self._require()
        if len(tiles) == 0:
            return torch.zeros(0, dtype=torch.float32, device=tiles.device)
        y = self._forest.predict(self.features(tiles))
        return torch.from_numpy(y.astype(np.float32)).to(tiles.device)

    def to(self, device):
        super().to(device)
        if self._featurizer is not None:
            self._featurizer.vgg.to(self.device)
        return self

    @property
    def forest(self) -> ForestArrays | None:
        return self._forest

    @property
    def featurizer(self) -> Featurizer | None:
        return self._featurizer

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        self._require()
        return {"forest": self._forest.state_dict(),
                "featurizer": self._featurizer.state_dict(),
                "vgg_fingerprint": float(self._fingerprint),
                "vgg_source": str(getattr(self._featurizer.vgg, "source", "?"))}

    def load_state_dict(self, state: dict) -> None:
        feat = self._make_featurizer(self.device)
        feat.load_state_dict(state["featurizer"])
        fp = _vgg_fingerprint(feat.vgg, feat.acts)
        want = float(state["vgg_fingerprint"])
        if abs(fp - want) > 1e-6 * max(1.0, abs(want)):
            raise ValueError(f"the VGG weights found now ({getattr(feat.vgg, 'source', '?')}) are "
                             f"not those the forest was trained on ({state.get('vgg_source')})")
        self._featurizer = feat
        self._forest = ForestArrays.from_state(state["forest"])
        self._fingerprint = fp
