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

import numpy as np
import torch

from mxplain.figures import save_figure
from mxplain_texturevae.model import STYLE_LAYERS, gram


# ---- texture similarity ------------------------------------------------------------------------
def gram_similarity(vgg, x: torch.Tensor, y: torch.Tensor,
                    layers=STYLE_LAYERS) -> torch.Tensor:
    """Per-pair Gram similarity ``(N,)`` in [0, 1] of tiles ``x`` and ``y`` ``(N, 1, H, W)``."""
    with torch.no_grad():
        fx, fy = vgg(x, layers), vgg(y, layers)
        ds = []
        for k in layers:
            m = fx[k].shape[-1] * fx[k].shape[-2]
            gx, gy = gram(fx[k]) / m, gram(fy[k]) / m
            num = (gx - gy).flatten(1).norm(dim=1)
            den = gx.flatten(1).norm(dim=1) + gy.flatten(1).norm(dim=1)
            ds.append(torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num)))
        return 1.0 - torch.stack(ds).mean(0)


def texture_scores(editor, x: torch.Tensor, n_tiles: int = 100, seed: int = 0,
                   lots: np.ndarray | None = None, batch_size: int = 32) -> dict:
    """Mean Gram similarity between ``n_tiles`` tiles and their reconstructions
    ``generate(encode(x))``, with the same-lot / other-lot references when ``lots`` is given."""
    rng = np.random.default_rng(seed)
    n = min(n_tiles, len(x))
    pick = np.sort(rng.choice(len(x), n, replace=False))
    dev = editor.device
    rec, same, other = [], [], []
    for i in range(0, n, batch_size):
        idx = pick[i:i + batch_size]
        xb = x[idx].to(dev)
        with torch.no_grad():
            r = editor.generate(editor.encode(xb), size=xb.shape[-1])
        rec.append(gram_similarity(editor.vgg, xb, r).cpu())
        if lots is not None:
            js, jo = [], []
            for t in idx:
                same_pool = np.flatnonzero((lots == lots[t]) & (np.arange(len(x)) != t))
                other_pool = np.flatnonzero(lots != lots[t])
                js.append(rng.choice(same_pool) if len(same_pool) else t)
                jo.append(rng.choice(other_pool) if len(other_pool) else t)
            same.append(gram_similarity(editor.vgg, xb, x[js].to(dev)).cpu())
            other.append(gram_similarity(editor.vgg, xb, x[jo].to(dev)).cpu())
    out = {"tiles": int(n), "reconstruction": float(torch.cat(rec).mean())}
    if lots is not None:
        out["same_lot_reference"] = float(torch.cat(same).mean())
        out["other_lot_reference"] = float(torch.cat(other).mean())
    return out


# ---- traversals and figures ----------------------------------------------------------------------
def traversal(editor, tile: torch.Tensor, dim: int, values=None) -> torch.Tensor:
    """Seed 003 §4.3: encode ``tile`` (``(1, H, W)`` or ``(1, 1, H, W)``), set latent ``dim`` to
    each of ``values`` (default ``linspace(-4, 4, 10)``), others unchanged, and decode (no probe
    shift) -> ``(len(values), 1, H, W)``."""
    values = np.linspace(-4.0, 4.0, 10) if values is None else np.asarray(values, dtype=np.float64)
    if tile.ndim == 3:
        tile = tile[None]
    with torch.no_grad():
        z = editor.encode(tile[:1])
        zs = z.repeat(len(values), 1)
        zs[:, dim] = torch.as_tensor(values, dtype=zs.dtype, device=zs.device)
        return editor.generate(zs, size=tile.shape[-1])


def probe_dims(editor, k: int = 4) -> list[int]:
    """The ``k`` latent dimensions the attribute probe weighs most (column norms of ``W``)."""
    w = editor.probe_w.detach().cpu().numpy()
    return [int(i) for i in np.argsort(-np.linalg.norm(w, axis=0))[:k]]


def _grid(path: Path, rows: list[list[np.ndarray]], row_labels: list[str],
          col_labels: list[str] | None = None, title: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nr, nc = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(1.3 * nc + 0.8, 1.3 * nr + 0.5), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(nc):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j], cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(row_labels[i], fontsize=7)
            if i == 0 and col_labels is not None and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return str(save_figure(fig, path, dpi=110))


def save_figures(editor, x: torch.Tensor, folder: Path, seed: int = 0, prefix: str = "texturevae",
                 n: int = 8) -> list[str]:
    """Reconstructions (Figure 4), random samples (Figure 5), traversals (Figure 6), loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(x), min(n, len(x)), replace=False))
    xb = x[pick].to(editor.device)
    with torch.no_grad():
        rec = editor.generate(editor.encode(xb), size=xb.shape[-1]).cpu()
    out = [_grid(folder / f"{prefix}_reconstructions.png",
                 [[t[0].numpy() for t in xb.cpu()], [t[0].numpy() for t in rec]],
                 ["original", "reconstruction"],
                 title=f"TextureVAE reconstructions (latent {editor.latent_dim})")]
    samples = editor.sample(2 * n, seed=seed).cpu()
    out.append(_grid(folder / f"{prefix}_samples.png",
                     [[t[0].numpy() for t in samples[:n]], [t[0].numpy() for t in samples[n:]]],
                     ["z ~ N(0, I)", ""], title="TextureVAE random samples"))
    dims = probe_dims(editor, 4)
    values = np.linspace(-4.0, 4.0, 10)
    for s, t in enumerate([pick[0], pick[len(pick) // 2]][: min(2, len(pick))]):
        rows, labels = [], []
        for d in dims:
            imgs = traversal(editor, x[t].to(editor.device), d, values).cpu()
            rows.append([x[t][0].numpy()] + [im[0].numpy() for im in imgs])
            labels.append(f"z[{d}]")
        out.append(_grid(folder / f"{prefix}_traversal_{s}.png", rows, labels,
                         ["original"] + [f"{v:+.1f}" for v in values],
                         title="Latent traversals (dims the attribute probe weighs most)"))
    if editor.history.get("loss"):
        fig, ax = plt.subplots(1, 2, figsize=(7, 2.6))
        ep = np.arange(1, len(editor.history["loss"]) + 1)
        ax[0].plot(ep, editor.history["style"], label="style")
        ax[0].plot(ep, editor.history["loss"], label="total")
        ax[0].set_xlabel("epoch")
        ax[0].legend(fontsize=7)
        ax[1].plot(ep, editor.history["kl"])
        ax[1].set_xlabel("epoch")
        ax[1].set_ylabel("KL (nats)")
        out.append(str(save_figure(fig, folder / f"{prefix}_loss.png", dpi=110)))
    return out


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
    p.add_argument("--store", help="tile store (default: build a synthetic one in --workdir)")
    p.add_argument("--workdir", default="texturevae-eval")
    p.add_argument("--lots", type=int, default=16)
    p.add_argument("--tiles-per-lot", type=int, default=32)
    p.add_argument("--tile-size", type=int, default=64)
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--max-tiles-per-lot", type=int, default=None)
    p.add_argument("--dec-dim", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--figures", help="folder for the figures of the largest model")
    p.add_argument("--json", help="write all results to this JSON file")
    a = p.parse_args(argv)
    from mxplain import plugins
    from mxplain.interfaces import RunContext
    from mxplain.store import TileStore

    ctx = RunContext(device=torch.device(a.device), progress=False, out_dir=Path(a.workdir))
    if a.store:
        store = TileStore.open(a.store)
    else:
        ds = plugins.create("dataset", "synthetic", n_lots=a.lots, tiles_per_lot=a.tiles_per_lot,
                            tile_size=a.tile_size, seed=0)
        store = ds.build(Path(a.workdir) / "tiles.zarr", ctx, resume=True)
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
