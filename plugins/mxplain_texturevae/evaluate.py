"""TextureVAE evaluation: texture similarity of reconstructions (seed 003 Table 1), latent
traversals (Figure 6) and reconstructions / random samples (Figures 4-5); the structure-property
regressions (Tables 2-3) are :mod:`mxplain_texturevae.study` (the ``latent_krr`` predictor's).

Texture similarity. DISTS and STSIM-2 (the seed's metrics) are not computed: DISTS needs its
authors' learned weights and ImageNet VGG16 weights, STSIM-2 a steerable-pyramid implementation;
neither is installed nor downloadable here. The score used instead is a Gram-matrix similarity
on the same VGG19 layers as the style loss::

    d_l = ||G_l(x) - G_l(y)||_F / (||G_l(x)||_F + ||G_l(y)||_F)      G_l = F F^T / M_l
    score(x, y) = 1 - mean_l d_l                                          in [0, 1], 1 = identical

It is reported with two references: another tile of the same lot (same texture, different pixels)
and a tile of another lot (a different texture).

Script: ``python -m mxplain_texturevae.evaluate --help`` prints the Table 1 analogue (score per
latent size) and the structure-property tables for a tile store (or a freshly built synthetic one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mxplain_texturevae.cli_store import add_store_arguments, open_or_build_store
from mxplain_texturevae.quality import (  # noqa: F401 - the evaluation API, re-exported
    gram_similarity,
    probe_dims,
    save_figures,
    texture_scores,
    traversal,
)


def latent_size_table(store, sizes=(8, 16, 32, 64), ctx=None, n_tiles: int = 100,
                      models: dict | None = None, **params) -> list[dict]:
    """Seed 003 Table 1 analogue: train one TextureVAE per latent size and report the Gram
    similarity of reconstructions (and the references); trained editors go into ``models``."""
    from mxplain.interfaces import RunContext
    from mxplain_texturevae.editor import TextureVAEEditor

    ctx = ctx or RunContext(progress=False)
    rows = []
    for d in sizes:
        ed = TextureVAEEditor(latent_dim=int(d), figures=False, **params)
        m = ed.fit(store, ctx)
        if models is not None:
            models[int(d)] = ed
        rows.append({"latent_dim": int(d), **m["texture"], "train_seconds": m["train_seconds"],
                     "probe_r2_heldout": m["probe"].get("r2_heldout_lots")})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| latent dims | Gram similarity (reconstruction) | same-lot ref. | other-lot ref. |"
             " train s |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['latent_dim']} | {r['reconstruction']:.4f} | "
                     f"{r.get('same_lot_reference', float('nan')):.4f} | "
                     f"{r.get('other_lot_reference', float('nan')):.4f} | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="TextureVAE Table 1 (texture similarity per latent "
                                "size) and Tables 2-3 (structure-property) on a tile store")
    add_store_arguments(p, "texturevae-eval", tiles_per_lot=32)
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-tiles-per-lot", type=int, default=None)
    p.add_argument("--dec-dim", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--figures", help="folder for the figures of the largest model")
    p.add_argument("--json", help="write all results to this JSON file")
    a = p.parse_args(argv)
    from mxplain.interfaces import RunContext

    ctx = RunContext(device=torch.device(a.device), progress=False, out_dir=Path(a.workdir))
    store = open_or_build_store(a, ctx)
    params = {"epochs": a.epochs, "max_tiles_per_lot": a.max_tiles_per_lot, "dec_dim": a.dec_dim}
    models: dict = {}
    rows = latent_size_table(store, a.sizes, ctx, models=models, **params)
    print(format_table(rows), flush=True)
    ed = models[max(a.sizes)]
    probe = rows[a.sizes.index(max(a.sizes))]["probe_r2_heldout"]
    from mxplain_texturevae.study import structure_property

    sp = structure_property(store, ctx, editor=ed)
    print(json.dumps({"probe_r2_heldout_lots": probe, "structure_property": sp}, indent=1))
    if a.figures:
        x = torch.from_numpy(store.all_tiles()[0][:: max(1, store.n_tiles // 64)]).float()
        save_figures(ed, x.div(255.0)[:, None], Path(a.figures), seed=0)
    if a.json:
        Path(a.json).write_text(json.dumps({"table1": rows, "probe_r2_heldout_lots": probe,
                                            "structure_property": sp}, indent=1))


if __name__ == "__main__":
    main()
