"""Does the independent attribute probe agree with the synthetic measurement? (issue 19)

On the packaged quickstart's data (16 lots x 96 tiles of 64 px) with the shipped AttGAN: the probe
(:mod:`mxplain.probe`, trained on 24 real tiles a lot, no ground truth) judges the editor's +/-0.35
edits of the 96 editor-evaluation tiles (:func:`mxplain.trust.probe_gate`), and the synthetic
measurement judges the same edits against the ceiling of the data's own generator as the editor
(:func:`mxplain.trust.measurement_verdicts`: share >= 0.9 x ceiling). Prints one markdown row per
attribute, then the probe's verdicts with the generator itself as the editor (should pass).

    python benchmarks/probe_agreement.py --store runs/quickstart/tiles.zarr
    python benchmarks/probe_agreement.py --build /tmp/qs-tiles.zarr   # writes the data first
    python benchmarks/probe_agreement.py --store ... --editor runs/x/quickstart_attgan.pt

One CPU thread; a few minutes (the synthetic measurement and its ceiling dominate).
"""

from __future__ import annotations

import argparse
import time
from importlib import resources as ir
from pathlib import Path

import numpy as np
import tomllib
import torch

import mxplain
from mxplain import plugins, resources, trust
from mxplain.components import checkpoint_params
from mxplain.editor_eval import edit_fidelity
from mxplain.probe import fit_probe, probe_edits
from mxplain.store import TileStore


def _f(x, fmt="{:.2f}") -> str:
    return fmt.format(x) if isinstance(x, (int, float)) and np.isfinite(x) else "–"


def _store(args, ds) -> TileStore:
    if args.store:
        return TileStore.open(args.store)
    path = Path(args.build)
    return TileStore.open(path) if path.exists() else ds.build(path)


def _table(gate: dict, measured: dict, fid: dict, ceil: dict, info: dict) -> list[str]:
    rows = ["| attribute | probe held-out ρ (tiles / lots) | probe resolution | probe: share "
            "the requested way (÷ resolution) | probe: effect ratio [95 % interval] | probe "
            "verdict | measured share (ceiling) | measured effect / ceiling's | measured verdict | "
            "agree? |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for a, g in gate["attributes"].items():
        p, m = info["attributes"][a], measured[a]
        verdict = g["verdict"] + ("" if g["judged"] else ": not judged")
        agree = ("yes" if (g["verdict"] == "pass") == (m["verdict"] == "pass")
                 else f"**no**: {g['verdict']}") if g["judged"] else "– (probe blind)"
        ratio = fid["attributes"][a]["effect"] / ceil["attributes"][a]["effect"]
        rows.append(f"| {a} | {_f(p['heldout_spearman'])} / {_f(p['heldout_lot_spearman'])} | "
                    f"{_f(p['resolution'])} | {_f(g['value'])} ({_f(g['share_ratio'])} ×) | "
                    f"{_f(g['effect_ratio'])} "
                    f"[{', '.join(_f(c) for c in (g.get('effect_ratio_ci') or [None, None]))}] | "
                    f"{verdict} | {_f(m['direction_share'])} ({_f(m['ceiling'])}) | "
                    f"{_f(ratio)} | {m['verdict']} | {agree} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--store", help="an existing tile store of the quickstart's data")
    src.add_argument("--build", help="write the quickstart's data here first (if absent)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--editor", help="an AttGAN checkpoint in place of the shipped one (loaded "
                                     "with the quickstart's [editor] parameters)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = tomllib.loads(ir.files("mxplain").joinpath("data/quickstart.toml").read_text())
    ds = mxplain.create_dataset("synthetic", **{k: v for k, v in cfg["data"].items()
                                                if k != "name"})
    store = _store(args, ds)
    # the quickstart's [editor] as the quickstart loads it (the checkpoint and the inference
    # parameters set beside it, e.g. edit_mode)
    editor = plugins.get("editor", cfg["editor"]["name"]).load(
        args.editor or resources.resolve_checkpoint(cfg["editor"]["checkpoint"]),
        params=checkpoint_params(cfg["editor"]))
    oracle = ds.reference_editor(store)
    t0 = time.perf_counter()
    fid = edit_fidelity(editor, store, ds.measure, n_tiles_per_lot=6, seed=args.seed)
    ceil = edit_fidelity(oracle, store, ds.measure, n_tiles_per_lot=6, seed=args.seed)
    t_meas = time.perf_counter() - t0
    probe, info = fit_probe(store, n_tiles_per_lot=24, seed=args.seed)
    cfg_trust = trust.resolve_trust(None)
    out = {}
    for name, ed in (("attgan", editor), ("oracle", oracle)):
        t1 = time.perf_counter()
        pe = probe_edits(ed, store, probe, info, n_tiles_per_lot=6, seed=args.seed,
                         intervals=True)
        out[name] = (trust.probe_gate({"probe": pe}, cfg_trust), time.perf_counter() - t1)
    measured = trust.measurement_verdicts({"fidelity": fid, "fidelity_ceiling": ceil})
    print("\n".join(_table(out["attgan"][0], measured, fid, ceil, info)))
    print("\nthe generator itself as the editor (probe): " + ", ".join(
        f"{a} {g['verdict']} (share {_f(g['value'])}, effect ratio {_f(g['effect_ratio'])})"
        for a, g in out["oracle"][0]["attributes"].items()))
    print(f"\nprobe fit {info['seconds']:.1f} s on {info['n_tiles']} tiles; judging the AttGAN's "
          f"edits {out['attgan'][1]:.1f} s, the oracle's {out['oracle'][1]:.1f} s; synthetic "
          f"measurement and ceiling {t_meas:.0f} s")
    for a, p in info["attributes"].items():
        print(f"  {a}: {len(p['features'])} features ({', '.join(p['features'][:4])}"
              f"{', ...' if len(p['features']) > 4 else ''}), penalty {p['alpha']:g}, calibration "
              f"slope {_f(p['calibration_slope'])}")


if __name__ == "__main__":
    main()
