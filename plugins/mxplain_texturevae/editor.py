"""The ``texturevae`` editor: TextureVAE (seed 003) with named attributes through a linear probe.

Training (``fit``): VGG19-encoder VAE with the style loss instead of a pixel reconstruction term
(see :mod:`mxplain_texturevae.model`), on patches cut from the tiles by a sliding window
(``patch_size``/``stride``; the patch is the whole tile when tiles are not larger).

Named attributes: after training, a linear probe ``a = W z + b`` (ridge, ``probe_alpha``) is fitted
from the posterior means of the training tiles to their lots' attribute labels. Editing a latent
``z`` to an attribute vector ``A`` moves it by the minimum-norm shift that makes the probe read
``A``::

    z' = z + W^+ (A - (W z + b))          (W^+ = Moore-Penrose pseudo-inverse, D x K)

so ``probe(z') = A`` exactly whenever ``W`` has full row rank (K <= D), ``z'`` only moves in the
row space of ``W`` (directions the probe reads), and ``decode(encode(x), A)`` is differentiable
with respect to ``A``. :meth:`TextureVAEEditor.generate` decodes a latent as it is (no probe shift).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import ClassVar

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.interfaces import Editor, RunContext
from mxplain_texturevae.model import (
    ENCODER_LAYER,
    STYLE_LAYERS,
    Decoder,
    Heads,
    encoder_features,
)

PROBES = ("ridge", "linear")


def _plain(sd: dict) -> dict:
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


class TextureVAEEditor(Editor):
    """TextureVAE editor: ``encode`` -> posterior mean ``mu`` ``(N, latent_dim)``; ``decode(z, A)``
    -> tiles in [0, 1] edited so the attribute probe reads ``A``."""

    name: ClassVar[str] = "texturevae"
    differentiable: ClassVar[bool] = True
    test_params: ClassVar[dict] = {"latent_dim": 8, "epochs": 2, "batch_size": 8, "dec_dim": 4,
                                   "max_tiles_per_lot": 4, "figures": False}
    #: learned state, ``None`` until ``fit`` or ``load_state_dict``: the networks (``heads_``,
    #: ``decoder_``, built with ``tile_size_``, ``patch_``, ``feat_mean_``/``feat_std_``, the probe
    #: ``probe_w_`` (K, D), ``probe_b_`` (K,), ``probe_pinv_`` (D, K), ``layer_scales_`` and
    #: ``history_``) and the frozen VGG19 (``vgg_``, ``vgg_source_``)
    decoder_: Decoder | None = None
    vgg_ = None

    def __init__(self, latent_dim: int = 64, patch_size: int | None = None, stride: int = 50,
                 epochs: int = 20, batch_size: int = 32, lr: float = 1e-3,
                 kl_weight: float = 1e-3, style_weights: list | dict | None = None,
                 vgg_weights: str | None = None, seed: int = 0,
                 max_tiles_per_lot: int | None = None, probe: str = "ridge",
                 probe_alpha: float = 1.0, dec_dim: int = 32, normalize_layers: bool = True,
                 figures: bool = True):
        self.latent_dim = latent_dim
        self.patch_size = patch_size
        self.stride = stride
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.kl_weight = kl_weight
        self.style_weights = style_weights
        self.vgg_weights = vgg_weights
        self.seed = seed
        self.max_tiles_per_lot = max_tiles_per_lot
        self.probe = probe
        self.probe_alpha = probe_alpha
        self.dec_dim = dec_dim
        self.normalize_layers = normalize_layers
        self.figures = figures

    # ---- parameters ---------------------------------------------------------------------------
    @classmethod
    def check_params(cls, params: dict) -> None:
        """Every ``[editor]`` value, when the config is resolved."""
        cls(**{**cls.param_defaults(), **params})._check_params()

    @classmethod
    def footprint(cls, params: dict, data) -> list:
        """One training batch through VGG19 for the style loss (the patch and its reconstruction,
        ~300 float32 activations per pixel each, kept for the backward pass): ~4.8 kB per pixel."""
        from mxplain.interfaces import Footprint

        if data is None:
            return []
        p = {**cls.param_defaults(), **params}
        patch = min(int(p["patch_size"] or data.tile_size), data.tile_size)
        return [Footprint("one training batch through VGG19", ("batch_size", "patch_size"),
                          memory=int(p["batch_size"]) * patch ** 2 * 4800, on_device=True)]

    def _check_params(self) -> None:
        def bad(key, why):
            raise UserError(f"[editor] texturevae: {key} = {getattr(self, key)!r}: {why}")

        def pos_int(v):
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        for key in ("latent_dim", "stride", "epochs", "batch_size", "dec_dim"):
            if not pos_int(getattr(self, key)):
                bad(key, "must be a positive integer")
        if self.patch_size is not None and (not pos_int(self.patch_size)
                                            or self.patch_size % 32 or self.patch_size < 32):
            bad("patch_size", "must be a multiple of 32 (>= 32) or omitted (= tile size)")
        if self.max_tiles_per_lot is not None and not pos_int(self.max_tiles_per_lot):
            bad("max_tiles_per_lot", "must be a positive integer or omitted")
        for key in ("lr", "kl_weight", "probe_alpha"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) \
                    or v < 0:
                bad(key, "must be a number >= 0")
        if self.probe not in PROBES:
            bad("probe", f"use one of {list(PROBES)}")
        self._weights()

    def _weights(self) -> dict[str, float]:
        w = self.style_weights
        if w is None:
            return {k: 1.0 for k in STYLE_LAYERS}
        if isinstance(w, dict):
            unknown = sorted(set(w) - set(STYLE_LAYERS))
            if unknown:
                raise UserError(f"[editor] texturevae: style_weights has unknown layer "
                                f"{unknown[0]!r}; layers are {list(STYLE_LAYERS)}")
            return {k: float(w.get(k, 0.0)) for k in STYLE_LAYERS}
        if not isinstance(w, (list, tuple)) or len(w) != len(STYLE_LAYERS):
            raise UserError(f"[editor] texturevae: style_weights must be a list of "
                            f"{len(STYLE_LAYERS)} numbers (for {list(STYLE_LAYERS)}) or a table")
        return {k: float(v) for k, v in zip(STYLE_LAYERS, w)}

    # ---- construction -------------------------------------------------------------------------
    def _load_vgg(self):
        from mxplain.vgg import load_vgg

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            vgg = load_vgg("vgg19", weights=self.vgg_weights, seed=self.seed, device=self.device)
        for w in caught:
            warnings.warn(f"texturevae: {w.message}", stacklevel=3)
        self.vgg_ = vgg
        self.vgg_source_ = str(getattr(vgg, "source", f"random:{self.seed}"))

    def _build(self, n_attributes: int, tile_size: int) -> None:
        self._check_params()
        if tile_size < 32 or tile_size % 32:
            raise UserError(f"[editor] texturevae needs tiles of a multiple of 32 px (>= 32), got "
                            f"{tile_size}")
        self.tile_size_ = int(tile_size)
        self.patch_ = int(min(self.patch_size or tile_size, tile_size))
        g = self.patch_ // 32
        torch.manual_seed(int(self.seed))
        self.heads_ = Heads(512 * g * g, self.latent_dim).to(self.device)
        self.decoder_ = Decoder(self.latent_dim, self.patch_, self.dec_dim).to(self.device)
        self.feat_mean_ = torch.zeros(512 * g * g, device=self.device)
        self.feat_std_ = torch.ones(512 * g * g, device=self.device)
        self.probe_w_ = torch.zeros(n_attributes, self.latent_dim, device=self.device)
        self.probe_b_ = torch.zeros(n_attributes, device=self.device)
        self.probe_pinv_ = torch.zeros(self.latent_dim, n_attributes, device=self.device)
        self.layer_scales_ = {k: 1.0 for k in STYLE_LAYERS}
        self.history_ = {"loss": [], "kl": [], "style": []}

    def _require(self) -> None:
        if self.decoder_ is None or self.vgg_ is None:
            raise UserError("texturevae editor is not trained: call fit() or load a checkpoint")

    def to(self, device):
        super().to(device)
        if self.vgg_ is not None:
            self.vgg_.to(self.device)
        if self.decoder_ is not None:  # built: the networks and their tensors
            self.heads_.to(self.device)
            self.decoder_.to(self.device)
            for name in ("feat_mean_", "feat_std_", "probe_w_", "probe_b_", "probe_pinv_"):
                setattr(self, name, getattr(self, name).to(self.device))
        return self

    def _eval(self) -> None:
        self._require()
        for m in (self.heads_, self.decoder_, self.vgg_):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    # ---- encoder / decoder --------------------------------------------------------------------
    def _features(self, tiles: torch.Tensor) -> torch.Tensor:
        h = encoder_features(self.vgg_, tiles.to(self.device, torch.float32), self.patch_)
        return (h - self.feat_mean_) / self.feat_std_

    def posterior(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of q(z | tiles)."""
        self._eval()
        if tiles.ndim != 4 or tiles.shape[1] != 1 or min(tiles.shape[-2:]) < 32:
            raise UserError(f"texturevae encodes (N, 1, H, W) tiles with H, W >= 32, got "
                            f"{tuple(tiles.shape)}")
        return self.heads_(self._features(tiles))

    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        """``(N, 1, H, W)`` tiles in [0, 1] -> posterior means ``(N, latent_dim)``."""
        return self.posterior(tiles)[0]

    def probe_attributes(self, z: torch.Tensor) -> torch.Tensor:
        """The probe's reading ``W z + b`` of latents ``(N, D)`` -> ``(N, K)``."""
        self._require()
        return z.to(self.device, torch.float32) @ self.probe_w_.T + self.probe_b_

    def shift(self, z: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """``z + W^+ (A - probe(z))``: the minimum-norm move of ``z`` the probe reads as ``A``."""
        z = z.to(self.device, torch.float32)
        a = attributes.to(self.device, torch.float32)
        if a.ndim == 1:
            a = a[None].expand(len(z), -1)
        if a.shape != (len(z), len(self.attributes)):
            raise UserError(f"texturevae decode: attributes have shape {tuple(a.shape)}, expected "
                            f"({len(z)}, {len(self.attributes)}) for {list(self.attributes)}")
        return z + (a - self.probe_attributes(z)) @ self.probe_pinv_.T

    def generate(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Decode latents ``(N, D)`` as they are (no probe shift) -> tiles ``(N, 1, s, s)``."""
        self._eval()
        return self.decoder_(z.to(self.device, torch.float32), size or self.tile_size_)

    def decode(self, latent: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        """Latents ``(N, D)`` + attributes ``(N, K)`` in [0, 1] -> edited tiles in [0, 1]."""
        self._eval()
        return self.generate(self.shift(latent, attributes))

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` random tiles decoded from the prior ``z ~ N(0, I)``."""
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, self.latent_dim, generator=gen)
        with torch.no_grad():
            return self.generate(z)

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        self._require()
        state = {
            "heads": _plain(self.heads_.state_dict()),
            "decoder": _plain(self.decoder_.state_dict()),
            "feat_mean": self.feat_mean_.detach().cpu().clone(),
            "feat_std": self.feat_std_.detach().cpu().clone(),
            "layer_scales": {k: float(v) for k, v in self.layer_scales_.items()},
            "probe_w": self.probe_w_.detach().cpu().clone(),
            "probe_b": self.probe_b_.detach().cpu().clone(),
            "probe_pinv": self.probe_pinv_.detach().cpu().clone(),
            "attributes": list(self.attributes),
            "tile_size": int(self.tile_size_),
            "patch": int(self.patch_),
            "vgg_source": self.vgg_source_,
            "history": {k: [float(x) for x in v] for k, v in self.history_.items()},
        }
        if not self.vgg_source_.startswith("random:"):
            # ImageNet (or user) weights: keep them, so the checkpoint does not depend on the file
            state["vgg"] = _plain(self.vgg_.features.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        from mxplain.vgg import VGG

        for key in ("heads", "decoder", "probe_w", "attributes", "tile_size", "patch",
                    "vgg_source"):
            if key not in state:
                raise KeyError(f"texturevae state has no {key!r}")
        attrs = tuple(str(a) for a in state["attributes"])
        self._build(len(attrs), int(state["tile_size"]))
        if int(state["patch"]) != self.patch_:
            raise ValueError(f"checkpoint patch {state['patch']} != patch_size {self.patch_}")
        self.heads_.load_state_dict(state["heads"])
        self.decoder_.load_state_dict(state["decoder"])
        src = str(state["vgg_source"])
        vgg = VGG("vgg19")
        if src.startswith("random:"):
            vgg.reset_parameters(int(src.split(":", 1)[1]))
        elif "vgg" in state:
            vgg.features.load_state_dict(state["vgg"])
        else:
            raise KeyError("texturevae state has no VGG weights")
        vgg.source = src
        self.vgg_ = vgg.to(self.device)
        self.vgg_source_ = src
        dev = self.device
        self.feat_mean_ = state["feat_mean"].float().to(dev)
        self.feat_std_ = state["feat_std"].float().to(dev)
        self.layer_scales_ = {k: float(v) for k, v in state.get("layer_scales", {}).items()}
        self.probe_w_ = state["probe_w"].float().to(dev)
        self.probe_b_ = state["probe_b"].float().to(dev)
        self.probe_pinv_ = state["probe_pinv"].float().to(dev)
        self.attributes = attrs
        hist = state.get("history") or {}
        self.history_ = {k: [float(x) for x in hist.get(k, [])] for k in ("loss", "kl", "style")}
        self._eval()

    # ---- training -----------------------------------------------------------------------------
    def _load_tiles(self, store) -> tuple[torch.Tensor, np.ndarray]:
        tiles, lots = store.all_tiles(max_per_lot=self.max_tiles_per_lot or 0, seed=self.seed)
        return torch.from_numpy(tiles).float().div_(255.0)[:, None], lots

    def prepare(self, n_attributes: int, tile_size: int, device) -> None:
        """Build the networks for ``tile_size`` tiles and load the frozen VGG19 (before training)."""
        self._check_params()
        self.device = torch.device(device)
        self._build(n_attributes, tile_size)
        self._load_vgg()

    def fit(self, store, ctx: RunContext) -> dict:
        from mxplain_texturevae.train import train_vae

        t0 = time.perf_counter()
        self._check_params()
        self.attributes = tuple(store.attributes)
        if not np.isfinite(store.lot_attributes).all():
            raise UserError(f"tile store {str(store.path)!r}: texturevae's attribute probe needs "
                            f"every lot's attributes (some are missing)")
        self.prepare(len(self.attributes), store.tile_size, ctx.device)
        x, lot_idx = self._load_tiles(store)
        metrics = train_vae(self, x, ctx)
        metrics["probe"] = self.fit_probe(x, lot_idx, store.lot_attributes)
        from mxplain_texturevae.quality import texture_scores

        metrics["texture"] = texture_scores(self, x, n_tiles=min(32, len(x)), seed=self.seed,
                                            lots=lot_idx)
        if self.figures and ctx.figures_dir is not None:
            from mxplain_texturevae.quality import save_figures

            try:
                metrics["figures"] = save_figures(self, x, ctx.figures_dir, seed=self.seed)
            except Exception as exc:  # a figure must not lose the trained model
                warnings.warn(f"texturevae figures failed: {type(exc).__name__}: {exc}",
                              stacklevel=2)
        metrics["seconds"] = time.perf_counter() - t0
        return metrics

    def evaluate_loss(self, patches: torch.Tensor, feats: torch.Tensor | None = None,
                      weights: dict[str, float] | None = None) -> dict:
        """Deterministic loss on ``patches`` (:func:`mxplain_texturevae.train.evaluate_loss`)."""
        from mxplain_texturevae.train import evaluate_loss

        return evaluate_loss(self, patches, feats, weights)

    def fit_probe(self, x: torch.Tensor, lot_idx: np.ndarray, lot_attributes: np.ndarray) -> dict:
        """Fit the attribute probe ``a = W mu + b`` on tiles ``x`` of lots ``lot_idx``; returns its
        R^2 per attribute on the training tiles and, with >= 3 lots, leave-lots-out (5-fold)."""
        from sklearn.linear_model import LinearRegression, Ridge
        from sklearn.metrics import r2_score
        from sklearn.model_selection import GroupKFold, cross_val_predict

        from mxplain_texturevae.train import batched

        mu = batched(self, self.encode, x, int(self.batch_size)).cpu().double().numpy()
        y = np.asarray(lot_attributes, dtype=np.float64)[lot_idx]

        def model():
            return Ridge(alpha=float(self.probe_alpha)) if self.probe == "ridge" \
                else LinearRegression()

        reg = model().fit(mu, y)
        w = np.atleast_2d(reg.coef_)
        b = np.atleast_1d(reg.intercept_)
        dev = self.device
        self.probe_w_ = torch.as_tensor(w, dtype=torch.float32, device=dev)
        self.probe_b_ = torch.as_tensor(b, dtype=torch.float32, device=dev)
        self.probe_pinv_ = torch.as_tensor(np.linalg.pinv(w), dtype=torch.float32, device=dev)
        out = {"kind": self.probe, "rank": int(np.linalg.matrix_rank(w)),
               "r2_train": {a: float(r2_score(y[:, k], reg.predict(mu)[:, k]))
                            for k, a in enumerate(self.attributes)}}
        n_lots = len(np.unique(lot_idx))
        if n_lots >= 3:
            cv = cross_val_predict(model(), mu, y, groups=lot_idx,
                                   cv=GroupKFold(n_splits=min(5, n_lots)))
            out["r2_heldout_lots"] = {a: float(r2_score(y[:, k], cv[:, k]))
                                      for k, a in enumerate(self.attributes)}
        return out


__all__ = ["TextureVAEEditor", "ENCODER_LAYER"]
