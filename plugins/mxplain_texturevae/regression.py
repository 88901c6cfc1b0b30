"""Structure-property regressions in torch (seed 003 §4.4, Tables 2-3): from a feature vector per
tile (TextureVAE latents or VGG19 features) to the property.

* ``linear``: ridge regression ``y = w . z + b``;
* ``rbf``: kernel ridge regression with the RBF kernel ``k(a, b) = exp(-gamma |a - b|^2)``:
  ``y = b + sum_i alpha_i k(z, z_i)`` over the training tiles, ``alpha = (K + lambda I)^-1 (t - b)``;
* ``svr``: scikit-learn's epsilon-SVR with the same kernel (the seed's model), kept as plain
  arrays (support vectors, dual coefficients, intercept, gamma) and evaluated with the same
  formula, so the fitted model predicts exactly what scikit-learn does.

Features are standardised (training mean and standard deviation), the target too; ``gamma`` is
given as a multiple ``g`` of ``1 / D`` (``D`` features: the mean squared distance of two
standardised tiles is ``2 D``). Every prediction is a torch expression of the features (float64),
differentiable with respect to them. Hyperparameters are chosen by grouped cross-validation
(:func:`select`: folds of whole lots, scikit-learn's ``GroupKFold``).
"""

from __future__ import annotations

import numpy as np
import torch

KINDS = ("linear", "rbf", "svr")


def rbf_kernel(a: torch.Tensor, b: torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
    """``exp(-gamma |a_i - b_j|^2)`` ``(n, m)``; no square root, so gradients exist at 0."""
    d2 = (a * a).sum(1, keepdim=True) - 2.0 * a @ b.T + (b * b).sum(1)[None]
    return torch.exp(-gamma * d2.clamp_min(0.0))


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).clone()


def standardiser(f: np.ndarray, y: np.ndarray) -> dict[str, torch.Tensor]:
    """Feature and target means and standard deviations of training rows (constant features get
    a unit scale)."""
    f_std = f.std(0)
    f_std = np.where(f_std > 1e-12 * max(float(np.abs(f).max(initial=0.0)), 1.0), f_std, 1.0)
    y_std = float(y.std()) or 1.0
    return {"f_mean": _t(f.mean(0)), "f_std": _t(f_std), "y_mean": _t(float(y.mean())),
            "y_std": _t(y_std)}


def fit_head(kind: str, z: np.ndarray, t: np.ndarray, alpha: float = 1.0, g: float = 1.0,
             c: float = 1.0, epsilon: float = 0.1) -> dict[str, torch.Tensor]:
    """Fit one regression of standardised targets ``t`` on standardised features ``z``; plain
    tensors: ``w``, ``b`` (linear) or ``centers``, ``dual``, ``b``, ``gamma`` (rbf, svr)."""
    n, d = z.shape
    if kind == "linear":
        zm, tm = z.mean(0), t.mean()
        zc = z - zm
        w = np.linalg.solve(zc.T @ zc + alpha * np.eye(d), zc.T @ (t - tm)) if d <= n else \
            zc.T @ np.linalg.solve(zc @ zc.T + alpha * np.eye(n), t - tm)
        return {"w": _t(w), "b": _t(tm - zm @ w)}
    gamma = float(g) / d
    if kind == "rbf":
        k = rbf_kernel(_t(z), _t(z), gamma).numpy()
        tm = float(t.mean())
        dual = np.linalg.solve(k + alpha * np.eye(n), t - tm)
        return {"centers": _t(z), "dual": _t(dual), "b": _t(tm), "gamma": _t(gamma)}
    if kind == "svr":
        from sklearn.svm import SVR

        m = SVR(kernel="rbf", C=float(c), gamma=gamma, epsilon=float(epsilon)).fit(z, t)
        return {"centers": _t(m.support_vectors_), "dual": _t(m.dual_coef_[0]),
                "b": _t(float(m.intercept_[0])), "gamma": _t(gamma)}
    raise ValueError(f"unknown regression kind {kind!r}; use one of {list(KINDS)}")


def predict_head(head: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """The fitted regression on standardised features ``z`` ``(N, D)`` (float64) -> ``(N,)``."""
    if "w" in head:
        return z @ head["w"] + head["b"]
    return rbf_kernel(z, head["centers"], head["gamma"]) @ head["dual"] + head["b"]


def predict(state: dict[str, torch.Tensor], f: torch.Tensor) -> torch.Tensor:
    """Property from raw features ``f`` ``(N, D)`` with a :func:`fit_model` state (float64)."""
    z = (f.double() - state["f_mean"]) / state["f_std"]
    return state["y_mean"] + state["y_std"] * predict_head(state, z)


def fit_model(kind: str, f: np.ndarray, y: np.ndarray, hyper: dict) -> dict[str, torch.Tensor]:
    """Standardise, fit one ``kind`` regression with ``hyper`` (``alpha``, ``g``, ``c``,
    ``epsilon``) and return the whole state (plain tensors, float64)."""
    f = np.asarray(f, np.float64)
    y = np.asarray(y, np.float64)
    st = standardiser(f, y)
    z = (f - st["f_mean"].numpy()) / st["f_std"].numpy()
    t = (y - float(st["y_mean"])) / float(st["y_std"])
    return {**st, **fit_head(kind, z, t, **hyper)}


def predict_numpy(state: dict[str, torch.Tensor], f: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return predict(state, torch.as_tensor(np.asarray(f, np.float64))).numpy()


def grid(kind: str, alphas, gammas, cs, epsilon: float) -> list[dict]:
    """Every hyperparameter combination :func:`select` tries for ``kind``."""
    if kind == "linear":
        return [{"alpha": float(a)} for a in alphas]
    if kind == "rbf":
        return [{"alpha": float(a), "g": float(g)} for g in gammas for a in alphas]
    return [{"c": float(c), "g": float(g), "epsilon": float(epsilon)} for g in gammas for c in cs]


def select(kind: str, f: np.ndarray, y: np.ndarray, groups: np.ndarray, candidates: list[dict],
           folds: int = 5) -> tuple[dict, list[dict]]:
    """Cross-validated choice among ``candidates``, folds of whole lots (``groups``): the one of
    lowest mean squared error over the held-out folds; returns it and every candidate's CV MSE
    (in property units squared). With fewer than 2 lots the first candidate is returned."""
    from sklearn.model_selection import GroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < 2 or len(candidates) == 1:
        return dict(candidates[0]), []
    splits = list(GroupKFold(n_splits=min(int(folds), n_groups)).split(f, y, groups))
    table = []
    for hyper in candidates:
        sq = 0.0
        for tr, te in splits:
            p = predict_numpy(fit_model(kind, f[tr], y[tr], hyper), f[te])
            sq += float(np.sum((p - y[te]) ** 2))
        table.append({**hyper, "cv_mse": sq / len(y)})
    best = min(table, key=lambda r: r["cv_mse"])
    return {k: v for k, v in best.items() if k != "cv_mse"}, table


# ---- scores --------------------------------------------------------------------------------------
def r2(y: np.ndarray, p: np.ndarray) -> float:
    ss = float(np.sum((y - y.mean()) ** 2))
    return float(1.0 - np.sum((p - y) ** 2) / ss) if ss > 0 else float("nan")


def mape(y: np.ndarray, p: np.ndarray) -> float:
    """Mean absolute percentage error (%)."""
    return float(100.0 * np.mean(np.abs(p - y) / np.abs(y)))


def scores(y: np.ndarray, p: np.ndarray, lots: np.ndarray) -> dict:
    """Per-tile R^2, MAPE (%) and RMSE, and the same of the lots' mean predictions."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    ul = np.unique(lots)
    ly = np.array([y[lots == i].mean() for i in ul])
    lp = np.array([p[lots == i].mean() for i in ul])
    return {"tiles": int(len(y)), "r2": r2(y, p), "mape": mape(y, p),
            "rmse": float(np.sqrt(np.mean((p - y) ** 2))), "lots": int(len(ul)),
            "lot_r2": r2(ly, lp) if len(ul) > 2 else float("nan"), "lot_mape": mape(ly, lp)}


def leave_one_lot_out(kind: str, f: np.ndarray, y: np.ndarray, lots: np.ndarray,
                      hyper: dict) -> dict:
    """Seed 003 Table 3: for every lot, the regression (``hyper`` fixed) fitted on the other lots'
    tiles predicts the lot's tiles; scores over all tiles and over the lots' mean predictions."""
    pred = np.empty(len(y))
    for i in np.unique(lots):
        m = lots == i
        pred[m] = predict_numpy(fit_model(kind, f[~m], y[~m], hyper), f[m])
    return scores(y, pred, lots)
