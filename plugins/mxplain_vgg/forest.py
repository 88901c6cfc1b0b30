"""Random forests as plain data: sklearn trees -> arrays -> a small numpy predictor.

A fitted ``RandomForestRegressor``/``Classifier`` is flattened into one node table over all trees
(``left``, ``right``, ``feature``, ``threshold``, ``value``, ``roots``) that
``torch.load(weights_only=True)`` can read; :class:`ForestArrays` predicts from it by walking every
tree at once, one level per step.  Splits follow sklearn exactly: features are cast to float32
and go left when ``x[feature] <= threshold``.
"""

from __future__ import annotations

import numpy as np
import torch


class ForestArrays:
    """A regression forest (mean of the trees' leaf values) as flat node arrays."""

    def __init__(self, left, right, feature, threshold, value, roots, n_features: int):
        self.left = np.asarray(left, np.int64)
        self.right = np.asarray(right, np.int64)
        self.feature = np.asarray(feature, np.int64)
        self.threshold = np.asarray(threshold, np.float64)
        self.value = np.asarray(value, np.float64)
        self.roots = np.asarray(roots, np.int64)
        self.n_features = int(n_features)

    @classmethod
    def from_sklearn(cls, forest) -> ForestArrays:
        lefts, rights, feats, ths, vals, roots = [], [], [], [], [], []
        offset = 0
        for est in forest.estimators_:
            t = est.tree_
            n = t.node_count
            leaf = t.children_left == -1
            lefts.append(np.where(leaf, -1, t.children_left + offset))
            rights.append(np.where(leaf, -1, t.children_right + offset))
            feats.append(np.where(leaf, 0, t.feature))
            ths.append(np.where(leaf, 0.0, t.threshold))
            vals.append(t.value[:, 0, 0])
            roots.append(offset)
            offset += n
        return cls(np.concatenate(lefts), np.concatenate(rights), np.concatenate(feats),
                   np.concatenate(ths), np.concatenate(vals), np.array(roots),
                   forest.n_features_in_)

    @property
    def n_trees(self) -> int:
        return len(self.roots)

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Leaf node (global index) of every sample in every tree: ``(N, n_trees)``."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"forest expects (N, {self.n_features}) features, got {X.shape}")
        node = np.broadcast_to(self.roots, (len(X), self.n_trees)).copy()
        rows = np.arange(len(X))[:, None]
        while True:
            active = self.left[node] >= 0
            if not active.any():
                return node
            x = X[rows, self.feature[node]].astype(np.float64)
            go_left = x <= self.threshold[node]
            nxt = np.where(go_left, self.left[node], self.right[node])
            node = np.where(active, nxt, node)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.value[self.apply(X)].mean(axis=1)

    def state_dict(self) -> dict:
        return {"left": torch.from_numpy(self.left), "right": torch.from_numpy(self.right),
                "feature": torch.from_numpy(self.feature),
                "threshold": torch.from_numpy(self.threshold),
                "value": torch.from_numpy(self.value), "roots": torch.from_numpy(self.roots),
                "n_features": self.n_features}

    @classmethod
    def from_state(cls, state: dict) -> ForestArrays:
        def arr(k):
            v = state[k]
            return v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

        return cls(arr("left"), arr("right"), arr("feature"), arr("threshold"), arr("value"),
                   arr("roots"), int(state["n_features"]))
