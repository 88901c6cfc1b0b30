"""Benchmark: the editor evaluation's edit fidelity and its ceiling (the synthetic generator as the
editor) as the pipeline runs them, with and without the remembered measurements and renders.

The synthetic measurement of a tile depends on its pixels alone, and the oracle's render on
(attributes, seed) alone, so both are remembered by content (``mxplain_synthetic.measure.
CACHE_TILES``, ``mxplain_synthetic.oracle.RENDER_CACHE_BYTES``): the originals are measured by the
fidelity and again by its ceiling, the generator's reconstruction of a tile is the tile, a +/-delta
edit clipped to [0, 1] is the sweep's end. Prints the process CPU time of each pass, the tiles
measured and rendered, and whether the two results are identical (they must be).

    python benchmarks/editor_eval_cache.py --run runs/quickstart
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import _quickstart as qs
import torch

from mxplain import editor_eval
from mxplain.interfaces import RunContext
from mxplain.store import TileStore


def _evaluate(editor, dataset, store, n: int) -> dict:
    kwargs = {"n_tiles_per_lot": n, "ctx": RunContext(), "seed": 0,
              "measure_attributes": store.attributes}
    return {"fidelity": editor_eval.edit_fidelity(editor, store, dataset.measure, **kwargs),
            "fidelity_ceiling": dataset.edit_fidelity_ceiling(store, dataset.measure, **kwargs)}


def _counting(module, name: str, counter: dict):
    inner = getattr(module, name)

    def wrapped(*args, **kwargs):
        counter[name] = counter.get(name, 0) + 1
        return inner(*args, **kwargs)

    setattr(module, name, wrapped)
    return inner


def _pass(editor, dataset, store, n: int, remember: bool) -> tuple[dict, float, dict]:
    from mxplain_synthetic import measure, oracle

    measure._cache.clear()
    oracle._renders.clear()
    measure.CACHE_TILES, oracle.RENDER_CACHE_BYTES = (65536, 64 << 20) if remember else (0, 0)
    counter: dict = {}
    inner_m = _counting(measure, "measure_tile", counter)
    inner_r = _counting(oracle, "render_tile", counter)
    try:
        t0 = time.process_time()
        out = _evaluate(editor, dataset, store, n)
        return out, time.process_time() - t0, counter
    finally:
        measure.measure_tile, oracle.render_tile = inner_m, inner_r


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart", help="a quickstart run (its tile store)")
    ap.add_argument("--tiles", type=int, default=6, help="[run] editor_eval_tiles")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = qs.config()
    params = {k: v for k, v in cfg["data"].items() if k != "name"}
    from mxplain import plugins

    dataset = plugins.create("dataset", cfg["data"]["name"], **params)
    store = TileStore(Path(args.run) / "tiles.zarr")
    editor, _ = qs.models(cfg, torch.device("cpu"))
    rows = {}
    for remember in (False, True):
        out, cpu, counts = _pass(editor, dataset, store, args.tiles, remember)
        rows["remembered" if remember else "every time"] = (out, cpu, counts)
        print(f"{'remembered' if remember else 'every time':>11}: {cpu:7.1f} CPU-s, "
              f"measured {counts.get('measure_tile', 0)} tiles, "
              f"rendered {counts.get('render_tile', 0)}", flush=True)
    same = _same(rows["every time"][0], rows["remembered"][0])
    print(f"results identical: {same}")
    if not same:
        print(json.dumps(rows["every time"][0], default=str)[:2000])
        print(json.dumps(rows["remembered"][0], default=str)[:2000])


if __name__ == "__main__":
    main()
