"""AttGAN networks (He et al., "AttGAN: Facial Attribute Editing by Only Changing What You Want",
IEEE TIP 2019), as used for SEM tiles in seed 000 §4.2 and supplement C.

Generator
    Encoder: ``n_layers`` blocks Conv(4x4, stride 2, pad 1) + BatchNorm + LeakyReLU(0.2), channels
    ``min(enc_dim * 2**i, 1024)``. The latent is the tuple of every encoder block's output (batch
    first); the last one is the bottleneck.
    Decoder: the attribute code is tiled to the bottleneck's spatial size and concatenated to it,
    then ``n_layers`` blocks ConvTranspose(4x4, stride 2, pad 1) + BatchNorm + ReLU, channels
    ``min(dec_dim * 2**(n_layers - i - 1), 1024)``; the last block maps to 1 channel + tanh. After
    decoder block ``i < shortcut_layers`` the encoder feature of the same resolution is concatenated
    (U-Net skip), after block ``i < inject_layers`` the tiled attribute code again (both capped at
    ``n_layers - 1``), as in the reference implementation.

    Recipe option ``upsample`` (default ``"transpose"`` = the reference): ``"resize"`` replaces
    every ConvTranspose(4x4, stride 2) by nearest-neighbour upsampling x2 + Conv(3x3, pad 1), the
    resize-convolution of Odena, Dumoulin & Olah ("Deconvolution and Checkerboard Artifacts",
    Distill 2016). A stride-2 transposed convolution with a 4x4 kernel overlaps unevenly, so the
    reference decoder leaves a period-2/period-4 pattern: on the shipped quickstart editor the
    reconstructions carry 8.9x the real tiles' power at the Nyquist frequency (32, 32) and 3.7-4.5x
    at (16, 32) and (32, 16), which a small critic reads at once (realism AUC 0.99).

    Recipe option ``noise`` (default False = the reference): per-pixel noise inputs (Karras et
    al., StyleGAN, CVPR 2019, "stochastic variation"; StyleGAN2's zero-initialised per-channel
    weights): a standard normal image ``n`` of the tile's size is added, times a learned
    per-channel weight, to the input of the last decoder block (``n`` average-pooled to its
    resolution) and, times a learned scalar, to the output before the tanh. A decoder without it
    renders detector noise as blur: on the resize-upsampling quickstart editor the
    reconstructions keep 0.34x the real tiles' power at the highest frequencies. The noise is the
    last element of the latent (:meth:`Generator.encode`): fresh draws in training, a per-tile
    deterministic draw at inference (the editor seeds it from the tile's grey levels), so an edit
    of a tile keeps the tile's noise and every explanation is reproducible.

    Recipe option ``res_blocks`` (default 0 = the reference): that many residual blocks
    ``x + BN(Conv3x3(ReLU(BN(Conv3x3(x)))))`` (the ResNet basic block of He et al. 2016, as in
    the CycleGAN / StarGAN generators) on the attribute-conditioned bottleneck, before the first
    decoder block: more capacity where the tile's content and the code meet, at the cheapest
    resolution.

    Recipe option ``gated_shortcuts`` (default 0 = the reference): that many further U-Net skips
    after the ``shortcut_layers`` plain ones, each multiplied channel- and pixel-wise by a gate
    ``sigmoid(Conv3x3([decoder features, skip, tiled code]))`` before it is concatenated. A plain
    skip at the finest scales carries every pit and outline, and the decoder copies them
    whatever the code says (plugins/mxplain_attgan/README.md, third pass); a gate that sees the
    code can pass the tile's detail where the request keeps it and hold it back where the request
    removes it. After STGAN's selective transfer units (Liu et al., CVPR 2019); deviation: one
    convolution and a sigmoid, conditioned on the target code (AttGAN's), not a GRU-like unit
    driven by the difference of the target and source attributes.

Discriminator
    ``n_layers`` blocks Conv(4x4, stride 2) + InstanceNorm(affine) (or LayerNorm) + LeakyReLU(0.2) -
    no BatchNorm because of the gradient penalty - then two heads: an adversarial critic
    FC(dis_fc_dim) + LeakyReLU + FC(1) on the flattened last features, and an attribute classifier
    FC(dis_fc_dim) + LeakyReLU + FC(n_attributes) giving logits. The classifier's input
    (``cls_pool``) is the flattened last features (``"flatten"``, the reference) or the spatial
    mean of every block's output, concatenated (``"mean"``: a translation-invariant, multi-scale
    texture descriptor, the first-order statistics that seed 002 found as good as Gram matrices),
    or (``"stats"``) not the trunk at all: a linear map of fixed, differentiable texture statistics
    of the tile (:class:`~mxplain_attgan.texture.TextureHead`; no spectral norm on it), which
    cannot memorise a lot from its tiles and so generalises to unseen lots.

    Recipe option ``spectral_norm`` (default False = the reference): spectral normalisation
    (Miyato et al., ICLR 2018; ``torch.nn.utils.parametrizations.spectral_norm``, one power
    iteration per training forward) of every convolution and linear layer of the discriminator.
    Deviation: the reference AttGAN uses the WGAN-GP penalty alone; here both can be on.

    Deviation for textures: the reference's flatten head memorises the layout of a tile, and
    instance norm removes exactly the per-channel means a texture attribute lives in. On the
    quickstart data (16 lots, 64 px) a classifier trunk + head trained alone on lot labels reaches
    held-out-lot Spearman rho (size, porosity, polydispersity, facetness) = (0.74, 0.01, 0.09, 0.08)
    with instance norm + flatten and (0.91, -0.10, 0.58, 0.67) with ``norm="layernorm"`` and
    ``cls_pool="mean"``.

Attribute encoding (explicit)
    A user attribute ``a`` in [0, 1] becomes the internal code ``c = (2 a - 1) * thres_int``
    (:func:`encode_attributes`; ``thres_int`` default 0.5 as in the reference), so the generator
    sees codes in ``[-thres_int, thres_int]``. The classifier predicts logits of ``a`` itself,
    trained with BCE-with-logits against the soft label ``a`` (continuous lot labels broadcast to
    every tile).

Images
    Networks work on images in [-1, 1] (``x = 2 t - 1`` for tiles ``t`` in [0, 1]); the editor maps
    back with ``t = (y + 1) / 2``.
"""

from __future__ import annotations

import torch
from torch import nn

from .texture import TextureHead

MAX_DIM = 1024
CLS_POOLS = ("flatten", "mean", "stats")
UPSAMPLES = ("transpose", "resize")


def encode_attributes(a: torch.Tensor, thres_int: float) -> torch.Tensor:
    """User attributes in [0, 1] -> generator codes ``(2a - 1) * thres_int``."""
    return (a * 2.0 - 1.0) * thres_int


def decode_attributes(c: torch.Tensor, thres_int: float) -> torch.Tensor:
    """Inverse of :func:`encode_attributes`."""
    return (c / thres_int + 1.0) / 2.0


def _enc_channels(enc_dim: int, n_layers: int) -> list[int]:
    return [min(enc_dim * 2**i, MAX_DIM) for i in range(n_layers)]


def _dec_channels(dec_dim: int, n_layers: int) -> list[int]:
    return [min(dec_dim * 2 ** (n_layers - i - 1), MAX_DIM) for i in range(n_layers - 1)]


class ResBlock(nn.Module):
    """``x + BN(Conv3x3(ReLU(BN(Conv3x3(x)))))``: the basic residual block (He et al. 2016)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class NearestUp2(nn.Module):
    """Nearest-neighbour x2 upsampling as a broadcast copy: the values of
    ``nn.Upsample(scale_factor=2, mode="nearest")`` bit for bit, 1.2x faster through decode +
    predict on a CPU (``benchmarks/explain_gains.py upsample``), and the same gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def upsample_conv(n_in: int, n_out: int, mode: str, bias: bool) -> list[nn.Module]:
    """x2 upsampling layers: ConvTranspose(4x4, s2) (``"transpose"``) or nearest x2 + Conv3x3
    (``"resize"``); see ``upsample`` in the module docstring."""
    if mode == "transpose":
        return [nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1, bias=bias)]
    if mode == "resize":
        return [NearestUp2(),
                nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)]
    raise ValueError(f"upsample must be one of {list(UPSAMPLES)}, got {mode!r}")


class Generator(nn.Module):
    """AttGAN encoder-decoder; see the module docstring."""

    def __init__(self, n_attributes: int, enc_dim: int = 64, dec_dim: int = 64, n_layers: int = 5,
                 shortcut_layers: int = 1, inject_layers: int = 1, in_channels: int = 1,
                 res_blocks: int = 0, upsample: str = "transpose", noise: bool = False,
                 gated_shortcuts: int = 0):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_attributes = n_attributes
        self.n_layers = n_layers
        self.shortcut_layers = max(0, min(shortcut_layers, n_layers - 1))
        self.inject_layers = max(0, min(inject_layers, n_layers - 1))
        self.gated_shortcuts = max(0, min(gated_shortcuts, n_layers - 1 - self.shortcut_layers))
        enc_ch = _enc_channels(enc_dim, n_layers)
        dec_ch = _dec_channels(dec_dim, n_layers)
        self.enc_ch = enc_ch

        enc = []
        n_in = in_channels
        for n_out in enc_ch:
            enc.append(nn.Sequential(
                nn.Conv2d(n_in, n_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(n_out),
                nn.LeakyReLU(0.2),
            ))
            n_in = n_out
        self.enc_layers = nn.ModuleList(enc)

        n_in = enc_ch[-1] + n_attributes
        self.res_layers = nn.Sequential(*(ResBlock(n_in) for _ in range(max(0, res_blocks))))
        dec, gates = [], []
        for i in range(n_layers):
            if i < n_layers - 1:
                n_out = dec_ch[i]
                dec.append(nn.Sequential(
                    *upsample_conv(n_in, n_out, upsample, bias=False),
                    nn.BatchNorm2d(n_out),
                    nn.ReLU(),
                ))
                n_in = n_out
                n_skip = enc_ch[n_layers - 2 - i]
                if self.shortcut_layers <= i < self.shortcut_layers + self.gated_shortcuts:
                    gates.append(nn.Conv2d(n_out + n_skip + n_attributes, n_skip, 3, padding=1))
                if i < self.shortcut_layers + self.gated_shortcuts:
                    n_in += n_skip
                if i < self.inject_layers:
                    n_in += n_attributes
            else:
                dec.append(nn.Sequential(
                    *upsample_conv(n_in, in_channels, upsample, bias=True),
                    nn.Tanh(),
                ))
        self.dec_layers = nn.ModuleList(dec)
        self.gates = nn.ModuleList(gates)
        self.noise = bool(noise)
        if self.noise:  # zero-initialised: training starts from the noise-free generator
            self.noise_weight = nn.Parameter(torch.zeros(1, n_in, 1, 1))
            self.noise_out = nn.Parameter(torch.zeros(()))

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, ...]:
        """Images in [-1, 1] -> every encoder block's output (the last one is the bottleneck);
        with ``noise`` on, followed by the noise image ``(N, 1, H, W)`` (``noise``, or a fresh
        standard normal draw)."""
        zs = []
        z = x
        for layer in self.enc_layers:
            z = layer(z)
            zs.append(z)
        if self.noise:
            zs.append(torch.randn_like(x[:, :1]) if noise is None else noise.to(x))
        return tuple(zs)

    def _last_block(self, layer: nn.Module, z: torch.Tensor, noise: torch.Tensor | None):
        if noise is None:
            return layer(z)
        n = noise.to(z.dtype)
        z = z + self.noise_weight.to(z.dtype) * nn.functional.adaptive_avg_pool2d(n, z.shape[-2:])
        *body, tanh = layer
        for m in body:
            z = m(z)
        return tanh(z + self.noise_out.to(z.dtype) * n)

    @staticmethod
    def _tile(c: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return c.view(c.size(0), -1, 1, 1).expand(-1, -1, h, w).to(c.dtype)

    def decode(self, zs: tuple[torch.Tensor, ...], c: torch.Tensor) -> torch.Tensor:
        """Encoder features and attribute codes ``(N, K)`` -> images in [-1, 1]."""
        if c.ndim != 2 or c.size(1) != self.n_attributes:
            raise ValueError(f"attributes must have shape (N, {self.n_attributes}), "
                             f"got {tuple(c.shape)}")
        want = self.n_layers + int(self.noise)
        if len(zs) != want:
            raise ValueError(f"latent must hold {want} tensors ({self.n_layers} encoder features"
                             f"{' and the noise image' if self.noise else ''}), got {len(zs)}")
        noise = zs[-1] if self.noise else None
        zs = zs[: self.n_layers]
        z = zs[-1]
        z = self.res_layers(torch.cat([z, self._tile(c, z.size(2), z.size(3)).to(z.dtype)], dim=1))
        last = len(self.dec_layers) - 1
        for i, layer in enumerate(self.dec_layers):
            z = self._last_block(layer, z, noise) if i == last else layer(z)
            if i < self.shortcut_layers + self.gated_shortcuts:
                skip = zs[self.n_layers - 2 - i].to(z.dtype)
                if i >= self.shortcut_layers:
                    skip = skip * self.gate(i, z, skip, c)
                z = torch.cat([z, skip], dim=1)
            if i < self.inject_layers:
                z = torch.cat([z, self._tile(c, z.size(2), z.size(3)).to(z.dtype)], dim=1)
        return z

    def gate(self, i: int, z: torch.Tensor, skip: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """The selective gate in [0, 1] of decoder block ``i``'s skip (``gated_shortcuts``)."""
        tiled = self._tile(c, z.size(2), z.size(3)).to(z.dtype)
        return torch.sigmoid(self.gates[i - self.shortcut_layers](torch.cat([z, skip, tiled], 1)))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), c)


class Discriminator(nn.Module):
    """WGAN-GP critic plus attribute classifier sharing one convolutional trunk."""

    def __init__(self, n_attributes: int, image_size: int, dim: int = 64, fc_dim: int = 1024,
                 n_layers: int = 5, norm: str = "instancenorm", in_channels: int = 1,
                 cls_pool: str = "flatten", spectral_norm: bool = False,
                 trunk_columns: tuple[int, ...] = ()):
        super().__init__()
        if cls_pool not in CLS_POOLS:
            raise ValueError(f"cls_pool must be one of {list(CLS_POOLS)}, not {cls_pool!r}")
        if trunk_columns and cls_pool != "stats":
            raise ValueError("trunk_columns needs cls_pool = 'stats'")
        self.cls_pool = cls_pool
        self.trunk_columns = tuple(int(c) for c in trunk_columns)
        if image_size % (2**n_layers):
            raise ValueError(f"tile size {image_size} is not divisible by 2**n_layers = "
                             f"{2**n_layers}")
        if norm == "instancenorm" and image_size // 2**n_layers < 2:
            raise ValueError(f"tile size {image_size} with n_layers={n_layers} leaves 1x1 "
                             f"features, where instance norm is undefined; use layernorm or "
                             f"fewer layers")
        if norm not in ("instancenorm", "layernorm"):
            raise ValueError(f"discriminator norm must be 'instancenorm' or 'layernorm', "
                             f"not {norm!r}")
        layers = []
        n_in = in_channels
        size = image_size
        widths = []
        for i in range(n_layers):
            n_out = min(dim * 2**i, MAX_DIM)
            size //= 2
            norm_layer = (nn.InstanceNorm2d(n_out, affine=True) if norm == "instancenorm"
                          else nn.GroupNorm(1, n_out))  # GroupNorm(1, C) is LayerNorm over C,H,W
            layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), norm_layer,
                       nn.LeakyReLU(0.2)]
            n_in = n_out
            widths.append(n_out)
        self.conv = nn.Sequential(*layers)
        flat = n_in * size * size
        cls_in = flat if cls_pool == "flatten" else sum(widths)
        self.fc_adv = nn.Sequential(nn.Linear(flat, fc_dim), nn.LeakyReLU(0.2),
                                    nn.Linear(fc_dim, 1))
        self.fc_cls = (nn.Sequential(nn.Linear(cls_in, fc_dim), nn.LeakyReLU(0.2),
                                     nn.Linear(fc_dim, n_attributes)) if cls_pool != "stats"
                       else TextureHead(n_attributes))
        self.fc_cls_trunk = None
        if self.trunk_columns:
            self.fc_cls_trunk = nn.Sequential(nn.Linear(sum(widths), fc_dim), nn.LeakyReLU(0.2),
                                              nn.Linear(fc_dim, n_attributes))
            mask = torch.zeros(n_attributes, dtype=torch.bool)
            mask[list(self.trunk_columns)] = True
            self.register_buffer("trunk_mask", mask, persistent=False)
        if spectral_norm:
            sn = nn.utils.parametrizations.spectral_norm
            heads = ((self.fc_cls,) if cls_pool != "stats" else ()) + (
                (self.fc_cls_trunk,) if self.fc_cls_trunk is not None else ())
            for seq in (self.conv, self.fc_adv) + heads:
                for i, m in enumerate(seq):
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        seq[i] = sn(m)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] -> (critic features, classifier input), both batch first (with
        ``cls_pool = "stats"`` the classifier input is the images themselves, or with
        ``trunk_columns`` the trunk's block means, as ``"mean"``)."""
        if self.cls_pool == "stats" and not self.trunk_columns:
            return self.conv(x).flatten(1), x
        if self.cls_pool == "flatten":
            h = self.conv(x).flatten(1)
            return h, h
        means = []
        for i in range(0, len(self.conv), 3):
            x = self.conv[i + 2](self.conv[i + 1](self.conv[i](x)))
            means.append(x.mean(dim=(2, 3)))
        return x.flatten(1), torch.cat(means, dim=1)

    def classify(self, plain: torch.Tensor, h_cls: torch.Tensor) -> torch.Tensor:
        """Attribute logits ``(N, K)`` from the classifier input ``h_cls`` of :meth:`features`;
        the texture head of ``cls_pool = "stats"`` reads the images ``plain`` instead, and the
        ``trunk_columns`` come from a head on the trunk's block means."""
        if self.cls_pool != "stats":
            return self.fc_cls(h_cls)
        logits = self.fc_cls(plain)
        if self.fc_cls_trunk is None:
            return logits
        return torch.where(self.trunk_mask, self.fc_cls_trunk(h_cls).to(logits.dtype), logits)

    def classifier_parameters(self) -> list[nn.Parameter]:
        """The trunk's and the attribute heads' parameters (what the classifier warm-up trains)."""
        heads = [self.fc_cls] + ([self.fc_cls_trunk] if self.fc_cls_trunk is not None else [])
        return list(self.conv.parameters()) + [p for h in heads for p in h.parameters()]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] -> (critic score ``(N,)``, attribute logits ``(N, K)``)."""
        h_adv, h_cls = self.features(x)
        return self.fc_adv(h_adv).squeeze(1), self.classify(x, h_cls)
