"""Calibration of the measurement module against the generator's nominal attributes.

``python -m mxplain_synthetic.calibrate [--lots 16] [--tiles 32 4] [--sizes 64 256] [--seed 1]
[--cross] [--figure PNG]``
draws lots with independent attributes (Latin hypercube over [0.05, 0.95]^4), generates their
tiles, measures every tile with :mod:`mxplain_synthetic.measure` and prints, per tile size, the
Pearson r between each attribute's nominal value and the lot mean of its measurement.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mxplain_synthetic.dataset import sample_attributes
from mxplain_synthetic.generate import ATTRIBUTES, generate_tiles
from mxplain_synthetic.measure import lot_measurement

THRESHOLDS = {"size": 0.9, "porosity": 0.9, "polydispersity": 0.9, "facetness": 0.8}


def calibrate(n_lots: int = 16, tiles_per_lot: int = 32, tile_size: int = 64, seed: int = 1,
              attributes: np.ndarray | None = None) -> dict:
    """Nominal attributes, lot-mean measurements and Pearson r per attribute."""
    nominal = sample_attributes(n_lots, seed) if attributes is None else np.asarray(attributes)
    measured = np.zeros_like(nominal, dtype=np.float64)
    for i, a in enumerate(nominal):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7, i)))
        tiles = generate_tiles(dict(zip(ATTRIBUTES, a)), tiles_per_lot, tile_size, rng)
        measured[i] = lot_measurement(tiles)
    r = {a: float(np.corrcoef(nominal[:, j], measured[:, j])[0, 1])
         for j, a in enumerate(ATTRIBUTES)}
    # specificity: how much each measurement follows the *other* attributes
    cross = np.array([[np.corrcoef(nominal[:, q], measured[:, j])[0, 1]
                       for q in range(len(ATTRIBUTES))] for j in range(len(ATTRIBUTES))])
    return {"nominal": nominal, "measured": measured, "r": r, "cross": cross,
            "tile_size": tile_size, "tiles_per_lot": tiles_per_lot}


def format_table(results: list[dict]) -> str:
    lines = ["| tile px | tiles/lot | " + " | ".join(ATTRIBUTES) + " |",
             "| --- | --- | " + " | ".join("---" for _ in ATTRIBUTES) + " |"]
    for res in results:
        cells = [f"{res['r'][a]:.3f}" + ("" if res["r"][a] >= THRESHOLDS[a] else " (below)")
                 for a in ATTRIBUTES]
        lines.append(f"| {res['tile_size']} | {res['tiles_per_lot']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lots", type=int, default=16)
    p.add_argument("--tiles", type=int, nargs="+", default=[32, 4])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cross", action="store_true", help="print measurement x attribute r matrix")
    p.add_argument("--figure", help="save the measured-vs-nominal scatter plots to this PNG")
    args = p.parse_args(argv)
    tiles = args.tiles + [args.tiles[-1]] * (len(args.sizes) - len(args.tiles))
    results = []
    for size, n in zip(args.sizes, tiles):
        t0 = time.time()
        res = calibrate(args.lots, n, size, args.seed)
        res["seconds"] = time.time() - t0
        results.append(res)
        if args.cross:
            print(f"{size} px, {n} tiles/lot, {res['seconds']:.1f} s; rows = measurement, "
                  f"cols = nominal attribute")
            for j, a in enumerate(ATTRIBUTES):
                print(f"  {a:15s}" + " ".join(f"{x:+.2f}" for x in res["cross"][j]))
    print(format_table(results))
    if args.figure:
        from mxplain_synthetic.figures import measurement_figure

        measurement_figure(results, args.figure)


if __name__ == "__main__":
    main()
