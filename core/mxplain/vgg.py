"""The project's one VGG feature extractor (no torchvision needed), in the core because two plugins
use it (``mxplain_vgg``'s texture features, ``mxplain_texturevae``'s encoder and ``latent_krr``).

``VGG(arch)`` builds ``self.features`` as an ``nn.Sequential`` laid out exactly like
torchvision's ``vgg16().features`` / ``vgg19().features`` (same indices: 3x3 conv with padding 1,
ReLU, 2x2 max pool), so the ``features.N.weight`` / ``features.N.bias`` entries of a torchvision
state dict load unchanged; the classifier is not built and its keys are ignored.  ReLUs are *not*
in-place so that every intermediate activation can be returned.

Grayscale input
    Tiles are ``(N, 1, H, W)`` in [0, 1].  They are normalised with the ImageNet statistics
    converted to grey (mean 0.449, std 0.226: the averages of torchvision's per-channel means and
    stds), and the first convolution's RGB weights are **folded** by summing over the input
    channels.  With one normalisation for all three channels this is exactly what the RGB network
    computes on the grey tile replicated to 3 channels, at a third of the first layer's cost.
    ``features.0.weight`` keeps its torchvision shape ``(64, 3, 3, 3)``; the fold happens in
    ``forward``.

Weights (``load_vgg``)
    1. an explicit torchvision-format file (``weights=``), loaded with
       ``torch.load(weights_only=True)``;
    2. else the torch hub cache (``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth`` or
       ``vgg19-dcbb9e9d.pth``);
    3. else a seeded random initialisation (Kaiming normal, fan-out, as torchvision), with a
       warning: random-filter VGG features are a documented texture descriptor, but results differ
       from the ImageNet weights.  Nothing is ever downloaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mxplain.errors import UserError

GREY_MEAN = 0.449
GREY_STD = 0.226

CFGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}

HUB_FILES = {"vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth"}


def _layer_names(cfg: list[int | str]) -> dict[str, int]:
    names: dict[str, int] = {}
    block, conv, idx = 1, 1, 0
    for v in cfg:
        if v == "M":
            names[f"pool{block}"] = idx
            idx += 1
            block, conv = block + 1, 1
        else:
            names[f"conv{block}_{conv}"] = idx
            names[f"relu{block}_{conv}"] = idx + 1
            idx += 2
            conv += 1
    return names


#: ordered layer names (conv1_1, relu1_1, ..., pool5) -> index in ``VGG.features``
LAYER_NAMES: dict[str, dict[str, int]] = {a: _layer_names(c) for a, c in CFGS.items()}


def _check_arch(arch: str) -> None:
    if arch not in CFGS:
        raise UserError(f"vgg arch {arch!r} is unknown; use one of {sorted(CFGS)}")


class VGG(nn.Module):
    """VGG16/19 convolutional trunk for grey tiles; see the module docstring."""

    def __init__(self, arch: str = "vgg16"):
        super().__init__()
        _check_arch(arch)
        self.arch = arch
        layers: list[nn.Module] = []
        cin = 3
        for v in CFGS[arch]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(cin, int(v), kernel_size=3, padding=1))
                layers.append(nn.ReLU(inplace=False))
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.layer_names = LAYER_NAMES[arch]
        self.register_buffer("mean", torch.tensor(GREY_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(GREY_STD), persistent=False)

    def reset_parameters(self, seed: int = 0) -> None:
        """torchvision's initialisation (Kaiming normal, fan-out, zero bias), seeded."""
        gen = torch.Generator().manual_seed(int(seed))
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                std = (2.0 / fan_out) ** 0.5
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                    m.bias.zero_()

    def channels(self, layer: str) -> int:
        """Number of channels of the output of ``layer``."""
        idx = self._index(layer)
        for m in reversed(list(self.features)[: idx + 1]):
            if isinstance(m, nn.Conv2d):
                return m.out_channels
        return 3

    def _index(self, layer: str) -> int:
        if layer not in self.layer_names:
            raise UserError(f"VGG layer {layer!r} is unknown for {self.arch}; "
                            f"use one of {list(self.layer_names)}")
        return self.layer_names[layer]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor, layers: Sequence[str] = ("relu5_3",)
                ) -> dict[str, torch.Tensor]:
        """Activations of the requested ``layers`` for grey tiles ``x`` (N, 1, H, W) in [0, 1].

        Runs only as far as the deepest requested layer.
        """
        if isinstance(layers, str):
            layers = (layers,)
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"VGG expects grey tiles (N, 1, H, W), got {tuple(x.shape)}")
        by_idx: dict[int, list[str]] = {}
        for n in layers:
            by_idx.setdefault(self._index(n), []).append(n)
        last = max(by_idx)
        h = self.normalize(x)
        out: dict[str, torch.Tensor] = {}
        for i, m in enumerate(self.features):
            if i > last:
                break
            if i == 0:  # folded first conv: grey input = RGB net on a replicated input
                h = F.conv2d(h, m.weight.sum(dim=1, keepdim=True), m.bias, padding=m.padding)
            else:
                h = m(h)
            for n in by_idx.get(i, ()):
                out[n] = h
        return out


def _load_state(model: VGG, path: Path) -> None:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error
        raise UserError(f"VGG weights file {path} cannot be read: {e}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise UserError(f"VGG weights file {path} does not hold a state dict")
    own = model.features.state_dict()
    feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    missing = sorted(set(own) - set(feats))
    if missing:
        raise UserError(f"VGG weights file {path} lacks features.{missing[0]} "
                        f"({len(missing)} keys missing) for {model.arch}")
    extra = sorted(set(feats) - set(own))
    if extra:
        raise UserError(f"VGG weights file {path} has unexpected key features.{extra[0]} "
                        f"for {model.arch} (wrong arch?)")
    for k, v in own.items():
        if tuple(feats[k].shape) != tuple(v.shape):
            raise UserError(f"VGG weights file {path}: features.{k} has shape "
                            f"{tuple(feats[k].shape)}, {model.arch} needs {tuple(v.shape)}")
    model.features.load_state_dict({k: feats[k].float() for k in own})


def hub_path(arch: str = "vgg16") -> Path:
    """Where torchvision would have cached the ImageNet weights of ``arch``."""
    _check_arch(arch)
    return Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILES[arch]


def load_vgg(arch: str = "vgg16", weights: str | None = None, seed: int = 0,
             device: str | torch.device = "cpu") -> VGG:
    """A frozen ``VGG`` in eval mode: weights file, else hub cache, else seeded random filters."""
    model = VGG(arch)
    if weights:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise UserError(f"VGG weights file {p} does not exist (key 'weights')")
        _load_state(model, p)
        model.source = str(p)
    elif hub_path(arch).is_file():
        _load_state(model, hub_path(arch))
        model.source = str(hub_path(arch))
    else:
        warnings.warn(
            f"no {arch} ImageNet weights (no 'weights' file, nothing at {hub_path(arch)}): using "
            f"random-filter VGG features (seed {seed}); a documented texture descriptor, but "
            "results differ from ImageNet weights", stacklevel=2)
        model.reset_parameters(seed)
        model.source = f"random:{seed}"
    model.eval()
    for p_ in model.parameters():
        p_.requires_grad_(False)
    return model.to(device)
