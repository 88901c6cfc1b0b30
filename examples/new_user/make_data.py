"""A new user's own data, made without mxplain: bright ellipses on a noisy background.

Writes ``OUT/tiles/<lot>/tile_NNN.png`` (8-bit grey, one folder per lot) and ``OUT/lots.csv``
with the columns ``lot, grain_size, density, roughness, hardness, operator``. Three lot attributes
in [0, 1], named by the user:

* ``grain_size``: the ellipses' semi-axes, 2.5 to 8.5 px at 64 px (scaled with the tile size);
* ``density``: how many ellipses a tile holds, 4 to 20 at 64 px (scaled with the tile area);
* ``roughness``: the amplitude of the ellipses' edge undulations (harmonics 3 to 8 of the
  outline) and of the background noise (SD 4 to 16 grey levels).

``hardness`` (HV) follows a known law of the labels plus lot noise (:data:`LAW`). Every tile is
drawn from its own seed (``seed``, lot index, tile index) with the same sequence of random draws
at any attribute values, so :func:`render` re-renders a tile at other attributes: the true
response of a model to each attribute (``true_sensitivity.py``). ``operator`` is a lab column
that is not an attribute.

    python examples/new_user/make_data.py --out data/new_user --lots 8 --tiles 24 --size 64
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

ATTRIBUTES = ("grain_size", "density", "roughness")
#: hardness = INTERCEPT + sum(LAW[a] * a) + N(0, NOISE_HV), in HV
LAW = {"grain_size": -60.0, "density": 25.0, "roughness": 45.0}
INTERCEPT = 400.0
NOISE_HV = 3.0
MAX_ELLIPSES = 20  # at 64 px; the draws for all of them are made at every density
HARMONICS = np.arange(3, 9)
OPERATORS = ("A. Novak", "B. Ito", "C. Okafor")


def lot_attributes(n_lots: int, seed: int) -> np.ndarray:
    """(n_lots, 3) labels in [0, 1]: a Latin hypercube, so every attribute spans its range."""
    rng = np.random.default_rng([seed, 1])
    cols = [(rng.permutation(n_lots) + rng.uniform(0.1, 0.9, n_lots)) / n_lots
            for _ in ATTRIBUTES]
    return np.round(np.stack(cols, axis=1), 3)


def hardness(attrs: np.ndarray, seed: int) -> np.ndarray:
    """Each lot's hardness in HV from its labels by :data:`LAW`, plus lot noise."""
    rng = np.random.default_rng([seed, 2])
    law = np.array([LAW[a] for a in ATTRIBUTES])
    return np.round(INTERCEPT + attrs @ law + rng.normal(0, NOISE_HV, len(attrs)), 1)


def _draws(seed: int, lot: int, tile: int, size: int, n_max: int) -> dict:
    """Every random number one tile needs, independent of its attribute values."""
    rng = np.random.default_rng([seed, 3, lot, tile])
    return {"centre": rng.uniform(0, size, (n_max, 2)), "scale": rng.uniform(0.8, 1.2, n_max),
            "aspect": rng.uniform(0.5, 0.9, n_max), "angle": rng.uniform(0, np.pi, n_max),
            "coef": rng.normal(0, 1, (n_max, len(HARMONICS))) / np.sqrt(len(HARMONICS)),
            "phase": rng.uniform(0, 2 * np.pi, (n_max, len(HARMONICS))),
            "brightness": rng.uniform(185, 225, n_max), "noise": rng.normal(0, 1, (size, size)),
            "background": rng.uniform(35, 50)}


def render(attrs, seed: int, lot: int, tile: int, size: int = 64) -> np.ndarray:
    """One tile (size, size) uint8 at ``attrs`` = (grain_size, density, roughness)."""
    g, d, r = (float(np.clip(v, 0, 1)) for v in attrs)
    scale = size / 64
    n_max = max(1, round(MAX_ELLIPSES * scale ** 2))
    k = _draws(seed, lot, tile, size, n_max)
    n = max(1, round((4 + 16 * d) * scale ** 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.full((size, size), k["background"])
    for i in range(n):
        a = (2.5 + 6.0 * g) * scale * k["scale"][i]
        b = a * k["aspect"][i]
        dy = (yy - k["centre"][i, 0] + size / 2) % size - size / 2  # periodic tiles
        dx = (xx - k["centre"][i, 1] + size / 2) % size - size / 2
        c, s = np.cos(k["angle"][i]), np.sin(k["angle"][i])
        u, v = c * dx + s * dy, -s * dx + c * dy
        rho = np.hypot(u / a, v / b)
        theta = np.arctan2(v / b, u / a)
        edge = 1 + 0.35 * r * np.sum(k["coef"][i][:, None, None] * np.cos(
            HARMONICS[:, None, None] * theta + k["phase"][i][:, None, None]), axis=0)
        inside = np.clip((edge - rho) * a + 0.5, 0, 1)  # one-pixel antialiased edge
        img = img * (1 - inside) + k["brightness"][i] * inside
    img = img + (4 + 12 * r) * k["noise"]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def lot_id(i: int) -> str:
    return f"L{i + 1:02d}"


def write(out: Path, n_lots: int, tiles: int, size: int, seed: int) -> Path:
    """The PNG folders and the CSV under ``out``; returns the CSV's path."""
    from PIL import Image

    attrs = lot_attributes(n_lots, seed)
    prop = hardness(attrs, seed)
    for i in range(n_lots):
        folder = out / "tiles" / lot_id(i)
        folder.mkdir(parents=True, exist_ok=True)
        for t in range(tiles):
            Image.fromarray(render(attrs[i], seed, i, t, size)).save(folder / f"tile_{t:03d}.png")
    labels = out / "lots.csv"
    with labels.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["lot", *ATTRIBUTES, "hardness", "operator"])
        for i in range(n_lots):
            w.writerow([lot_id(i), *attrs[i].tolist(), prop[i], OPERATORS[i % len(OPERATORS)]])
    return labels


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--lots", type=int, default=8)
    p.add_argument("--tiles", type=int, default=24)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    labels = write(a.out, a.lots, a.tiles, a.size, a.seed)
    print(f"{a.lots} lots x {a.tiles} tiles of {a.size} px in {a.out / 'tiles'}; labels {labels}")


if __name__ == "__main__":
    main()
