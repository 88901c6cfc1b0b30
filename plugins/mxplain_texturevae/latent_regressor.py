"""``latent_krr``: seed 003's structure-property model (§4.4, Tables 2-3) as a predictor.

Features per tile, then a regression (:mod:`mxplain_texturevae.regression`) to the lot property:

* ``features = "texturevae"``: the posterior mean ``mu`` of a TextureVAE encoder (frozen VGG19
  ``pool5`` -> standardisation -> the trained ``mu`` head). The VAE is trained inside ``fit``,
  unsupervised (the style loss; no property, no labels), on the training tiles only, with the
  editor's parameters overridden by ``[predictor.vae]``; or it is the encoder of a saved
  ``texturevae`` editor (``texturevae_checkpoint``).
* ``features = "vgg"``: the frozen VGG19 ``pool5`` features themselves (the seed's comparison).

``regression`` (not ``kind``: every component's ``kind`` is its interface, ``"predictor"``):
``"linear"`` (ridge), ``"rbf"`` (kernel ridge, RBF kernel) or ``"svr"`` (scikit-learn's
RBF epsilon-SVR, kept as arrays). Ridge ``alphas``, RBF ``gammas`` (multiples of 1 / features)
and SVR ``svr_c`` are chosen by cross-validation inside ``fit`` with folds of whole lots
(``cv_folds``). Everything from pixels to the property is one torch computation
(:class:`FeatureRegressorNet`), so gradients reach the tiles and GradCAM hooks VGG19's last
convolution block (``relu5_4``).

Metrics (``fit``): the chosen hyperparameters (``hyper_*``) and CV table, ``train_*`` and
``val_*`` R^2 / MAPE / RMSE per tile and of the lots' means on the training and the held-out tiles
(``val_fraction`` of tiles or of lots, ``split``), and with ``leave_one_lot_out`` (``lolo_*``) the
seed's Table 3 test (each lot predicted by a regression fitted on the
others; the encoder is not retrained per lot: like the seed's, it saw every lot's tiles without
their property).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from mxplain.errors import UserError
from mxplain.interfaces import Predictor, RunContext
from mxplain.store import to_tensor, train_val_split
from mxplain.vgg import VGG, load_vgg
from mxplain_texturevae import regression as reg
from mxplain_texturevae.model import encoder_features

FEATURES = ("texturevae", "vgg")
SPLITS = ("tile", "lots")
#: the encoder's TextureVAE editor parameters unless ``[predictor.vae]`` says otherwise (the
#: quickstart TextureVAE of examples/texturevae.toml)
VAE_DEFAULTS = {"latent_dim": 32, "dec_dim": 16, "epochs": 30, "batch_size": 16, "lr": 0.002,
                "kl_weight": 0.001, "style_weights": [1.0, 1.0, 1.0, 1.0, 0.0],
                "max_tiles_per_lot": 16}


class FeatureRegressorNet(nn.Module):
    """Tiles ``(N, 1, H, W)`` -> VGG19 ``pool5`` -> [TextureVAE ``mu`` head] -> regression."""

    def __init__(self, vgg: VGG, patch: int, regression: dict[str, torch.Tensor],
                 mu_head: nn.Linear | None = None, feat_mean: torch.Tensor | None = None,
                 feat_std: torch.Tensor | None = None):
        super().__init__()
        self.vgg = vgg
        self.patch = int(patch)
        self.mu_head = mu_head
        if mu_head is not None:
            self.register_buffer("feat_mean", feat_mean.detach().float().clone())
            self.register_buffer("feat_std", feat_std.detach().float().clone())
        self.keys = sorted(regression)
        for k in self.keys:
            self.register_buffer(f"r_{k}", regression[k].detach().double().clone())
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def regression(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, f"r_{k}") for k in self.keys}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The regression's input features ``(N, D)`` (latent ``mu`` or VGG19 ``pool5``)."""
        h = encoder_features(self.vgg, x, self.patch)
        if self.mu_head is None:
            return h
        return self.mu_head((h - self.feat_mean) / self.feat_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reg.predict(self.regression(), self.features(x)).float()


def _positive_numbers(values) -> bool:
    """A non-empty list of finite numbers > 0."""
    return isinstance(values, (list, tuple)) and len(values) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0
        for v in values)


def _plain(sd: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


class LatentRegressor(Predictor):
    """Seed 003's latent (or VGG19) features + ridge / kernel ridge / SVR -> property."""

    name: ClassVar[str] = "latent_krr"
    differentiable: ClassVar[bool] = True
    gradcam_layer: ClassVar[str] = "vgg.features.35"  # relu5_4 of VGG19
    test_params: ClassVar[dict] = {"vae": {"latent_dim": 4, "dec_dim": 4, "epochs": 1,
                                           "batch_size": 8, "max_tiles_per_lot": 2},
                                   "alphas": [0.1, 1.0], "gammas": [1.0], "cv_folds": 2,
                                   "leave_one_lot_out": False}
    #: the fitted feature network and regression (with ``hyper_``, ``vgg_source_`` and
    #: ``tile_size_``, set by ``fit`` and ``load_state_dict``)
    net_: FeatureRegressorNet | None = None

    def __init__(self, features: str = "texturevae", regression: str = "rbf", vae: dict | None = None,
                 texturevae_checkpoint: str | None = None, vgg_weights: str | None = None,
                 alphas: list | tuple = (0.001, 0.01, 0.1, 1.0, 10.0),
                 gammas: list | tuple = (0.1, 0.3, 1.0, 3.0), svr_c: list | tuple = (1.0, 10.0, 100.0),
                 svr_epsilon: float = 0.1, cv_folds: int = 5,
                 split: str = "tile", val_fraction: float = 0.2, leave_one_lot_out: bool = True,
                 max_tiles_per_lot: int = 0, batch_size: int = 32, seed: int = 0):
        self.features = features
        self.regression = regression
        self.vae = vae
        self.texturevae_checkpoint = texturevae_checkpoint
        self.vgg_weights = vgg_weights
        self.alphas = alphas
        self.gammas = gammas
        self.svr_c = svr_c
        self.svr_epsilon = svr_epsilon
        self.cv_folds = cv_folds
        self.split = split
        self.val_fraction = val_fraction
        self.leave_one_lot_out = leave_one_lot_out
        self.max_tiles_per_lot = max_tiles_per_lot
        self.batch_size = batch_size
        self.seed = seed

    # ---- parameters ---------------------------------------------------------------------------
    def grids(self) -> tuple[list, list, list]:
        """The ridge ``alphas``, RBF ``gammas`` and SVR ``svr_c`` the CV tries."""
        return list(self.alphas), list(self.gammas), list(self.svr_c)

    def vae_params(self) -> dict:
        return {**VAE_DEFAULTS, "seed": int(self.seed), "vgg_weights": self.vgg_weights,
                **(self.vae or {}), "figures": False}

    @classmethod
    def check_params(cls, params: dict) -> None:
        """Every ``[predictor]`` value, when the config is resolved."""
        cls(**{**cls.param_defaults(), **params})._check_params()

    @classmethod
    def footprint(cls, params: dict, data) -> list:
        """The training tiles' kernel matrix (rbf, svr: float64, with the solve's copy) and the
        tiles themselves (uint8, plus float32 for the feature batches' input)."""
        from mxplain.interfaces import Footprint

        if data is None:
            return []
        p = {**cls.param_defaults(), **params}
        limit = int(p["max_tiles_per_lot"] or 0)
        n = min(data.n_tiles, limit * data.n_lots) if limit else data.n_tiles
        n_train = int(n * (1.0 - float(p["val_fraction"]))) + 1
        out = [Footprint("every training tile in memory", ("max_tiles_per_lot",),
                         memory=5 * n * data.tile_size ** 2)]
        if p["regression"] != "linear":
            out.append(Footprint("the kernel matrix of the training tiles",
                                 ("max_tiles_per_lot", "regression"), memory=16 * n_train ** 2))
        return out

    def _check_params(self) -> None:
        def bad(key, why):
            raise UserError(f"[predictor] latent_krr: {key} = {getattr(self, key)!r}: {why}")

        if self.features not in FEATURES:
            bad("features", f"use one of {list(FEATURES)}")
        if self.regression not in reg.KINDS:
            bad("regression", f"use one of {list(reg.KINDS)}")
        if self.split not in SPLITS:
            bad("split", f"use one of {list(SPLITS)}")
        if not 0.0 < float(self.val_fraction) < 1.0:
            bad("val_fraction", "must be in (0, 1)")
        if int(self.cv_folds) < 2:
            bad("cv_folds", "must be an integer >= 2")
        if not float(self.svr_epsilon) >= 0:
            bad("svr_epsilon", "must be >= 0")
        for key in ("alphas", "gammas", "svr_c"):
            values = getattr(self, key)
            if not _positive_numbers(values):
                bad(key, "must be a non-empty list of numbers > 0")
        for key in ("texturevae_checkpoint", "vgg_weights"):
            path = getattr(self, key)
            if path and not Path(path).expanduser().is_file():
                bad(key, "no such file")
        if self.features == "vgg" and (self.texturevae_checkpoint or self.vae):
            bad("features", "VGG features use no TextureVAE: remove texturevae_checkpoint / vae")
        if self.texturevae_checkpoint and self.vae:
            bad("vae", "a loaded texturevae_checkpoint is not trained again: remove [predictor.vae]")
        self._vae_editor()._check_params()

    def _vae_editor(self):
        from mxplain_texturevae.editor import TextureVAEEditor

        p = self.vae_params()
        unknown = sorted(set(p) - set(TextureVAEEditor.param_defaults()))
        if unknown:
            raise UserError(f"[predictor] latent_krr: vae has unknown key {unknown[0]!r}; keys "
                            f"are the [editor] texturevae keys")
        try:
            ed = TextureVAEEditor(**p)
            ed._check_params()
        except UserError as exc:
            raise UserError(f"[predictor] latent_krr: vae: {exc}".replace("[editor] texturevae: ",
                                                                         "")) from None
        return ed

    # ---- features -----------------------------------------------------------------------------
    def _encoder(self, x: torch.Tensor, lot_idx: np.ndarray, tr: np.ndarray,
                 ctx: RunContext) -> tuple[FeatureRegressorNet, dict]:
        """The feature network (regression still empty) and the encoder's training metrics."""
        from mxplain_texturevae.editor import TextureVAEEditor

        size = int(x.shape[-1])
        if self.features == "vgg":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                vgg = load_vgg("vgg19", weights=self.vgg_weights, seed=int(self.seed),
                               device=ctx.device)
            for w in caught:
                warnings.warn(f"latent_krr: {w.message}", stacklevel=3)
            return FeatureRegressorNet(vgg, size, {}), {"vgg": str(vgg.source)}
        if self.texturevae_checkpoint:
            ed = TextureVAEEditor.load(self.texturevae_checkpoint, device=ctx.device)
            info = {"texturevae_checkpoint": str(self.texturevae_checkpoint)}
        else:
            ed = self._vae_editor()
            ed.prepare(0, size, ctx.device)
            from mxplain_texturevae.train import train_vae

            info = train_vae(ed, self._vae_tiles(x, lot_idx, tr, ed.max_tiles_per_lot), ctx)
        info["latent_dim"] = int(ed.latent_dim)
        net = FeatureRegressorNet(ed.vgg_, ed.patch_, {}, ed.heads_.mu, ed.feat_mean_, ed.feat_std_)
        return net, info

    def _vae_tiles(self, x: torch.Tensor, lot_idx: np.ndarray, tr: np.ndarray,
                   per_lot: int | None) -> torch.Tensor:
        """The training tiles the VAE learns from: at most ``per_lot`` of each lot, seeded."""
        rng = np.random.default_rng(int(self.seed))
        pick = []
        for i in np.unique(lot_idx[tr]):
            rows = tr[lot_idx[tr] == i]
            if per_lot and len(rows) > per_lot:
                rows = np.sort(rng.choice(rows, int(per_lot), replace=False))
            pick.append(rows)
        return x[np.concatenate(pick)]

    def feature_array(self, net: FeatureRegressorNet, x: torch.Tensor) -> np.ndarray:
        """Features of tiles ``x`` ``(N, 1, H, W)`` (CPU, float in [0, 1]) as float64 ``(N, D)``."""
        bs = int(self.batch_size)
        out = []
        with torch.no_grad():
            for i in range(0, len(x), bs):
                out.append(net.features(x[i:i + bs].to(self.device)).double().cpu().numpy())
        return np.concatenate(out)

    # ---- training -----------------------------------------------------------------------------
    def fit(self, store, ctx: RunContext | None = None) -> dict:
        ctx = ctx or RunContext()
        self._check_params()
        t0 = time.perf_counter()
        self.device = torch.device(ctx.device)
        tiles, lot_idx = store.all_tiles(max_per_lot=int(self.max_tiles_per_lot or 0),
                                         seed=int(self.seed))
        if len(np.unique(lot_idx)) < 2:
            raise UserError(f"tile store {str(store.path)!r}: latent_krr needs tiles of at least "
                            f"2 lots (cross-validation folds are whole lots)")
        x = to_tensor(tiles)
        y = np.asarray(store.properties, dtype=np.float64)[lot_idx]
        tr, va = train_val_split(lot_idx, float(self.val_fraction), self.split, int(self.seed) + 1)
        net, encoder_info = self._encoder(x, lot_idx, tr, ctx)
        t1 = time.perf_counter()
        f = self.feature_array(net.to(self.device), x)
        t2 = time.perf_counter()
        state, metrics = regress(self.regression, f, y, lot_idx, tr, va, self.grids(),
                                 float(self.svr_epsilon), int(self.cv_folds),
                                 bool(self.leave_one_lot_out))
        self._set_net(net, state, metrics["hyper"], int(x.shape[-1]))
        for part, prefix in (("train", "train"), ("val", "val"), ("leave_one_lot_out", "lolo")):
            metrics.update({f"{prefix}_{k}": v for k, v in metrics.pop(part, {}).items()})
        return {"features": self.features, "regression": self.regression, "encoder": encoder_info,
                **{f"hyper_{k}": v for k, v in metrics["hyper"].items()}, **metrics,
                "encoder_seconds": float(t1 - t0), "feature_seconds": float(t2 - t1),
                "train_seconds": float(time.perf_counter() - t0)}

    def _set_net(self, net: FeatureRegressorNet, state: dict, hyper: dict, tile_size: int) -> None:
        self.net_ = FeatureRegressorNet(net.vgg, net.patch, state, net.mu_head,
                                        getattr(net, "feat_mean", None),
                                        getattr(net, "feat_std", None)).to(self.device)
        self.hyper_ = dict(hyper)
        self.vgg_source_ = str(getattr(net.vgg, "source", "?"))
        self.tile_size_ = int(tile_size)

    # ---- prediction ---------------------------------------------------------------------------
    def _require(self) -> FeatureRegressorNet:
        if self.net_ is None:
            raise UserError("the latent_krr predictor is not trained: fit it or load a checkpoint "
                            "([predictor] checkpoint = \"PATH\")")
        return self.net_

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        net = self._require()
        if tiles.ndim == 3:
            tiles = tiles.unsqueeze(1)
        if tiles.dtype == torch.uint8:
            tiles = tiles.float() / 255.0
        return net(tiles.to(self.device, torch.float32))

    def torch_module(self) -> FeatureRegressorNet | None:
        return self.net_

    def to(self, device):
        super().to(device)
        if self.net_ is not None:
            self.net_.to(self.device)
        return self

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        net = self._require()
        state = {"features": self.features, "regression": self.regression, "patch": int(net.patch),
                 "tile_size": int(self.tile_size_ or 0), "vgg_source": self.vgg_source_,
                 "hyper": {k: float(v) for k, v in self.hyper_.items()},
                 "head": _plain(net.regression())}
        if net.mu_head is not None:
            state["mu_head"] = _plain(net.mu_head.state_dict())
            state["feat_mean"] = net.feat_mean.detach().cpu().clone()
            state["feat_std"] = net.feat_std.detach().cpu().clone()
        if not self.vgg_source_.startswith("random:"):
            state["vgg"] = _plain(net.vgg.features.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        if state["features"] != self.features or state["regression"] != self.regression:
            raise ValueError(f"checkpoint holds features = {state['features']!r}, regression = "
                             f"{state['regression']!r}; the predictor is configured with "
                             f"{self.features!r}, {self.regression!r}")
        src = str(state["vgg_source"])
        vgg = VGG("vgg19")
        if src.startswith("random:"):
            vgg.reset_parameters(int(src.split(":", 1)[1]))
        else:
            vgg.features.load_state_dict(state["vgg"])
        vgg.source = src
        head = None
        if "mu_head" in state:
            w = state["mu_head"]["weight"]
            head = nn.Linear(w.shape[1], w.shape[0])
            head.load_state_dict(state["mu_head"])
        net = FeatureRegressorNet(vgg, int(state["patch"]), {}, head, state.get("feat_mean"),
                                  state.get("feat_std"))
        self._set_net(net, dict(state["head"]), state["hyper"], int(state["tile_size"]))


def regress(kind: str, f: np.ndarray, y: np.ndarray, lots: np.ndarray, tr: np.ndarray,
            va: np.ndarray, grids: tuple[list, list, list], epsilon: float, folds: int,
            lolo: bool) -> tuple[dict, dict]:
    """Choose ``kind``'s hyperparameters by lot-grouped CV on the training rows ``tr``, fit them
    there, score training and held-out rows ``va`` and (``lolo``) leave-one-lot-out over all
    rows. Returns the fitted state (plain tensors) and the metrics."""
    candidates = reg.grid(kind, *grids, epsilon)
    hyper, cv = reg.select(kind, f[tr], y[tr], lots[tr], candidates, folds)
    state = reg.fit_model(kind, f[tr], y[tr], hyper)
    metrics = {"hyper": hyper, "cv": cv, "n_features": int(f.shape[1]),
               "n_train": int(len(tr)), "n_val": int(len(va)),
               "train": reg.scores(y[tr], reg.predict_numpy(state, f[tr]), lots[tr])}
    if len(va):
        metrics["val"] = reg.scores(y[va], reg.predict_numpy(state, f[va]), lots[va])
    if kind != "linear":
        metrics["n_centers"] = int(state["centers"].shape[0])
    if lolo and len(np.unique(lots)) >= 3:
        metrics["leave_one_lot_out"] = reg.leave_one_lot_out(kind, f, y, lots, hyper)
    return state, metrics
