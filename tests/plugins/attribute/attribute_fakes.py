"""Hand-written fake models with a known, linear attribute -> property law."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from mxplain.interfaces import Editor, ExplainContext, Lot, NoLearnedState, Predictor
from mxplain.store import to_uint8

ATTRS = ("size", "porosity", "polydispersity", "facetness")
COEF = (0.10, -0.05, 0.0, 0.08)  # brightness change per unit attribute
SCALE, OFFSET = 1000.0, 100.0  # predictor: SCALE * mean brightness + OFFSET
TRUE_SLOPES = tuple(SCALE * c for c in COEF)  # (100, -50, 0, 80) property units per unit attr


class FakeEditor(NoLearnedState, Editor):
    """decode = 0.3 + 0.2 * tile + attrs . coef (stays inside [0, 1]); latent is a tuple."""

    name = "fake-editor"
    attributes = ATTRS

    def __init__(self, coef: tuple = COEF):
        self.coef = coef
        self.encode_calls = 0
        self.encoded_rows = 0

    def encode(self, tiles):
        self.encode_calls += 1
        self.encoded_rows += len(tiles)
        return (0.2 * tiles, tiles.mean(dim=(1, 2, 3)))

    def decode(self, latent, attributes):
        img, _ = latent
        shift = attributes.float() @ torch.as_tensor(self.coef, dtype=torch.float32,
                                                     device=attributes.device)
        return 0.3 + img + shift[:, None, None, None]


class FakePredictor(NoLearnedState, Predictor):
    """SCALE * mean brightness + OFFSET (differentiable torch)."""

    name = "fake-predictor"

    def forward(self, tiles):
        return SCALE * tiles.mean(dim=(1, 2, 3)) + OFFSET


class NumpyPredictor(FakePredictor):
    """The same law computed in numpy: no gradients."""

    name = "numpy-predictor"
    differentiable = False

    def forward(self, tiles):
        arr = tiles.detach().cpu().numpy().astype(np.float64)
        return torch.from_numpy(SCALE * arr.mean(axis=(1, 2, 3)) + OFFSET).float()


def make_lots(n_lots=3, n_tiles=5, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    lots = []
    for i in range(n_lots):
        tiles = torch.rand((n_tiles + i, 1, size, size), generator=g)
        attrs = rng.uniform(0.3, 0.7, len(ATTRS)).astype(np.float32)
        lots.append(Lot(i, f"L{i}", tiles, attrs, float(500 + 100 * i)))
    return lots


def make_ctx(tmp_path=None, predictor=None, editor=None, truth=None):
    return ExplainContext(out_dir=tmp_path, progress=False, predictor=predictor or FakePredictor(),
                          editor=editor or FakeEditor(), attributes=ATTRS,
                          property_name="peak_stress", property_units="psi",
                          true_sensitivity=truth)


def build_cube(explainer, lots, ctx, truth=None):
    """What the pipeline does: variables padded on the tile axis, plus the base variables."""
    variables = explainer.variables(ctx)
    per_lot = [explainer.explain_lot(lot, ctx) for lot in lots]
    n_tile = max(len(lot.tiles) for lot in lots)
    coords = {"lot": [lot.lot_id for lot in lots], "tile": np.arange(n_tile),
              "attribute": list(ATTRS), "direction": ["increase", "decrease"]}
    for dim, vals in explainer.extra_dims().items():
        coords[dim] = vals
    data = {}
    for name, var in variables.items():
        dims = var.dims[1:]
        arrs = []
        for vals in per_lot:
            a = np.asarray(vals[name]).astype(var.dtype)
            if "tile" in dims:
                ax = dims.index("tile")
                pad = [(0, 0)] * a.ndim
                pad[ax] = (0, n_tile - a.shape[ax])
                a = np.pad(a, pad, constant_values=var.fill)
            arrs.append(a)
        data[name] = (var.dims, np.stack(arrs))
    mask = np.zeros((len(lots), n_tile), bool)
    for i, lot in enumerate(lots):
        mask[i, : len(lot.tiles)] = True
    data["tile_mask"] = (("lot", "tile"), mask)
    data["lot_attributes"] = (("lot", "attribute"), np.stack([lot.attributes for lot in lots]))
    data["measured_property"] = (("lot",), np.array([lot.property for lot in lots]))
    data["prediction"] = (("lot", "tile"), np.zeros((len(lots), n_tile), np.float32))
    data["example_tile"] = (("lot", "y", "x"), np.stack([to_uint8(lot.tiles[:1])[0]
                                                         for lot in lots]))
    if truth is not None:
        data["true_sensitivity"] = (("lot", "attribute"),
                                    np.tile(np.asarray(truth, np.float64), (len(lots), 1)))
    return xr.Dataset(data, coords=coords)


class ConvEditor(NoLearnedState, Editor):
    """A small random convolutional editor (fixed seed): ``encode`` = a stride-2 conv, ``decode`` =
    a transposed conv of ``[latent, attribute maps]`` and a conv, like the AttGAN's decoder. Its
    backward pass is big enough that torch splits float reductions over threads (the gradient of
    an odd batch then changes in its last bits with the thread count), unlike the linear fakes."""

    name = "conv-editor"
    attributes = ATTRS

    def __init__(self, width: int = 16, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.w_enc = torch.randn(width, 1, 4, 4, generator=g) * 0.3
        self.w_up = torch.randn(width + len(ATTRS), width, 4, 4, generator=g) * 0.1
        self.w_out = torch.randn(1, width, 3, 3, generator=g) * 0.1

    def encode(self, tiles):
        return torch.relu(torch.nn.functional.conv2d(tiles, self.w_enc, stride=2, padding=1))

    def decode(self, latent, attributes):
        n, _, h, w = latent.shape
        maps = attributes.float()[:, :, None, None].expand(n, len(ATTRS), h, w)
        z = torch.nn.functional.conv_transpose2d(torch.cat([latent, maps], 1), self.w_up,
                                                 stride=2, padding=1)
        return torch.sigmoid(torch.nn.functional.conv2d(torch.relu(z), self.w_out, padding=1))


class ConvPredictor(NoLearnedState, Predictor):
    """A random stride-2 conv feature map, pooled, through a fixed linear read-out."""

    name = "conv-predictor"

    def __init__(self, width: int = 16, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(width, 1, 3, 3, generator=g) * 0.5
        self.v = torch.randn(width, generator=g)

    def forward(self, tiles):
        z = torch.nn.functional.conv2d(tiles, self.w, stride=2, padding=1)
        return 500.0 + 400.0 * (torch.tanh(z).mean(dim=(2, 3)) @ self.v)


class CodeEditor(NoLearnedState, Editor):
    """An editor whose output encodes the attributes: ``decode`` is the tile with its first row's
    first K pixels replaced by the attributes (the rest of the tile, e.g. per-tile slope noise,
    passes through)."""

    name = "code-editor"
    attributes = ATTRS

    def encode(self, tiles):
        return tiles.clone()

    def decode(self, latent, attributes):
        out = latent.clone()
        out[:, 0, 0, : attributes.shape[1]] = attributes.float()
        return out


class NoisySlopePredictor(NoLearnedState, Predictor):
    """Linear in the attributes with per-tile slope noise: for a tile from :func:`noisy_lot`
    ``p = sum_k (slope_k + e_k) a_k + offset``, ``e_k`` the tile's row-1 pixels (``N(0, sigma)``,
    independent per tile), ``offset`` its row-2 pixel. The lot's true sensitivity is ``slope``."""

    name = "noisy-slope-predictor"

    def __init__(self, slope: tuple = TRUE_SLOPES):
        self.slope = slope

    def forward(self, tiles):
        k = len(self.slope)
        a, e = tiles[:, 0, 0, :k], tiles[:, 0, 1, :k]
        b = torch.as_tensor(self.slope, dtype=torch.float32, device=tiles.device)
        return ((b + e) * a).sum(dim=1) + tiles[:, 0, 2, 0]


def noisy_lot(n_tiles: int, seed: int, sigma: float = 20.0, index: int = 0, size: int = 8):
    """A lot for :class:`CodeEditor` + :class:`NoisySlopePredictor`: each tile carries its slope
    noise ``N(0, sigma)`` per attribute (row 1) and an offset (row 2)."""
    rng = np.random.default_rng(seed)
    tiles = np.zeros((n_tiles, 1, size, size), np.float32)
    tiles[:, 0, 1, : len(ATTRS)] = rng.normal(0.0, sigma, (n_tiles, len(ATTRS)))
    tiles[:, 0, 2, 0] = rng.normal(500.0, 50.0, n_tiles)
    attrs = rng.uniform(0.3, 0.7, len(ATTRS)).astype(np.float32)
    return Lot(index, f"N{index}", torch.from_numpy(tiles), attrs, 500.0)
