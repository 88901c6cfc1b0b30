"""Benchmark helper (issue 20): what a change of the backward explainer does to its results.

``dump`` runs ``[explain.backward]`` as the packaged quickstart configures it (its lots, the
explained tiles, the shipped AttGAN, ``--predictor``), lot by lot after the pipeline's own
variables and the explainers of ``--explainers`` before it (what it reads), and saves every lot's
``backward_*`` values to an ``.npz``; ``compare`` reads two such files and prints how many
tile-directions changed reachability, the reached shares (over reachable tile-directions) of
both, and the largest differences of ``A'``, the targets, the predictions and the per-lot
variables::

    python benchmarks/backward_results.py dump before.npz --lots 16 --predictor P.pt
    python benchmarks/backward_results.py dump after.npz --lots 16 --predictor P.pt \
        --explainers forward,backward
    python benchmarks/backward_results.py compare before.npz after.npz

``--set key=value`` (repeatable) overrides one ``[explain.backward]`` key of the quickstart's, the
value read as TOML (``--set lam_steps=0``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import _quickstart as qs
import numpy as np
import tomllib
import torch

from mxplain.components import base_values, order_explainers, reader_context


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def dump(path: str, n_lots: int, predictor: str | None, names: list[str],
         overrides: dict | None = None) -> None:
    """Lot by lot as the pipeline does: its own variables first, then ``names`` in its order,
    each reading what the earlier ones wrote; only the ``backward_*`` values are saved. An
    existing ``path`` is refused before any work (this script never replaces a file)."""
    path = Path(path if str(path).endswith(".npz") else f"{path}.npz")
    if path.exists():
        _refuse(f"{path} exists; name a new file (nothing was written)")
    cfg = qs.config()
    cfg["explain"]["backward"].update(overrides or {})
    device = torch.device("cpu")
    editor, pred = qs.models(cfg, device, predictor)
    ctx = qs.context(cfg, editor, pred, device)
    exps = order_explainers(qs.explainers(cfg, names))
    ctx.cube_coords = {k: np.asarray(v[1] if isinstance(v, tuple) else v)
                       for exp in exps.values() for k, v in {**exp.extra_dims(),
                                                             **exp.extra_coords()}.items()}
    parts: dict[str, list] = {}
    cpu = 0.0
    for lot in qs.lots(cfg, range(n_lots)):
        values = base_values(lot, ctx)
        by, spent = dict.fromkeys(values, "pipeline"), {}
        for name, exp in exps.items():
            t0 = time.process_time()
            out = exp.explain_lot(lot, reader_context(ctx, exp, values, by, exps, spent))
            spent[name] = time.process_time() - t0
            values.update(out)
            by.update(dict.fromkeys(out, name))
        cpu += spent["backward"]
        for key, v in values.items():
            if key.startswith("backward_"):
                parts.setdefault(key, []).append(v)
    print(f"{n_lots} lots: backward {cpu:.2f} CPU s")
    publish(path, {k: np.stack(v) for k, v in parts.items()})


def publish(path: Path, arrays: dict) -> None:
    """``arrays`` as the new file ``path``, written whole or not at all; a file that appeared at
    ``path`` meanwhile is kept (``os.link`` never replaces) and the dump refused."""
    tmp = path.with_name(f".{path.name}.partial.npz")
    try:
        np.savez(tmp, **arrays)
        os.link(tmp, path)
    except FileExistsError:
        _refuse(f"{path} appeared while the dump ran; kept it, nothing written")
    finally:
        tmp.unlink(missing_ok=True)


def _shares(d) -> tuple[int, int]:
    reach = d["backward_reachable"]
    return int((reach & d["backward_converged"]).sum()), int(reach.sum())


def compare(before: str, after: str) -> dict:
    b, a = np.load(before), np.load(after)
    changed = b["backward_reachable"] != a["backward_reachable"]
    out = {"tile_directions": int(changed.size), "reachability_changed": int(changed.sum()),
           "reached_before": _shares(b), "reached_after": _shares(a),
           "converged_changed": int((b["backward_converged"] != a["backward_converged"]).sum())}
    print(f"tile-directions {changed.size}; reachability changed {changed.sum()} "
          f"(became reachable {(changed & a['backward_reachable']).sum()}, unreachable "
          f"{(changed & b['backward_reachable']).sum()}); converged changed "
          f"{out['converged_changed']}")
    for name, d in (("before", b), ("after", a)):
        got, of = _shares(d)
        per = [_shares({k: d[k][..., j] for k in ("backward_reachable", "backward_converged")})
               for j in range(d["backward_reachable"].shape[-1])]
        print(f"reached {name}: {got}/{of} = {got / max(of, 1):.4f}; by direction "
              + ", ".join(f"{g}/{o}" for g, o in per))
    for key in sorted(b.files):
        if key not in a.files or b[key].dtype == bool:
            continue
        diff = np.abs(b[key].astype(np.float64) - a[key].astype(np.float64))
        out[key] = float(diff.max()) if diff.size else 0.0
        print(f"  max |difference| {key:32s} {out[key]:.3g}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("path")
    d.add_argument("--lots", type=int, default=16)
    d.add_argument("--predictor", default=None)
    d.add_argument("--explainers", default="backward",
                   help="comma-separated, e.g. forward,backward (backward then reads forward's)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one [explain.backward] key (the value as TOML)")
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    args = ap.parse_args(argv)
    if args.cmd == "dump":
        overrides = {k: v for item in args.set
                     for k, v in tomllib.loads(item.replace("=", " = ", 1)).items()}
        return dump(args.path, args.lots, args.predictor, args.explainers.split(","), overrides)
    return compare(args.before, args.after)


if __name__ == "__main__":
    main()
