"""The AttGAN editor (registered as ``attgan``): seed 000 §4.2 and supplement C.

Training (WGAN-GP, as the reference implementation of He et al. 2019)
    Every tile carries its lot's attribute vector ``a`` in [0, 1] (lot labels broadcast to tiles).
    Target attributes ``b`` for a batch (``target_sampling``):

    * ``"permute"`` (default, the reference): a random permutation of the batch's own attribute
      vectors; each row is replaced, with probability ``b_uniform``, by a uniform random vector in
      [0, 1]^K (attribute combinations between and beyond the few lot labels);
    * ``"single"``: ONE attribute per row (random column) changes, the others stay at the tile's
      own values - the edits the explainers make; the new value is uniform over the part of [0, 1]
      at least ``target_min_change`` away from the old one (:func:`single_attribute_targets`);
    * ``"uniform"``: independent uniform values in [0, 1]^K.

    The generator sees the codes ``(2a - 1) * thres_int`` (see :mod:`.model`).

    * a discriminator step on every iteration::

        L_D = -D_adv(x) + D_adv(G(x, b)) + lambda_gp * GP + lambda_datt * BCE(D_cls(x), a)

      GP is the WGAN-GP penalty ``(||grad D_adv(x_hat)|| - 1)^2`` on random interpolates of real and
      fake tiles (always computed in float32);
    * a generator step on every ``n_critic``-th iteration::

        L_G = -D_adv(G(x, b)) + lambda_gatt * BCE(D_cls(G(x, b)), b) + lambda_rec * L1(G(x, a), x)

    Adam(lr, (beta1, beta2)) for both. ``lr_decay_epoch``: when set, the learning rate stays at
    ``lr`` up to that epoch and then decays linearly to 0 at the end of the last epoch (None:
    constant). ``augment`` (default off) adds random flips and 90-degree rotations; SEM tiles
    are lit from one detector direction (so are the synthetic ones), and on the quickstart data
    rotations slow the attribute classifier badly (real-tile BCE 0.66 instead of 0.56 after 6
    epochs), so only switch it on for isotropic images. On a GPU the G and D forward passes run
    under bf16 autocast; the gradient penalty runs in float32.

    ``classifier_warmup_epochs`` (default 0 = the reference): before the GAN phase, that many
    epochs of the discriminator trunk + attribute head alone on real tiles (BCE against the soft
    lot labels; Adam(``classifier_warmup_lr`` or ``lr``)), so that the generator's attribute loss
    is meaningful from its first step.

    ``cls_dropout`` / ``cls_crop`` (defaults 0.0 / None = the reference): dropout on the trunk
    features before the attribute head, and an attribute head that sees a random crop of each tile
    repeated periodically to the tile size (:func:`periodic_random_crop`), wherever the head is
    trained or scores generated tiles; inference (:meth:`classify`) uses whole tiles, no dropout.
    ``cls_pool`` (default ``"flatten"`` = the reference; ``"mean"``: spatially pooled multi-scale
    features, see :class:`.model.Discriminator`).

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
* ``upsample`` (default ``"transpose"``): ``"resize"`` decodes with nearest-neighbour x2 +
  3x3 convolutions instead of 4x4 stride-2 transposed convolutions (Odena et al., Distill 2016),
  which leave checkerboard artefacts a realism critic reads (:func:`.model.upsample_conv`);
* ``noise`` (default False): StyleGAN noise inputs (Karras et al., CVPR 2019) in the last decoder
  block, so the generator can render detector noise instead of blur (:class:`.model.Generator`);
  at inference each tile's noise image is drawn from a seed of its grey levels
  (:func:`tile_noise`): deterministic, the same for every edit of the tile;
* ``diffaug`` (default ``""``): DiffAugment (Zhao et al., NeurIPS 2020) policies, e.g.
  ``"translation,cutout"``, applied to every image the critic and its classifier see during
  training (real, generated, and in the warm-up), differentiably, so the generator learns through
  them (:mod:`.augment`; no rotations or flips: SEM tiles are lit from one side).

Loss history (one entry per generator step) and the Figure-10 style figure of the four curves
(reconstruction, adversarial, classifier on real, classifier on generated) in
``ctx.figures_dir/"attgan_losses.png"``; with ``sample_every = n`` a sample grid
``attgan_samples/epoch_XXX.png`` every n epochs.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import autograd

from mxplain.errors import UserError
from mxplain.figures import save_figure
from mxplain.interfaces import Editor, RunContext
from mxplain.training import TrainingCheckpoint

from .augment import diff_augment, parse_policy
from .model import CLS_POOLS, UPSAMPLES, Discriminator, Generator, encode_attributes

LOSS_KEYS = ("g_rec", "g_adv", "g_cls", "d_adv", "d_cls", "d_gp")
TARGET_SAMPLINGS = ("single", "permute", "uniform")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and 90-degree rotations of a batch (one draw per batch)."""
    k = int(torch.randint(0, 4, (1,), generator=gen))
    if k:
        x = torch.rot90(x, k, dims=(2, 3))
    if int(torch.randint(0, 2, (1,), generator=gen)):
        x = torch.flip(x, dims=(3,))
    return x


def periodic_random_crop(x: torch.Tensor, crop: int, gen: torch.Generator) -> torch.Tensor:
    """A random ``crop`` x ``crop`` window of each image of ``x`` (N, C, H, W), repeated
    periodically to H x W (tiled from the top-left corner). Keeps the particle scale and the area
    fractions of the window, removes the image's global layout."""
    n, _, h, w = x.shape
    oy = torch.randint(0, h - crop + 1, (n,), generator=gen)
    ox = torch.randint(0, w - crop + 1, (n,), generator=gen)
    yy = (oy[:, None] + torch.arange(h) % crop).to(x.device)   # (N, H)
    xx = (ox[:, None] + torch.arange(w) % crop).to(x.device)   # (N, W)
    rows = torch.gather(x, 2, yy[:, None, :, None].expand(n, x.shape[1], h, w))
    return torch.gather(rows, 3, xx[:, None, None, :].expand(n, x.shape[1], h, w))


def single_attribute_targets(a: torch.Tensor, gen: torch.Generator,
                             min_change: float = 0.3) -> torch.Tensor:
    """Targets that change ONE attribute per row (a random column), the others kept at the row's
    own values, as the explainers edit. The new value is uniform over the part of [0, 1] at least
    ``min_change`` away from the old one (a large, two-sided change: below and above are chosen in
    proportion to the room on each side)."""
    n, k = a.shape
    col = torch.randint(0, k, (n,), generator=gen)
    old = a[torch.arange(n), col]
    lo_len = (old - min_change).clamp(min=0.0)          # room in [0, old - m]
    hi_len = (1.0 - old - min_change).clamp(min=0.0)    # room in [old + m, 1]
    u = torch.rand(n, generator=gen) * (lo_len + hi_len)
    new = torch.where(u < lo_len, u, old + min_change + (u - lo_len))
    # degenerate rows (no room on either side: only when min_change > 0.5): go to the far end
    new = torch.where(lo_len + hi_len > 0, new, (old < 0.5).to(a.dtype))
    b = a.clone()
    b[torch.arange(n), col] = new.clamp(0.0, 1.0).to(a.dtype)
    return b


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


class AttGANEditor(Editor):
    """AttGAN attribute editor for SEM tiles (encode/decode with attribute vectors in [0, 1])."""

    name: ClassVar[str] = "attgan"
    differentiable: ClassVar[bool] = True
    test_params: ClassVar[dict] = {"enc_dim": 8, "dec_dim": 8, "dis_dim": 8, "dis_fc_dim": 16,
                                   "n_layers": 3, "epochs": 1, "batch_size": 8}

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
                 upsample: str = "transpose", noise: bool = False):
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
        self.generator: Generator | None = None
        self.generator_ema: Generator | None = None
        self.provenance: dict = {}
        self.discriminator: Discriminator | None = None
        self.tile_size: int | None = None
        self.attributes: tuple[str, ...] = ()
        self.history: dict[str, list[float]] = {k: [] for k in LOSS_KEYS}
        self.device = torch.device("cpu")

    # ---- construction -------------------------------------------------------------------------
    def _check_params(self) -> None:
        for key in ("enc_dim", "dec_dim", "dis_dim", "dis_fc_dim", "n_layers", "n_critic",
                    "epochs", "batch_size"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"[editor] attgan: {key} must be a positive integer, got {v!r}")
        m = self.max_tiles_per_lot
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 1):
            raise UserError(f"[editor] attgan: max_tiles_per_lot must be a positive integer or "
                            f"unset, got {m!r}")
        if not self.thres_int > 0:
            raise UserError(f"[editor] attgan: thres_int must be > 0, got {self.thres_int!r}")
        if not 0.0 <= self.b_uniform <= 1.0:
            raise UserError(f"[editor] attgan: b_uniform must be in [0, 1], got {self.b_uniform!r}")
        if self.target_sampling not in TARGET_SAMPLINGS:
            raise UserError(f"[editor] attgan: target_sampling must be one of "
                            f"{list(TARGET_SAMPLINGS)}, got {self.target_sampling!r}")
        if not 0.0 <= self.target_min_change <= 0.5:
            raise UserError(f"[editor] attgan: target_min_change must be in [0, 0.5], "
                            f"got {self.target_min_change!r}")
        w = self.classifier_warmup_epochs
        if not isinstance(w, int) or isinstance(w, bool) or w < 0:
            raise UserError(f"[editor] attgan: classifier_warmup_epochs must be an integer >= 0, "
                            f"got {w!r}")
        if self.classifier_warmup_lr is not None and not self.classifier_warmup_lr > 0:
            raise UserError(f"[editor] attgan: classifier_warmup_lr must be > 0 or unset, "
                            f"got {self.classifier_warmup_lr!r}")
        if not (isinstance(self.cls_dropout, (int, float)) and 0.0 <= self.cls_dropout < 1.0):
            raise UserError(f"[editor] attgan: cls_dropout must be in [0, 1), "
                            f"got {self.cls_dropout!r}")
        c = self.cls_crop
        if c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < 4):
            raise UserError(f"[editor] attgan: cls_crop must be an integer >= 4 or unset, "
                            f"got {c!r}")
        if self.cls_pool not in CLS_POOLS:
            raise UserError(f"[editor] attgan: cls_pool must be one of {list(CLS_POOLS)}, "
                            f"got {self.cls_pool!r}")
        if self.dis_norm not in ("instancenorm", "layernorm"):
            raise UserError(f"[editor] attgan: dis_norm must be 'instancenorm' or 'layernorm', "
                            f"got {self.dis_norm!r}")
        self._check_recipe()

    def _check_recipe(self) -> None:
        """The recipe options: ``g_ema``, ``lr_d``, ``dis_sn``, ``res_blocks``, ``diffaug``,
        ``upsample``."""
        if not isinstance(self.noise, bool):
            raise UserError(f"[editor] attgan: noise must be true or false, got {self.noise!r}")
        if self.upsample not in UPSAMPLES:
            raise UserError(f"[editor] attgan: upsample must be one of {list(UPSAMPLES)}, "
                            f"got {self.upsample!r}")
        if not (isinstance(self.g_ema, (int, float)) and 0.0 <= self.g_ema < 1.0):
            raise UserError(f"[editor] attgan: g_ema must be a decay in [0, 1) (0 = no EMA), "
                            f"got {self.g_ema!r}")
        if self.lr_d is not None and not (isinstance(self.lr_d, (int, float)) and self.lr_d > 0):
            raise UserError(f"[editor] attgan: lr_d must be > 0 or unset (= lr), "
                            f"got {self.lr_d!r}")
        if not isinstance(self.dis_sn, bool):
            raise UserError(f"[editor] attgan: dis_sn must be true or false, got {self.dis_sn!r}")
        r = self.res_blocks
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            raise UserError(f"[editor] attgan: res_blocks must be an integer >= 0, got {r!r}")
        try:
            self._policy = parse_policy(self.diffaug)
        except ValueError as exc:
            raise UserError(f"[editor] attgan: diffaug: {exc}") from None

    def _build(self, n_attributes: int, tile_size: int) -> None:
        self._check_params()
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
        self.tile_size = int(tile_size)
        self.generator = Generator(n_attributes, self.enc_dim, self.dec_dim, self.n_layers,
                                   self.shortcut_layers, self.inject_layers,
                                   res_blocks=self.res_blocks, upsample=self.upsample,
                                   noise=self.noise)
        self.discriminator = Discriminator(n_attributes, tile_size, self.dis_dim, self.dis_fc_dim,
                                           self.n_layers, self.dis_norm,
                                           cls_pool=self.cls_pool, spectral_norm=self.dis_sn)
        self.generator.to(self.device)
        self.discriminator.to(self.device)
        self.generator_ema = None
        if self.g_ema > 0:
            self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)

    def _require(self) -> Generator:
        """The generator used at inference: the EMA one when ``g_ema`` > 0 (while it trains)."""
        if self.generator is None:
            raise UserError("attgan editor is not trained: call fit() or load a checkpoint")
        return self.generator if self.generator_ema is None else self.generator_ema

    def to(self, device):
        self.device = torch.device(device)
        for m in (self.generator, self.generator_ema, self.discriminator):
            if m is not None:
                m.to(self.device)
        return self

    def _eval(self) -> Generator:
        g = self._require()
        if g.training or self.discriminator.training or next(g.parameters()).requires_grad:
            g.eval()
            self.discriminator.eval()
            for p in g.parameters():
                p.requires_grad_(False)
        return g

    # ---- Editor API ---------------------------------------------------------------------------
    def encode(self, tiles: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(N, 1, H, W)`` tiles in [0, 1] -> the encoder features (tuple, batch first)."""
        g = self._eval()
        x = tiles.to(self.device, torch.float32) * 2.0 - 1.0
        return g.encode(x, tile_noise(tiles) if g.noise else None)

    def decode(self, latent, attributes: torch.Tensor) -> torch.Tensor:
        """Encoder features + ``(N, K)`` attributes in [0, 1] -> tiles in [0, 1] (differentiable
        w.r.t. the attributes)."""
        g = self._eval()
        a = attributes.to(self.device, torch.float32)
        if a.ndim == 1:
            a = a[None].expand(latent[0].size(0), -1)
        y = g.decode(tuple(latent), encode_attributes(a, self.thres_int))
        return (y.float() + 1.0) / 2.0

    def compile(self) -> list[str]:
        """``torch.compile`` the generator's decoder (the weights and the state dict are untouched)."""
        g = self._require()
        g.decode = torch.compile(g.decode)
        return ["attgan.generator.decode"]

    def classify(self, tiles: torch.Tensor) -> torch.Tensor:
        """The discriminator's attribute classifier: tiles -> predicted attributes in [0, 1]."""
        self._eval()
        with torch.no_grad():
            _, logits = self.discriminator(tiles.to(self.device, torch.float32) * 2.0 - 1.0)
        return torch.sigmoid(logits.float())

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Inference state: ``generator`` holds the EMA weights when ``g_ema`` > 0 (the weights
        ``encode``/``decode`` use), ``provenance`` what an exported checkpoint records."""
        g = self._require()
        return {
            "generator": {k: v.detach().cpu() for k, v in g.state_dict().items()},
            "discriminator": {k: v.detach().cpu()
                              for k, v in self.discriminator.state_dict().items()},
            "attributes": list(self.attributes),
            "tile_size": int(self.tile_size),
            "history": {k: [float(x) for x in v] for k, v in self.history.items()},
            "provenance": dict(self.provenance),
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("generator", "discriminator", "attributes", "tile_size"):
            if key not in state:
                raise KeyError(f"attgan state has no {key!r}")
        attrs = tuple(str(a) for a in state["attributes"])
        self._build(len(attrs), int(state["tile_size"]))
        for part, module in (("generator", self.generator), ("discriminator", self.discriminator)):
            own = module.state_dict()
            theirs = state[part]
            missing = sorted(set(own) - set(theirs))
            extra = sorted(set(theirs) - set(own))
            if missing or extra:
                raise ValueError(
                    f"{part} architecture differs from this configuration (n_layers="
                    f"{self.n_layers}, shortcut_layers={self.shortcut_layers}, inject_layers="
                    f"{self.inject_layers}, res_blocks={self.res_blocks}, noise={self.noise}, "
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
        self.generator_ema = None  # the loaded generator weights are the inference (EMA) ones
        self.attributes = attrs
        self.provenance = dict(state.get("provenance") or {})
        hist = state.get("history") or {}
        self.history = {k: [float(x) for x in hist.get(k, [])] for k in LOSS_KEYS}
        self._eval()

    # ---- training -----------------------------------------------------------------------------
    def _load_data(self, store) -> tuple[torch.Tensor, torch.Tensor]:
        tiles, lots = store.all_tiles(max_per_lot=self.max_tiles_per_lot or 0, seed=self.seed)
        x = torch.from_numpy(tiles)
        a = torch.from_numpy(store.lot_attributes[lots].astype(np.float32))
        if not torch.isfinite(a).all():
            raise UserError(f"tile store {str(store.path)!r}: attgan needs every lot's attributes "
                            f"(some are missing)")
        return x, a

    def _lr_at(self, epoch_float: float) -> float:
        if self.lr_decay_epoch is None or epoch_float < self.lr_decay_epoch:
            return self.lr
        span = max(self.epochs - self.lr_decay_epoch, 1e-8)
        return self.lr * max(0.0, 1.0 - (epoch_float - self.lr_decay_epoch) / span)

    def _cls_logits(self, x: torch.Tensor, gen: torch.Generator,
                    h: torch.Tensor | None = None) -> torch.Tensor:
        """Training-time attribute logits of the discriminator for images ``x`` in [-1, 1].

        ``cls_crop`` = c: the head sees a random c x c crop of each image, repeated periodically
        to the tile size (the particle scale and the area fractions are kept, the tile's global
        layout is not); ``cls_dropout`` = p: dropout on the trunk features before the head.
        ``h``: the trunk features of ``x`` when already computed (used without ``cls_crop``)."""
        D = self.discriminator
        if self.cls_crop is not None and self.cls_crop < x.shape[-1]:
            h = D.features(periodic_random_crop(x, self.cls_crop, gen))[1]
        elif h is None:
            h = D.features(x)[1]
        if self.cls_dropout > 0:
            h = F.dropout(h, self.cls_dropout, training=True)
        return D.fc_cls(h)

    def _targets(self, a: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Target attributes ``b`` for a batch with attributes ``a`` (see ``target_sampling``)."""
        if self.target_sampling == "single":
            return single_attribute_targets(a, gen, self.target_min_change)
        if self.target_sampling == "uniform":
            return torch.rand(a.shape, generator=gen)
        b = a[torch.randperm(len(a), generator=gen)]
        if self.b_uniform > 0:
            u = torch.rand(a.shape, generator=gen)
            pick = torch.rand(len(a), 1, generator=gen) < self.b_uniform
            b = torch.where(pick, u, b)
        return b

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
        self._build(len(self.attributes), store.tile_size)
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
                loop.ckpt.save(epoch + 1, extra={"it": loop.it, "history": self.history,
                                                 "last_d": loop.last_d, "warmup": loop.warmup})
        finally:
            bar.close()
        self._eval()
        metrics = self.evaluate(x_all, a_all, gen)
        metrics.update(self._loss_summary(loop.warmup))
        metrics["train_seconds"] = float(time.perf_counter() - t0)
        metrics["n_train_tiles"] = int(len(x_all))
        metrics["generator_steps"] = len(self.history["g_rec"])
        if ctx.figures_dir is not None and self.history["g_rec"]:
            self.loss_figure(Path(ctx.figures_dir) / "attgan_losses.png")
        return metrics

    def _loss_summary(self, warmup_losses: list[float]) -> dict:
        """Mean of each loss over the last epoch's generator steps, and the warm-up's losses."""
        out = {}
        tail = max(1, len(self.history["g_rec"]) // max(self.epochs, 1))
        for k in LOSS_KEYS:
            h = self.history[k][-tail:]
            out[f"final_{k}"] = float(np.mean(h)) if h else float("nan")
        if warmup_losses:
            per_epoch = np.array_split(np.asarray(warmup_losses), self.classifier_warmup_epochs)
            out["warmup_d_cls_first_epoch"] = float(per_epoch[0].mean())
            out["warmup_d_cls_last_epoch"] = float(per_epoch[-1].mean())
        return out

    def _training_loop(self, x_all, a_all, gen, ctx, tile_size: int) -> SimpleNamespace:
        """Optimisers (two timescales: ``lr`` for G, ``lr_d`` for D), the EMA generator, the
        per-epoch checkpoint (restored when there is one, else the classifier warm-up runs)."""
        n = len(x_all)
        G, D = self.generator, self.discriminator
        for p in G.parameters():
            p.requires_grad_(True)
        betas = (self.beta1, self.beta2)
        opt_g = torch.optim.Adam(G.parameters(), lr=self.lr, betas=betas)
        opt_d = torch.optim.Adam(D.parameters(), lr=self._lr_d(), betas=betas)
        bs = min(self.batch_size, n)
        loop = SimpleNamespace(x_all=x_all, a_all=a_all, gen=gen, n=n, bs=bs,
                               iters=max(1, n // bs),  # drop the last incomplete batch
                               opt_g=opt_g, opt_d=opt_d, start=0, it=0, warmup=[],
                               last_d={"d_adv": float("nan"), "d_cls": float("nan"),
                                       "d_gp": float("nan")},
                               amp=self.device.type == "cuda", hint=f"lower [editor] lr "
                                                                     f"(now {self.lr})")
        self.history = {k: [] for k in LOSS_KEYS}
        modules = {"G": G, "D": D}
        if self.generator_ema is not None:
            modules["G_ema"] = self.generator_ema
        loop.ckpt = TrainingCheckpoint.for_run(
            ctx, "attgan", signature={**self.get_params(), "n": n, "tile_size": tile_size})
        loop.ckpt.bind(modules=modules, optimizers={"g": opt_g, "d": opt_d},
                       generators={"gen": gen})
        state = loop.ckpt.restore(map_location=self.device)
        if state is None:
            loop.warmup = self._classifier_warmup(x_all, a_all, gen, bs, loop.iters,
                                                  self.device, ctx)
        else:
            loop.start, loop.it = state.epoch, int(state.extra["it"])
            self.history = {k: [float(v) for v in state.extra["history"][k]] for k in LOSS_KEYS}
            loop.last_d = dict(state.extra["last_d"])
            loop.warmup = [float(v) for v in state.extra["warmup"]]
        return loop

    def _lr_d(self) -> float:
        return self.lr if self.lr_d is None else self.lr_d

    def _batch(self, loop, idx) -> torch.Tensor:
        """Tiles ``idx`` of the training set as network input in [-1, 1] on the device."""
        x = loop.x_all[idx].float().div_(255.0)[:, None]
        if self.augment:
            x = _augment(x, loop.gen)
        return (x * 2.0 - 1.0).to(self.device)

    def _train_epoch(self, loop, epoch: int, bar) -> None:
        """One epoch: a critic step every iteration, a generator step every ``n_critic``-th."""
        self.generator.train()
        self.discriminator.train()
        for p in self.generator.parameters():  # a sample figure in between froze them
            p.requires_grad_(True)
        perm = torch.randperm(loop.n, generator=loop.gen)
        scale_d = self._lr_d() / self.lr
        for b_i in range(loop.iters):
            lr = self._lr_at(epoch + b_i / loop.iters)
            for opt, f in ((loop.opt_g, 1.0), (loop.opt_d, scale_d)):
                for group in opt.param_groups:
                    group["lr"] = lr * f
            idx = perm[b_i * loop.bs:(b_i + 1) * loop.bs]
            x = self._batch(loop, idx)
            a = loop.a_all[idx]
            b = self._targets(a, loop.gen)
            a, b = a.to(self.device), b.to(self.device)
            loop.last_d = self._critic_step(loop, x, a, b)
            if loop.it % self.n_critic == self.n_critic - 1:
                g = self._generator_step(loop, x, a, b)
                for k, v in g.items():
                    self.history[k].append(v)
                for k, v in loop.last_d.items():
                    self.history[k].append(v)
                for k in LOSS_KEYS:
                    if not math.isfinite(self.history[k][-1]):
                        raise loop.ckpt.fault(f"{k} loss is {self.history[k][-1]}", epoch + 1,
                                              b_i + 1, loop.hint)
                self._update_ema()
                bar.set_postfix(rec=f"{g['g_rec']:.3f}", adv=f"{loop.last_d['d_adv']:.2f}",
                                dcls=f"{loop.last_d['d_cls']:.3f}", gcls=f"{g['g_cls']:.3f}",
                                refresh=False)
            loop.it += 1
            bar.update(1)

    def _autocast(self, loop):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=loop.amp)

    def _critic_step(self, loop, x, a, b) -> dict:
        """``-D(x) + D(G(x, b)) + lambda_gp GP + lambda_datt BCE(C(x), a)`` on DiffAugment-ed
        real and fake tiles (``diffaug``); GP on interpolates of the two, in float32."""
        G, D, gen = self.generator, self.discriminator, loop.gen
        alpha = torch.rand(len(x), 1, 1, 1, generator=gen).to(self.device)
        for p in D.parameters():
            p.requires_grad_(True)
        with torch.no_grad(), self._autocast(loop):
            fake = G(x, encode_attributes(b, self.thres_int))
        x_d = diff_augment(x, self._policy, gen)
        fake_d = diff_augment(fake.float(), self._policy, gen)
        with self._autocast(loop):
            h_real, hc_real = D.features(x_d)
            d_real = D.fc_adv(h_real).squeeze(1)
            dc_real = self._cls_logits(x_d, gen, hc_real)
            d_fake, _ = D(fake_d)
        wd = d_real.float().mean() - d_fake.float().mean()
        x_hat = (x_d + alpha * (fake_d - x_d)).requires_grad_(True)
        d_hat, _ = D(x_hat)  # float32: the gradient penalty stays out of autocast
        grad = autograd.grad(d_hat.sum(), x_hat, create_graph=True)[0]
        gp = ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()
        d_cls = F.binary_cross_entropy_with_logits(dc_real.float(), a)
        d_loss = -wd + self.lambda_gp * gp + self.lambda_datt * d_cls
        loop.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        loop.opt_d.step()
        return {"d_adv": -wd.item(), "d_cls": d_cls.item(), "d_gp": gp.item()}

    def _generator_step(self, loop, x, a, b) -> dict:
        """``-D(G(x, b)) + lambda_gatt BCE(C(G(x, b)), b) + lambda_rec L1(G(x, a), x)``."""
        G, D, gen = self.generator, self.discriminator, loop.gen
        for p in D.parameters():
            p.requires_grad_(False)
        with self._autocast(loop):
            zs = G.encode(x)
            fake = G.decode(zs, encode_attributes(b, self.thres_int))
            rec = G.decode(zs, encode_attributes(a, self.thres_int))
            fake_d = diff_augment(fake, self._policy, gen)
            h_fake, hc_fake = D.features(fake_d)
            g_fake = D.fc_adv(h_fake).squeeze(1)
            gc_fake = self._cls_logits(fake_d, gen, hc_fake)
        g_adv = -g_fake.float().mean()
        g_cls = F.binary_cross_entropy_with_logits(gc_fake.float(), b)
        g_rec = F.l1_loss(rec.float(), x)
        g_loss = g_adv + self.lambda_gatt * g_cls + self.lambda_rec * g_rec
        loop.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        loop.opt_g.step()
        return {"g_rec": g_rec.item(), "g_adv": g_adv.item(), "g_cls": g_cls.item()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        """``G_ema <- beta G_ema + (1 - beta) G`` after a generator step, with the ramp-up
        ``beta = min(g_ema, (1 + s) / (10 + s))`` at generator step ``s`` (the num_updates rule of
        TensorFlow's ExponentialMovingAverage) so that short trainings are not stuck at the initial
        weights; batch-norm buffers are copied (as StyleGAN2-ADA's G_ema)."""
        ema = self.generator_ema
        if ema is None:
            return
        s = len(self.history["g_rec"])
        beta = min(float(self.g_ema), (1.0 + s) / (10.0 + s))
        for pe, p in zip(ema.parameters(), self.generator.parameters()):
            pe.lerp_(p.detach(), 1.0 - beta)
        for be, bg in zip(ema.buffers(), self.generator.buffers()):
            be.copy_(bg)

    def _classifier_warmup(self, x_all, a_all, gen, bs, iters, device, ctx) -> list[float]:
        """``classifier_warmup_epochs`` epochs of the discriminator trunk + attribute head alone on
        real tiles (BCE against the soft lot labels), Adam(classifier_warmup_lr or lr), so that the
        generator gets a meaningful attribute gradient from its first step."""
        from tqdm.auto import tqdm

        if not self.classifier_warmup_epochs:
            return []
        D = self.discriminator
        params = list(D.conv.parameters()) + list(D.fc_cls.parameters())
        for p in D.parameters():
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=self.classifier_warmup_lr or self.lr,
                               betas=(self.beta1, self.beta2))
        use_amp = device.type == "cuda"
        losses: list[float] = []
        n = len(x_all)
        D.train()
        bar = tqdm(total=self.classifier_warmup_epochs * iters, desc="attgan classifier warm-up",
                   disable=not ctx.progress, dynamic_ncols=True)
        for _ in range(self.classifier_warmup_epochs):
            perm = torch.randperm(n, generator=gen)
            for b_i in range(iters):
                idx = perm[b_i * bs:(b_i + 1) * bs]
                x = x_all[idx].float().div_(255.0)[:, None]
                if self.augment:
                    x = _augment(x, gen)
                x = diff_augment((x * 2.0 - 1.0).to(device), self._policy, gen)
                a = a_all[idx].to(device)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    logits = self._cls_logits(x, gen)
                loss = F.binary_cross_entropy_with_logits(logits.float(), a)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                if not math.isfinite(losses[-1]):
                    bar.close()
                    raise UserError(f"attgan: classifier warm-up loss is {losses[-1]}; lower "
                                    f"[editor] classifier_warmup_lr (now "
                                    f"{self.classifier_warmup_lr or self.lr})")
                bar.set_postfix(cls=f"{losses[-1]:.3f}", refresh=False)
                bar.update(1)
        bar.close()
        return losses

    # ---- evaluation and figures ---------------------------------------------------------------
    def evaluate(self, x_all: torch.Tensor, a_all: torch.Tensor, gen: torch.Generator,
                 n_max: int = 512, batch: int = 128) -> dict:
        """Reconstruction L1/MSE (in [0, 1] grey levels) and the classifier's attribute accuracy on
        real tiles (against the lot labels) and on edited tiles (against the requested targets)."""
        sel = torch.randperm(len(x_all), generator=gen)[: min(n_max, len(x_all))]
        l1 = mse = 0.0
        real_p, real_a, fake_p, fake_b = [], [], [], []
        with torch.no_grad():
            for i in range(0, len(sel), batch):
                idx = sel[i:i + batch]
                t = x_all[idx].float().div(255.0)[:, None].to(self.device)
                a = a_all[idx].to(self.device)
                b = self._targets(a_all[idx], gen).to(self.device)
                zs = self.encode(t)
                rec = self.decode(zs, a)
                fake = self.decode(zs, b)
                l1 += float((rec - t).abs().mean(dim=(1, 2, 3)).sum())
                mse += float(((rec - t) ** 2).mean(dim=(1, 2, 3)).sum())
                real_p.append(self.classify(t).cpu())
                real_a.append(a.cpu())
                fake_p.append(self.classify(fake).cpu())
                fake_b.append(b.cpu())
        m = len(sel)
        rp, ra, fp, fb = (torch.cat(v) for v in (real_p, real_a, fake_p, fake_b))
        out = {"reconstruction_l1": l1 / m, "reconstruction_mse": mse / m}
        for tag, p, y in (("real", rp, ra), ("edited", fp, fb)):
            out[f"classifier_{tag}_mae"] = float((p - y).abs().mean())
            out[f"classifier_{tag}_accuracy"] = float(((p > 0.5) == (y > 0.5)).float().mean())
            for j, name in enumerate(self.attributes):
                out[f"classifier_{tag}_mae_{name}"] = float((p[:, j] - y[:, j]).abs().mean())
        return out

    def loss_figure(self, path: Path) -> Path:
        """Figure 10 of seed 000: the four training curves."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = (("g_rec", "(a) generator reconstruction loss (L1)"),
                  ("d_adv", "(b) discriminator adversarial loss (-W distance)"),
                  ("d_cls", "(c) classifier loss, real tiles (D)"),
                  ("g_cls", "(d) classifier loss, generated tiles (G)"))
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
        for ax, (key, title) in zip(axes, panels):
            y = np.asarray(self.history[key], dtype=float)
            ax.plot(y, lw=0.6, alpha=0.4, color="C0")
            if len(y) >= 10:
                w = max(2, len(y) // 50)
                ax.plot(np.arange(w - 1, len(y)), np.convolve(y, np.ones(w) / w, "valid"),
                        color="C1", lw=1.2)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("generator step")
        return save_figure(fig, path, dpi=100)

    def sample_figure(self, tiles_u8: torch.Tensor, path: Path, delta: float = 0.5) -> Path:
        """Rows: tiles; columns: original, then each attribute set to 0 and to 1 (others at 0.5)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = tiles_u8.float().div(255.0)[:, None]
        k = len(self.attributes)
        cols = [t]
        with torch.no_grad():
            zs = self.encode(t)
            for j in range(k):
                for v in (0.0, 1.0):
                    a = torch.full((len(t), k), 0.5)
                    a[:, j] = v
                    cols.append(self.decode(zs, a).cpu())
        titles = ["original"] + [f"{n}={v:g}" for n in self.attributes for v in (0.0, 1.0)]
        fig, axes = plt.subplots(len(t), len(cols), figsize=(1.6 * len(cols), 1.6 * len(t)),
                                 squeeze=False)
        for r in range(len(t)):
            for c, col in enumerate(cols):
                ax = axes[r, c]
                ax.imshow(col[r, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(titles[c], fontsize=7)
        return save_figure(fig, path, dpi=80)

    # ---- trust: the README's failure signs (mxplain.trust's editor_health gate) ----------------
    def health(self, metrics: dict, store=None) -> list[tuple[str, str, str]]:
        """Two failure signs of the README against the training history (``history``, kept in
        the checkpoint): the real-tile attribute classifier that never gets far from the
        no-information loss towards the soft-label floor (share of that gap closed by the last
        10 % of critic steps: pass >= 0.5, warn >= 0.2, else fail; floor and no-information
        loss from ``store``'s lot labels), and a reconstruction L1 that does not fall (last 10 %
        of generator steps over the first 10 %: pass <= 0.5, warn <= 0.8, else fail)."""
        hist = getattr(self, "history", None) or {}
        rec, cls = list(hist.get("g_rec") or []), list(hist.get("d_cls") or [])
        if not rec:
            return [("training history", "warn", "the AttGAN records no training losses "
                                                 "(nothing to check its training by)")]
        tail = max(1, len(rec) // 10)
        ratio = float(np.mean(rec[-tail:]) / max(np.mean(rec[:tail]), 1e-12))
        out = [("reconstruction loss falls",
                "pass" if ratio <= 0.5 else "warn" if ratio <= 0.8 else "fail",
                f"reconstruction L1 fell to {ratio:.2f} x its start (the README's failure sign: "
                f"a reconstruction loss that does not fall)")]
        if cls and store is not None and store.n_tiles:
            a = np.clip(np.repeat(np.asarray(store.lot_attributes, np.float64),
                                  np.asarray(store.counts), axis=0), 1e-6, 1 - 1e-6)
            m = np.clip(a.mean(axis=0, keepdims=True), 1e-6, 1 - 1e-6)
            floor = float(-(a * np.log(a) + (1 - a) * np.log(1 - a)).mean())
            none = float(-(a * np.log(m) + (1 - a) * np.log(1 - m)).mean())
            final = float(np.mean(cls[-max(1, len(cls) // 10):]))
            closed = (none - final) / max(none - floor, 1e-9)
            out.append(("attribute classifier learns",
                        "pass" if closed >= 0.5 else "warn" if closed >= 0.2 else "fail",
                        f"real-tile classifier BCE {final:.3f} closed {closed:.0%} of the gap from "
                        f"the no-information loss {none:.3f} to the soft-label floor {floor:.3f} "
                        f"(the README's failure sign: it never beats the floor by much, the "
                        f"edits then do not follow the request)"))
        return out
