"""TextureVAE quality measures and figures: the Gram-matrix texture similarity of reconstructions
(seed 003 Table 1; see :mod:`mxplain_texturevae.evaluate` for why not DISTS / STSIM-2), latent
traversals (Figure 6) and reconstructions / random samples (Figures 4-5). The editor reports them
after ``fit``; :mod:`mxplain_texturevae.evaluate` tabulates them over latent sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mxplain.figures import save_figure
from mxplain_texturevae.model import STYLE_LAYERS, gram


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
        rec.append(gram_similarity(editor.vgg_, xb, r).cpu())
        if lots is not None:
            js, jo = [], []
            for t in idx:
                same_pool = np.flatnonzero((lots == lots[t]) & (np.arange(len(x)) != t))
                other_pool = np.flatnonzero(lots != lots[t])
                js.append(rng.choice(same_pool) if len(same_pool) else t)
                jo.append(rng.choice(other_pool) if len(other_pool) else t)
            same.append(gram_similarity(editor.vgg_, xb, x[js].to(dev)).cpu())
            other.append(gram_similarity(editor.vgg_, xb, x[jo].to(dev)).cpu())
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
    w = editor.probe_w_.detach().cpu().numpy()
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
    if editor.history_.get("loss"):
        fig, ax = plt.subplots(1, 2, figsize=(7, 2.6))
        ep = np.arange(1, len(editor.history_["loss"]) + 1)
        ax[0].plot(ep, editor.history_["style"], label="style")
        ax[0].plot(ep, editor.history_["loss"], label="total")
        ax[0].set_xlabel("epoch")
        ax[0].legend(fontsize=7)
        ax[1].plot(ep, editor.history_["kl"])
        ax[1].set_xlabel("epoch")
        ax[1].set_ylabel("KL (nats)")
        out.append(str(save_figure(fig, folder / f"{prefix}_loss.png", dpi=110)))
    return out
