"""The tile store of the plugin's study commands (``evaluate`` and ``study``): ``--store`` opens
one, otherwise a synthetic one is built (or resumed) in ``--workdir``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_store_arguments(parser: argparse.ArgumentParser, workdir: str, tiles_per_lot: int) -> None:
    parser.add_argument("--store", help="tile store (default: build a synthetic one in --workdir)")
    parser.add_argument("--workdir", default=workdir)
    parser.add_argument("--lots", type=int, default=16)
    parser.add_argument("--tiles-per-lot", type=int, default=tiles_per_lot)
    parser.add_argument("--tile-size", type=int, default=64)


def open_or_build_store(args: argparse.Namespace, ctx, **dataset_params):
    """``--store``, or the synthetic dataset of ``--lots`` x ``--tiles-per-lot`` tiles (seed 0,
    ``dataset_params`` on top) built in ``--workdir/tiles.zarr``."""
    from mxplain import plugins
    from mxplain.store import TileStore

    if args.store:
        return TileStore.open(args.store)
    ds = plugins.create("dataset", "synthetic", n_lots=args.lots, tiles_per_lot=args.tiles_per_lot,
                        tile_size=args.tile_size, seed=0, **dataset_params)
    return ds.build(Path(args.workdir) / "tiles.zarr", ctx, resume=True)
