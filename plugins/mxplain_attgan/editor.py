"""The AttGAN editor (registered as ``attgan``): seed 000 §4.2 and supplement C.

The editor's parameters, networks, inference API, state and ``fit``; the training loop and its
losses are in :mod:`.train`, the parameter checks in :mod:`.options`, the evaluation, figures and
health in :mod:`.diagnostics`.

Recipe options for long trainings (each off by default, which is the reference; measured in the
plugin README's recipe table; ``examples/quickstart-train.toml`` turns them all on):

* ``g_ema`` (default 0.0 = none): decay of an exponential moving average of the generator's weights
  (Karras et al., *Progressive GAN*, ICLR 2018; StyleGAN2-ADA's ``G_ema``), updated after every
  generator step with the ramp-up ``beta = min(g_ema, (1 + s) / (10 + s))`` at step ``s``
  (deviation: StyleGAN2-ADA ramps by images seen; the num_updates rule of TensorFlow's
  ``ExponentialMovingAverage`` is used here), batch-norm buffers copied. ``encode``/``decode``,
  ``edit``, the evaluation and ``state_dict``/``save`` use (and ship) the EMA weights; the
  training checkpoint holds both;
* ``lr_d`` (default None = ``lr``): the critic's own learning rate, the two-timescale update rule
  (TTUR, Heusel et al., NeurIPS 2017); ``lr_decay_epoch`` decays both alike;
* ``dis_sn`` (default False): spectral normalisation of every critic layer (Miyato et al., ICLR
  2018), on top of the gradient penalty;
* ``res_blocks`` (default 0): residual blocks on the attribute-conditioned bottleneck of the
  generator (:class:`.model.ResBlock`);
* ``gated_shortcuts`` (default 0): further U-Net skips through a selective gate that sees the
  attribute code (:class:`.model.Generator`; after STGAN's selective transfer units);
* ``upsample`` (default ``"transpose"``): ``"resize"`` decodes with nearest-neighbour x2 +
  3x3 convolutions instead of 4x4 stride-2 transposed convolutions (Odena et al., Distill 2016),
  which leave checkerboard artefacts a realism critic reads (:func:`.model.upsample_conv`);
* ``noise`` (default False): StyleGAN noise inputs (Karras et al., CVPR 2019) in the last decoder
  block, so the generator can render detector noise instead of blur (:class:`.model.Generator`);
  at inference each tile's noise image is drawn from a seed of its grey levels
  (:func:`tile_noise`): deterministic, the same for every edit of the tile;
* ``rec_blur`` (default 0.0 = the reference's plain L1): the reconstruction loss compares the two
  images after a Gaussian low-pass of that sigma (pixels; :func:`mxplain.filters.gaussian_blur`),
  so detector noise and the sharpest detail are left to the adversarial loss instead of being
  averaged away (an L1 on raw pixels is minimised by the denoised tile; it kept ``noise``'s
  weights at zero);
* ``adv_rec`` (default False): the reconstructions are fakes for the critic and get the
  adversarial loss too (the reference trains reconstructions by L1 alone, so nothing asks them
  to look real);
* ``edit_mode`` (default ``"render"`` = the reference: an edit is the generator's image
  ``G(z, b)``): ``"difference"`` edits a tile by the generator's *change* only,
  ``x + G(z, b) - G(z, c_hat)``, clipped to the grey range, where ``c_hat`` is the attribute
  classifier's reading of the tile (:meth:`AttGANEditor.classify`): the real tile keeps its own
  noise, sharp edges and layout wherever the edit does not change them, so the generator's blur
  and artefacts cancel (the difference of two renders of the same features), and a
  reconstruction is the tile up to the change from ``c_hat`` to the lot's attributes. In the
  spirit of residual-image attribute editing (Shen & Liu, CVPR 2017) and STGAN's difference
  attributes (Liu et al., CVPR 2019), without their extra networks. The latent gets the tile's
  detail layer ``x - G(z, c_hat)`` as its last part, a constant of ``decode`` (zero gradient:
  latent-space design moves the encoder features only). Training shows the critic and the
  attribute classifier the same composites (:mod:`.train`);
* ``diffaug`` (default ``""``): DiffAugment (Zhao et al., NeurIPS 2020) policies, e.g.
  ``"translation,cutout"``, applied to every image the critic and its classifier see during
  training (real, generated, and in the warm-up), differentiably, so the generator learns through
  them (:mod:`.augment`; no rotations or flips: SEM tiles are lit from one side).

Inference (``inference_params``, may be set beside a checkpoint):

* ``edit_mode`` (above);
* ``edit_gain`` (default 1.0): the attribute codes at inference are ``(2a - 1) * thres_int *
  edit_gain`` (training always uses ``thres_int``): the reference AttGAN's ``test_int``, which
  it sets to twice ``thres_int`` by default (``--thres_int 0.5 --test_int 1.0``), so that an edit
  requested at test time is rendered at the strength training only approached. Every edit,
  sweep and reconstruction at a tile's own attributes sees the same scale; the requested
  attributes themselves are unchanged.
"""

from __future__ import annotations

import copy
import hashlib
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.interfaces import Editor, RunContext

from .diagnostics import AttGANDiagnostics
from .model import Discriminator, Generator, encode_attributes
from .options import TARGET_SAMPLINGS, AttGANOptions  # noqa: F401  (imported from here)
from .train import (  # noqa: F401  (the names tests and users import from here)
    LOSS_KEYS,
    AttGANTraining,
    periodic_random_crop,
    single_attribute_targets,
)


def tile_noise(tiles: torch.Tensor) -> torch.Tensor:
    """A standard normal image per tile ``(N, 1, H, W)``, seeded by the BLAKE2b digest of the
    tile's grey levels (rounded to uint8): the same tile gets the same noise on any machine and in
    any batch."""
    u8 = np.rint(tiles.detach().float().cpu().clamp(0, 1).numpy() * 255).astype(np.uint8)
    out = torch.empty(u8.shape[0], 1, *u8.shape[-2:])
    for i, t in enumerate(u8):
        seed = int.from_bytes(hashlib.blake2b(t.tobytes(), digest_size=8).digest(), "little")
        out[i] = torch.randn(1, *u8.shape[-2:], generator=torch.Generator().manual_seed(seed))
    return out.to(tiles.device)


class AttGANEditor(AttGANOptions, AttGANTraining, AttGANDiagnostics, Editor):
    """AttGAN attribute editor for SEM tiles (encode/decode with attribute vectors in [0, 1])."""

    name: ClassVar[str] = "attgan"
    differentiable: ClassVar[bool] = True
    inference_params: ClassVar[frozenset[str]] = frozenset({"edit_mode", "edit_gain"})
    test_params: ClassVar[dict] = {"enc_dim": 8, "dec_dim": 8, "dis_dim": 8, "dis_fc_dim": 16,
                                   "n_layers": 3, "epochs": 1, "batch_size": 8}
    #: learned state, ``None`` until ``fit`` or ``load_state_dict`` build the networks (with
    #: ``tile_size_`` and the ``provenance_`` an exported checkpoint records); ``history_``: the
    #: training losses by step
    generator_: Generator | None = None
    generator_ema_: Generator | None = None  # the EMA weights while training with g_ema > 0
    discriminator_: Discriminator | None = None
    history_: dict[str, list[float]] | None = None

    def __init__(self, enc_dim: int = 64, dec_dim: int = 64, dis_dim: int = 64,
                 dis_fc_dim: int = 1024, n_layers: int = 5, shortcut_layers: int = 1,
                 inject_layers: int = 1, thres_int: float = 0.5, lambda_rec: float = 100.0,
                 lambda_gatt: float = 10.0, lambda_datt: float = 1.0, lambda_gp: float = 10.0,
                 n_critic: int = 5, lr: float = 2e-4, beta1: float = 0.5, beta2: float = 0.999,
                 epochs: int = 30, lr_decay_epoch: int | None = None, batch_size: int = 32,
                 seed: int = 0, max_tiles_per_lot: int | None = None,
                 sample_every: int | None = None, b_uniform: float = 0.25,
                 dis_norm: str = "instancenorm", augment: bool = False,
                 target_sampling: str = "permute", target_min_change: float = 0.3,
                 classifier_warmup_epochs: int = 0, classifier_warmup_lr: float | None = None,
                 cls_dropout: float = 0.0, cls_crop: int | None = None,
                 cls_pool: str = "flatten", g_ema: float = 0.0, lr_d: float | None = None,
                 dis_sn: bool = False, res_blocks: int = 0, diffaug: str = "",
                 upsample: str = "transpose", noise: bool = False, rec_blur: float = 0.0,
                 adv_rec: bool = False, edit_mode: str = "render",
                 gatt_weights: dict[str, float] | None = None, gatt_keep_weight: float = 1.0,
                 cls_trunk_attributes: list[str] | None = None, edit_gain: float = 1.0,
                 gated_shortcuts: int = 0):
        self.enc_dim = enc_dim
        self.dec_dim = dec_dim
        self.dis_dim = dis_dim
        self.dis_fc_dim = dis_fc_dim
        self.n_layers = n_layers
        self.shortcut_layers = shortcut_layers
        self.inject_layers = inject_layers
        self.thres_int = thres_int
        self.lambda_rec = lambda_rec
        self.lambda_gatt = lambda_gatt
        self.lambda_datt = lambda_datt
        self.lambda_gp = lambda_gp
        self.n_critic = n_critic
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.epochs = epochs
        self.lr_decay_epoch = lr_decay_epoch
        self.batch_size = batch_size
        self.seed = seed
        self.max_tiles_per_lot = max_tiles_per_lot
        self.sample_every = sample_every
        self.b_uniform = b_uniform
        self.dis_norm = dis_norm
        self.augment = augment
        self.target_sampling = target_sampling
        self.target_min_change = target_min_change
        self.classifier_warmup_epochs = classifier_warmup_epochs
        self.classifier_warmup_lr = classifier_warmup_lr
        self.cls_dropout = cls_dropout
        self.cls_crop = cls_crop
        self.cls_pool = cls_pool
        self.g_ema = g_ema
        self.lr_d = lr_d
        self.dis_sn = dis_sn
        self.res_blocks = res_blocks
        self.diffaug = diffaug
        self.upsample = upsample
        self.noise = noise
        self.rec_blur = rec_blur
        self.adv_rec = adv_rec
        self.edit_mode = edit_mode
        self.gatt_weights = gatt_weights
        self.gatt_keep_weight = gatt_keep_weight
        self.cls_trunk_attributes = cls_trunk_attributes
        self.edit_gain = edit_gain
        self.gated_shortcuts = gated_shortcuts

    @classmethod
    def check_params(cls, params: dict) -> None:
        """The parameter checks of :mod:`.options`, when the config is resolved."""
        cls(**params)._check_params()

    # ---- construction -------------------------------------------------------------------------
    def _build(self, attributes: tuple[str, ...], tile_size: int) -> None:
        self._check_params()
        self._check_attribute_names(attributes)
        n_attributes = len(attributes)
        trunk = tuple(attributes.index(n) for n in self.cls_trunk_attributes or ())
        if tile_size % (2**self.n_layers):
            raise UserError(f"[editor] attgan: tile size {tile_size} is not divisible by "
                            f"2**n_layers = {2**self.n_layers}; lower n_layers")
        if self.dis_norm == "instancenorm" and tile_size // 2**self.n_layers < 2:
            raise UserError(f"[editor] attgan: tile size {tile_size} with n_layers={self.n_layers} "
                            f"leaves 1x1 discriminator features (instance norm undefined); lower "
                            f"n_layers or set dis_norm = 'layernorm'")
        if self.cls_crop is not None and self.cls_crop > tile_size:
            raise UserError(f"[editor] attgan: cls_crop = {self.cls_crop} is larger than the tile "
                            f"size {tile_size}")
        self.tile_size_ = int(tile_size)
        self.generator_ = Generator(n_attributes, self.enc_dim, self.dec_dim, self.n_layers,
                                    self.shortcut_layers, self.inject_layers,
                                    res_blocks=self.res_blocks, upsample=self.upsample,
                                    noise=self.noise, gated_shortcuts=self.gated_shortcuts)
        self.discriminator_ = Discriminator(n_attributes, tile_size, self.dis_dim,
                                            self.dis_fc_dim, self.n_layers, self.dis_norm,
                                            cls_pool=self.cls_pool, spectral_norm=self.dis_sn,
                                            trunk_columns=trunk)
        self.generator_.to(self.device)
        self.discriminator_.to(self.device)
        self.generator_ema_ = None
        if self.g_ema > 0:
            self.generator_ema_ = copy.deepcopy(self.generator_).requires_grad_(False)
        self.history_: dict[str, list[float]] = {k: [] for k in LOSS_KEYS}
        self.provenance_: dict = {}

    def _require(self) -> Generator:
        """The generator used at inference: the EMA one when ``g_ema`` > 0 (while it trains)."""
        if self.generator_ is None:
            raise UserError("attgan editor is not trained: call fit() or load a checkpoint")
        return self.generator_ if self.generator_ema_ is None else self.generator_ema_

    def to(self, device):
        super().to(device)
        for m in (self.generator_, self.generator_ema_, self.discriminator_):
            if m is not None:
                m.to(self.device)
        return self

    def _eval(self) -> Generator:
        g = self._require()
        if g.training or self.discriminator_.training or next(g.parameters()).requires_grad:
            g.eval()
            self.discriminator_.eval()
            for p in g.parameters():
                p.requires_grad_(False)
        return g

    # ---- Editor API ---------------------------------------------------------------------------
    def encode(self, tiles: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(N, 1, H, W)`` tiles in [0, 1] -> the encoder features (tuple, batch first); with
        ``edit_mode = "difference"`` followed by the tile's detail layer ``x - G(z, c_hat)``
        (``c_hat``: the attribute classifier's reading of the tile, :meth:`classify`)."""
        g = self._eval()
        x = tiles.to(self.device, torch.float32) * 2.0 - 1.0
        zs = g.encode(x, tile_noise(tiles) if g.noise else None)
        if self.edit_mode != "difference":
            return zs
        with torch.no_grad():
            anchor = g.decode(zs, encode_attributes(self.classify(tiles), self._test_int))
        return (*zs, x - anchor.float())

    def decode(self, latent, attributes: torch.Tensor) -> torch.Tensor:
        """Encoder features + ``(N, K)`` attributes in [0, 1] -> tiles in [0, 1] (differentiable
        w.r.t. the attributes and the encoder features; a difference editor's detail layer is a
        constant)."""
        g = self._eval()
        latent = tuple(latent)
        a = attributes.to(self.device, torch.float32)
        if a.ndim == 1:
            a = a[None].expand(latent[0].size(0), -1)
        if self.edit_mode == "difference":
            *zs, detail = latent
            y = g.decode(tuple(zs), encode_attributes(a, self._test_int))
            return ((y.float() + detail.detach().float()).clamp(-1.0, 1.0) + 1.0) / 2.0
        y = g.decode(latent, encode_attributes(a, self._test_int))
        return (y.float() + 1.0) / 2.0

    @property
    def _test_int(self) -> float:
        """The code scale at inference: ``thres_int * edit_gain`` (the reference's ``test_int``)."""
        return self.thres_int * self.edit_gain

    def compile(self) -> list[str]:
        """``torch.compile`` the generator's decoder (the weights and the state dict are untouched)."""
        g = self._require()
        g.decode = torch.compile(g.decode)
        return ["attgan.generator.decode"]

    def classify(self, tiles: torch.Tensor) -> torch.Tensor:
        """The discriminator's attribute classifier: tiles -> predicted attributes in [0, 1]."""
        self._eval()
        with torch.no_grad():
            _, logits = self.discriminator_(tiles.to(self.device, torch.float32) * 2.0 - 1.0)
        return torch.sigmoid(logits.float())

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Inference state: ``generator`` holds the EMA weights when ``g_ema`` > 0 (the weights
        ``encode``/``decode`` use), ``provenance`` what an exported checkpoint records."""
        g = self._require()
        return {
            "generator": {k: v.detach().cpu() for k, v in g.state_dict().items()},
            "discriminator": {k: v.detach().cpu()
                              for k, v in self.discriminator_.state_dict().items()},
            "attributes": list(self.attributes),
            "tile_size": int(self.tile_size_),
            "history": {k: [float(x) for x in v] for k, v in self.history_.items()},
            "provenance": dict(self.provenance_),
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("generator", "discriminator", "attributes", "tile_size"):
            if key not in state:
                raise KeyError(f"attgan state has no {key!r}")
        attrs = tuple(str(a) for a in state["attributes"])
        self._build(attrs, int(state["tile_size"]))
        for part, module in (("generator", self.generator_),
                             ("discriminator", self.discriminator_)):
            own = module.state_dict()
            theirs = state[part]
            missing = sorted(set(own) - set(theirs))
            extra = sorted(set(theirs) - set(own))
            if missing or extra:
                raise ValueError(
                    f"{part} architecture differs from this configuration (n_layers="
                    f"{self.n_layers}, shortcut_layers={self.shortcut_layers}, inject_layers="
                    f"{self.inject_layers}, res_blocks={self.res_blocks}, noise={self.noise}, "
                    f"gated_shortcuts={self.gated_shortcuts}, "
                    f"upsample={self.upsample!r}): missing {missing[:3]}, "
                    f"unexpected {extra[:3]}")
            for k, v in own.items():
                if tuple(theirs[k].shape) != tuple(v.shape):
                    raise ValueError(
                        f"{part} tensor {k!r} has shape {tuple(theirs[k].shape)} in the checkpoint "
                        f"but {tuple(v.shape)} for this configuration (enc_dim={self.enc_dim}, "
                        f"dec_dim={self.dec_dim}, dis_dim={self.dis_dim}, "
                        f"dis_fc_dim={self.dis_fc_dim}, n_layers={self.n_layers})")
            module.load_state_dict(theirs)
        self.generator_ema_ = None  # the loaded generator weights are the inference (EMA) ones
        self.attributes = attrs
        self.provenance_ = dict(state.get("provenance") or {})
        hist = state.get("history") or {}
        self.history_ = {k: [float(x) for x in hist.get(k, [])] for k in LOSS_KEYS}
        self._eval()

    # ---- training (the loop and its steps: mxplain_attgan.train) -----------------------------
    def fit(self, store, ctx: RunContext) -> dict:
        """Train on every tile of ``store`` (see the module docstring); returns the metrics."""
        from tqdm.auto import tqdm

        self._check_params()
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        self.device = torch.device(ctx.device)
        if store.n_lots < 1:
            raise UserError(f"tile store {str(store.path)!r} has no lots")
        self.attributes = tuple(store.attributes)
        self._build(self.attributes, store.tile_size)
        x_all, a_all = self._load_data(store)
        sample_x = x_all[torch.randperm(len(x_all), generator=gen)[: min(4, len(x_all))]]
        loop = self._training_loop(x_all, a_all, gen, ctx, store.tile_size)
        bar = tqdm(total=self.epochs * loop.iters, initial=loop.start * loop.iters, desc="attgan",
                   disable=not ctx.progress, dynamic_ncols=True)
        try:
            for epoch in range(loop.start, self.epochs):
                self._train_epoch(loop, epoch, bar)
                if (self.sample_every and ctx.figures_dir is not None
                        and (epoch + 1) % self.sample_every == 0):
                    self._eval()
                    self.sample_figure(sample_x, Path(ctx.figures_dir) / "attgan_samples"
                                       / f"epoch_{epoch + 1:03d}.png")
                loop.ckpt.save(epoch + 1, extra={"it": loop.it, "history": self.history_,
                                                 "last_d": loop.last_d, "warmup": loop.warmup})
        finally:
            bar.close()
        self._eval()
        metrics = self.evaluate(x_all, a_all, gen)
        metrics.update(self._loss_summary(loop.warmup))
        metrics["train_seconds"] = float(time.perf_counter() - t0)
        metrics["n_train_tiles"] = int(len(x_all))
        metrics["generator_steps"] = len(self.history_["g_rec"])
        if ctx.figures_dir is not None and self.history_["g_rec"]:
            self.loss_figure(Path(ctx.figures_dir) / "attgan_losses.png")
        return metrics
