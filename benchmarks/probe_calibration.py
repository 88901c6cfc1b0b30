"""Where should the probe's effect-ratio lines lie? Faithful but weak edits (issue 19).

The synthetic generator re-renders each tile at ``a0 + alpha (a - a0)`` when asked for ``a``
(``a0``: the tile's lot attributes): an editor that changes exactly the requested attribute, by
a share ``alpha`` of the request. For each ``alpha`` the synthetic measurement judges its
+/-0.35 edits against the ceiling (``alpha = 1``) as the quickstart does (share >= 0.9 x
ceiling), and the independent probe reads the same edits (share over its resolution, effect
ratio). The ``alpha`` at which the measurement's verdict turns is the weakest faithful edit it
passes; the probe's effect ratio there is where the probe's own line belongs.

    python benchmarks/probe_calibration.py --store runs/quickstart/tiles.zarr
    python benchmarks/probe_calibration.py --store ... --alphas 0.2,0.35,0.5,1

One CPU thread; about two minutes per ``alpha`` (the synthetic measurement dominates).
"""

from __future__ import annotations

import argparse
import time
from importlib import resources as ir

import numpy as np
import tomllib
import torch

import mxplain
from mxplain import trust
from mxplain.editor_eval import edit_fidelity
from mxplain.interfaces import Editor, NoLearnedState
from mxplain.probe import fit_probe, probe_edits
from mxplain.store import TileStore


class AttenuatedOracle(NoLearnedState, Editor):
    """The synthetic generator as an editor that renders a share ``alpha`` of every request."""

    name = "attenuated_oracle"

    def __init__(self, oracle, store: TileStore, alpha: float):
        self.oracle, self.alpha = oracle, float(alpha)
        self.attributes = tuple(oracle.attributes or store.attributes)
        self.device = torch.device("cpu")
        self._own = {}
        for i in range(store.n_lots):
            attrs = torch.from_numpy(store.lot_attributes[i].astype(np.float32))
            for t in store.tiles(i):
                self._own[np.ascontiguousarray(t).tobytes()] = attrs

    def encode(self, tiles: torch.Tensor):
        u8 = (tiles.float().clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
        own = torch.stack([self._own[np.ascontiguousarray(t[0]).tobytes()] for t in u8])
        return self.oracle.encode(tiles), own

    def decode(self, latent, attributes: torch.Tensor) -> torch.Tensor:
        seeds, own = latent
        a = own + self.alpha * (attributes.float().cpu() - own)
        return self.oracle.decode(seeds, a.clamp(0.0, 1.0))


def _f(x) -> str:
    return f"{x:.2f}" if isinstance(x, (int, float)) and np.isfinite(x) else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="a tile store of the quickstart's data")
    ap.add_argument("--alphas", default="0.1,0.2,0.3,0.4,0.5,0.7,1.0")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = tomllib.loads(ir.files("mxplain").joinpath("data/quickstart.toml").read_text())
    ds = mxplain.create_dataset("synthetic", **{k: v for k, v in cfg["data"].items()
                                                if k != "name"})
    store = TileStore.open(args.store)
    oracle = ds.reference_editor(store)
    probe, info = fit_probe(store, n_tiles_per_lot=24, seed=args.seed)
    cfg_trust = trust.resolve_trust(None)
    ceil = edit_fidelity(oracle, store, ds.measure, n_tiles_per_lot=6, seed=args.seed)
    print("| alpha | attribute | measured share ÷ ceiling | measured verdict | probe share ÷ "
          "resolution | probe effect ratio [95 %] | probe verdict |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for alpha in (float(s) for s in args.alphas.split(",")):
        t0 = time.perf_counter()
        ed = AttenuatedOracle(oracle, store, alpha)
        fid = edit_fidelity(ed, store, ds.measure, n_tiles_per_lot=6, seed=args.seed)
        measured = trust.measurement_verdicts({"fidelity": fid, "fidelity_ceiling": ceil})
        pe = probe_edits(ed, store, probe, info, n_tiles_per_lot=6, seed=args.seed,
                         intervals=True)
        gate = trust.probe_gate({"probe": pe}, cfg_trust)
        for a, g in gate["attributes"].items():
            m = measured[a]
            ci = ", ".join(_f(c) for c in (g.get("effect_ratio_ci") or [None, None]))
            print(f"| {alpha:g} | {a} | {m['direction_share'] / m['ceiling']:.3f} | "
                  f"{m['verdict']} | {_f(g['share_ratio'])} | {_f(g['effect_ratio'])} [{ci}] | "
                  f"{g['verdict']} |", flush=True)
        print(f"<!-- alpha {alpha:g}: {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
