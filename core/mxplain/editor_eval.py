"""Generic evaluation of any :class:`~mxplain.interfaces.Editor` (AttGAN, TextureVAE, ...).

An editor is good for explanations when an edit of one attribute changes *that* attribute of the
tile, as an independent measurement sees it, in the requested direction, and leaves the others
alone. With ``measure(uint8 tiles (N, H, W)) -> (N, M)`` (the dataset's own,
:meth:`mxplain.interfaces.Dataset.measure`, columns ``measure_attributes``: by default the tile
store's attributes):

* :func:`edit_fidelity` - per attribute: Spearman correlation between the requested value (a sweep
  over [0, 1], others at the lot's values) and the measured value; the share of +/-``delta`` edits
  whose measurement moved in the requested direction relative to the reconstruction at the lot's own
  attributes; entanglement = mean |standardised change| of the *other* measured attributes;
* :func:`reconstruction_error` - L1 / MSE / PSNR of the reconstruction at the lot's own attributes;
* :func:`edit_grid_figure` - seed 000's Figure 3/11 grid: rows = attributes, columns = original,
  decreased, increased, for a few tiles;
* :func:`realism` - a classifier two-sample test (:mod:`mxplain.realism`): ROC AUC of a small CNN
  telling real tiles from the editor's reconstructions and from its +/-``delta`` edits (0.5:
  indistinguishable); needs no ground truth or measurement;
* :func:`fidelity_figure` - the direction shares as bars, next to a reference (on synthetic lots the
  *ceiling*: the same protocol with the data's own generator as the editor,
  ``mxplain_synthetic.oracle``), and the realism AUCs (beside the generator's: the realism ceiling).

Tiles are sampled per lot with a fixed seed, so repeated evaluations see the same tiles.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from mxplain.editing import edit_batched, editor_device, encode_batched
from mxplain.figures import save_figure
from mxplain.interfaces import Editor, RunContext
from mxplain.store import to_tensor

#: the synthetic lots' measurement columns (``mxplain.review`` reads them); :func:`edit_fidelity`
#: takes the tile store's attributes where it is given no columns
DEFAULT_MEASURE_ATTRIBUTES = ("size", "porosity", "polydispersity", "facetness")

Measure = Callable[[np.ndarray], np.ndarray]


def sample_tiles(store, n_tiles_per_lot: int = 8, seed: int = 0,
                 lots: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n_tiles_per_lot`` tiles of every lot (seeded): ``uint8 (N, H, W)`` and lot indices."""
    return store.all_tiles(lots, max_per_lot=n_tiles_per_lot, seed=seed)


def _measure(measure: Measure, tiles_u8: np.ndarray) -> np.ndarray:
    m = np.asarray(measure(tiles_u8), dtype=np.float64)
    if m.ndim != 2 or len(m) != len(tiles_u8):
        raise ValueError(f"measure returned shape {m.shape} for {len(tiles_u8)} tiles, "
                         f"expected (N, M)")
    return m


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(spearmanr(x[ok], y[ok]).statistic)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def _delta_attributes(a0: torch.Tensor, j: int, delta: float) -> list[torch.Tensor]:
    """The -/+``delta`` edits of attribute ``j`` of each row, clipped to [0, 1]."""
    out = []
    for sign in (-1.0, 1.0):
        a = a0.clone()
        a[:, j] = torch.clamp(a0[:, j] + sign * delta, 0.0, 1.0)
        out.append(a)
    return out


def _delta_edits(a0: torch.Tensor, edits: list[torch.Tensor], measured: list[np.ndarray],
                 j: int, col: int, m_rec: np.ndarray, spread: np.ndarray):
    """The -/+``delta`` edits ``edits`` of attribute ``j`` (measurement column ``col``), measured
    ``measured``, against the reconstruction's measurement ``m_rec``: per edit whether it counts
    (``ok``), moved the right way, its own standardised effect per unit of requested change, the
    mean |standardised change| of the other columns, whether the measure failed on it, and the
    standardised change of every column per unit of requested change (a row of the response
    matrix)."""
    n = len(a0)
    ok, moved, other, unmeasured, signed = [], [], [], [], []
    for sign, a, m in zip((-1.0, 1.0), edits, measured):
        step = (a[:, j] - a0[:, j]).numpy().astype(np.float64)
        change = (m - m_rec) / spread
        measured_ok = np.isfinite(change[:, col])
        valid = (np.abs(step) > 1e-6) & measured_ok
        unmeasured.append((np.abs(step) > 1e-6) & ~measured_ok)
        ok.append(valid)
        moved.append(np.sign(change[:, col]) == sign)
        signed.append(np.where(valid[:, None], change / np.where(valid, step, 1.0)[:, None],
                               np.nan))
        oc = [c for c in range(m_rec.shape[1]) if c != col and c < change.shape[1]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            other.append(np.nanmean(np.abs(change[:, oc]), axis=1) if oc else np.zeros(n))
    ok, moved, other, unmeasured, signed = (np.concatenate(v) for v in
                                            (ok, moved, other, unmeasured, signed))
    return ok, moved, signed[:, col], other, unmeasured, signed


def _edits_measured(editor: Editor, latent, measure: Measure, tiles_u8: np.ndarray,
                    a0: torch.Tensor, targets, values: np.ndarray, delta: float,
                    batch_size: int) -> dict:
    """Every edit of the protocol, decoded here and measured meanwhile in one background thread
    (the editor's torch work and the measurement's numpy work overlap; the same ``measure``
    calls, in the same order, as one after the other): the originals' and the reconstruction's
    measurements and, per target attribute, the sweep's and the -/+``delta`` edits'."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="mxplain-measure") as pool:
        def later(a: torch.Tensor):
            return pool.submit(_measure, measure, edit_batched(editor, latent, a, batch_size))

        orig = pool.submit(_measure, measure, tiles_u8)
        rec = later(a0)
        jobs = {}
        for j, _, _ in targets:
            sweep = []
            for v in values:
                a = a0.clone()
                a[:, j] = float(v)
                sweep.append(later(a))
            edits = _delta_attributes(a0, j, delta)
            jobs[j] = (sweep, edits, [later(a) for a in edits])
        return {"orig": orig.result(), "rec": rec.result(),
                "attributes": {j: ([f.result() for f in sweep], edits, [f.result() for f in ms])
                               for j, (sweep, edits, ms) in jobs.items()}}


def edit_fidelity(editor: Editor, store, measure: Measure, n_tiles_per_lot: int = 8,
                  delta: float = 0.35, ctx: RunContext | None = None, n_steps: int = 5,
                  measure_attributes: Sequence[str] | None = None, seed: int = 0,
                  batch_size: int = 64) -> dict:
    """How faithfully ``editor`` changes each attribute, judged by an independent ``measure``.

    Returns ``{"attributes": {name: {...}}, "mean_*": ..., "n_tiles": N, "delta": delta}``
    where each attribute (of the editor that the measure covers) has

    ``spearman``            Spearman rho of requested value vs measured value over a sweep of
                            ``n_steps`` values in [0, 1] (pooled over tiles);
    ``spearman_per_tile``   the same within each tile, averaged;
    ``direction_share``     share of the -/+``delta`` edits (clipped to [0, 1]; edits the clip
                            makes empty are skipped) whose measurement moved in the requested
                            direction relative to the reconstruction at the lot's attributes
                            (edits the measure returns NaN for are left out and counted in
                            ``unmeasured_share``);
    ``effect``              mean standardised change of the attribute itself per unit of requested
                            change (measurement spread = std over the original tiles);
    ``entanglement``        mean |standardised change| of the other measured attributes;
    ``response``            ``{measured attribute: mean standardised change per unit of requested
                            change}`` over the same edits: a row of the edit response matrix (its
                            diagonal entry is ``effect``; the others say *which* attribute an
                            entangled edit also moves, and which way);
    ``label_spearman``      Spearman rho of lot label vs measurement on the original tiles (how well
                            the measure itself tracks the labels).
    """
    from tqdm.auto import tqdm

    ctx = ctx or RunContext()
    attrs = list(editor.attributes or store.attributes)
    if measure_attributes is None:  # Dataset.measure: columns in the store's attribute order
        measure_attributes = tuple(store.attributes)
    mcols = {name: i for i, name in enumerate(measure_attributes)}
    targets = [(j, name, mcols[name]) for j, name in enumerate(attrs) if name in mcols]
    if not targets:
        raise ValueError(f"none of the editor's attributes {attrs} is measured "
                         f"(measure columns: {list(measure_attributes)})")
    tiles_u8, lot_idx = sample_tiles(store, n_tiles_per_lot, seed)
    a0 = torch.from_numpy(store.lot_attributes[lot_idx].astype(np.float32))
    n, k = a0.shape
    latent = encode_batched(editor, to_tensor(tiles_u8), batch_size)
    values = np.linspace(0.0, 1.0, n_steps)
    done = _edits_measured(editor, latent, measure, tiles_u8, a0, targets, values, delta,
                           batch_size)
    m_orig, m_rec = done["orig"], done["rec"]
    spread = np.nanstd(m_orig, axis=0)
    spread = np.where(spread > 0, spread, 1.0)

    result: dict = {"n_tiles": int(n), "delta": float(delta), "attributes": {}}
    bar = tqdm(targets, desc="edit fidelity", disable=not ctx.progress)
    for j, name, col in bar:
        swept, edits, measured = done["attributes"][j]
        sweep = np.stack([m[:, col] for m in swept])  # (n_steps, n)
        req = np.repeat(values[:, None], n, axis=1)
        per_tile = [_spearman(values, sweep[:, i]) for i in range(n)]
        per_tile = [r for r in per_tile if np.isfinite(r)]
        ok, moved, own, other, unmeasured, signed = _delta_edits(a0, edits, measured, j, col,
                                                                 m_rec, spread)
        result["attributes"][name] = {
            "spearman": _spearman(req.ravel(), sweep.ravel()),
            "spearman_per_tile": float(np.mean(per_tile)) if per_tile else float("nan"),
            "direction_share": float(moved[ok].mean()) if ok.any() else float("nan"),
            "n_edits": int(ok.sum()),
            "unmeasured_share": float(unmeasured.sum() / max(1, ok.sum() + unmeasured.sum())),
            "effect": _nanmean(own[ok]),
            "entanglement": _nanmean(other[ok]),
            "response": {m: _nanmean(signed[ok, c]) for m, c in mcols.items()
                         if c < signed.shape[1]},
            "label_spearman": _spearman(a0[:, j].numpy().astype(np.float64), m_orig[:, col]),
        }
    bar.close()
    for key in ("spearman", "direction_share", "entanglement"):
        vals = [d[key] for d in result["attributes"].values() if np.isfinite(d[key])]
        result[f"mean_{key}"] = float(np.mean(vals)) if vals else float("nan")
    return result


def reconstruction_error(editor: Editor, store, n_tiles_per_lot: int = 8, seed: int = 0,
                         batch_size: int = 64) -> dict:
    """Error of ``editor.edit(tile, lot attributes)`` against the tile, grey levels in [0, 1]."""
    tiles_u8, lot_idx = sample_tiles(store, n_tiles_per_lot, seed)
    t = to_tensor(tiles_u8)
    a = torch.from_numpy(store.lot_attributes[lot_idx].astype(np.float32))
    l1 = mse = 0.0
    with torch.no_grad():
        for i in range(0, len(t), batch_size):
            x = t[i:i + batch_size].to(editor_device(editor))
            y = editor.edit(x, a[i:i + batch_size].to(editor_device(editor))).float()
            l1 += float((y - x).abs().mean(dim=(1, 2, 3)).sum())
            mse += float(((y - x) ** 2).mean(dim=(1, 2, 3)).sum())
    l1, mse = l1 / len(t), mse / len(t)
    return {"l1": l1, "mse": mse, "psnr": float(10 * np.log10(1.0 / max(mse, 1e-12))),
            "n_tiles": int(len(t))}


def edit_grid_figure(editor: Editor, store, path: str | Path, n_tiles: int = 3,
                     delta: float = 0.35, seed: int = 0) -> Path:
    """Seed 000 Figure 3/11: for ``n_tiles`` tiles (from lots spread over the store), rows =
    attributes, columns = original, decreased (-``delta``), increased (+``delta``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attrs = list(editor.attributes or store.attributes)
    lots = np.unique(np.linspace(0, store.n_lots - 1, min(n_tiles, store.n_lots)).round()
                     .astype(int))
    tiles_u8, lot_idx = sample_tiles(store, 1, seed, lots=[int(i) for i in lots])
    t = to_tensor(tiles_u8)
    a0 = torch.from_numpy(store.lot_attributes[lot_idx].astype(np.float32))
    k, nt = len(attrs), len(t)
    dev = editor_device(editor)
    fig, axes = plt.subplots(k, 3 * nt, figsize=(1.8 * 3 * nt, 1.9 * k), squeeze=False)
    with torch.no_grad():
        latent = editor.encode(t.to(dev))
        for j, name in enumerate(attrs):
            imgs = [t]
            for sign in (-1.0, 1.0):
                a = a0.clone()
                a[:, j] = torch.clamp(a0[:, j] + sign * delta, 0.0, 1.0)
                imgs.append(editor.decode(latent, a.to(dev)).float().cpu())
            for i in range(nt):
                for c, (img, label) in enumerate(zip(imgs, ("original", "decreased", "increased"))):
                    ax = axes[j, 3 * i + c]
                    ax.imshow(img[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if j == 0:
                        ax.set_title(f"{store.lot_ids[lot_idx[i]]}\n{label}" if c == 0 else label,
                                     fontsize=7)
                    if i == 0 and c == 0:
                        ax.set_ylabel(f"{name}\n(a={float(a0[i, j]):.2f})", fontsize=8)
    fig.suptitle(f"attribute edits (+/-{delta:g})", fontsize=9)
    return save_figure(fig, path, dpi=90)


def realism(editor: Editor, store, n_per_class: int = 512, delta: float = 0.35, seed: int = 0,
            **kwargs) -> dict:
    """Realism of ``editor``'s reconstructions and +/-``delta`` edits by a classifier two-sample
    test: :func:`mxplain.realism.realism_test` (its docstring has the protocol)."""
    from mxplain.realism import realism_test

    return realism_test(editor, store, n_per_class=n_per_class, delta=delta, seed=seed, **kwargs)


def _fidelity_panel(ax, fidelity: dict, ceiling: dict | None) -> None:
    names = list(fidelity["attributes"])
    x = np.arange(len(names))
    share = [fidelity["attributes"][a]["direction_share"] for a in names]
    width = 0.38 if ceiling else 0.6
    ax.bar(x - (width / 2 if ceiling else 0), share, width, label="editor", color="C0")
    if ceiling:
        ref = [ceiling["attributes"].get(a, {}).get("direction_share", np.nan) for a in names]
        ax.bar(x + width / 2, ref, width, label="ceiling (the data's generator as editor)",
               color="0.6")
    ax.axhline(0.5, color="k", lw=0.8, ls=":", label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"edits moving the measurement\nthe requested way (±{fidelity['delta']:g})",
                  fontsize=8)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)


def _response_panel(ax, fidelity: dict, ceiling: dict | None) -> None:
    """The edit response matrix: rows the edited attribute, columns the measured one, each cell
    the mean standardised change per unit of request (the ceiling's below it, in brackets)."""
    rows = list(fidelity["attributes"])
    cols = list(fidelity["attributes"][rows[0]]["response"])
    m = np.array([[fidelity["attributes"][r]["response"].get(c, np.nan) for c in cols]
                  for r in rows], dtype=np.float64)
    ref = ceiling["attributes"] if ceiling else {}
    lim = max([float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 1.0, 1e-6]
              + [abs(v) for r in ref.values() for v in r.get("response", {}).values()
                 if np.isfinite(v)])
    ax.imshow(np.nan_to_num(m), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            text = f"{m[i, j]:+.2f}"
            base = ref.get(r, {}).get("response", {}).get(c)
            if base is not None and np.isfinite(base):
                text += f"\n({base:+.2f})"
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5,
                    fontweight="bold" if r == c else "normal")
    def short(names):
        return [f"{n[:6]}." if len(n) > 7 else n for n in names]

    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(short(cols), fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(short(rows), fontsize=7)
    ax.set_xlabel("measured change (spread units per unit of request)", fontsize=7)
    ax.set_ylabel("edited attribute", fontsize=7)
    ax.set_title("what each edit moves" + (" (ceiling in brackets)" if ref else ""), fontsize=8)


def _realism_panel(ax, real: dict, ceiling: dict | None) -> None:
    """AUCs of the realism test (reconstructions, edits) with their intervals, beside the
    reference editor's (the realism ceiling) when given."""
    keys = [k for k in ("reconstruction", "edits") if k in real]
    x = np.arange(len(keys))
    sets = [(real, "editor", "C1")] + ([(ceiling, "ceiling (generator)", "0.6")]
                                       if ceiling and "skipped" not in ceiling else [])
    width = 0.8 / len(sets)
    low = 0.4
    for s, (res, label, color) in enumerate(sets):
        auc = np.array([res.get(k, {}).get("auc", np.nan) for k in keys], dtype=float)
        ci = np.array([res.get(k, {}).get("auc_ci", [np.nan, np.nan]) for k in keys], dtype=float)
        err = np.abs(np.stack([auc - ci[:, 0], ci[:, 1] - auc])) if len(keys) else None
        pos = x + (s - (len(sets) - 1) / 2) * width
        if np.isfinite(ci).any():
            low = min(low, float(np.nanmin(ci)) - 0.05)
        ax.bar(pos, auc - 0.5, width, bottom=0.5, yerr=err, capsize=3, label=label, color=color)
        for p, v, hi in zip(pos, auc, ci[:, 1]):
            top = np.nanmax([v, hi]) if np.isfinite([v, hi]).any() else 0.5
            ax.text(p, min(top + 0.01, 0.97), f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{k}\n({real[k].get('n_test', '?')} test tiles/class)" for k in keys],
                       fontsize=8)
    ax.set_ylim(max(0.0, low), 1.0)
    ax.set_ylabel("realism: critic ROC AUC\n(0.5 = indistinguishable)", fontsize=8)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)


def fidelity_figure(fidelity: dict | None, path: str | Path, ceiling: dict | None = None,
                    realism: dict | None = None, realism_ceiling: dict | None = None) -> Path:
    """Bar chart of each attribute's ``direction_share`` (:func:`edit_fidelity`), next to the
    ``ceiling`` (the same protocol with the data's own generator as the editor) when given, and
    the edit response matrix (``response``; the ceiling's in brackets) beside them; with
    ``realism`` (:func:`realism`) a panel of its AUCs beside ``realism_ceiling``'s. Either part may
    be missing (no measurement: realism only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    show_real = realism is not None and "skipped" not in realism
    show_resp = fidelity is not None and all("response" in d
                                              for d in fidelity["attributes"].values())
    panels = [p for p, on in (("fidelity", fidelity is not None), ("response", show_resp),
                              ("realism", show_real)) if on]
    if not panels:
        raise ValueError("fidelity_figure needs a fidelity or a realism result")
    widths = {"fidelity": 5.5, "response": 4.4, "realism": 3.2}
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths[p] for p in panels), 3),
                             squeeze=False, gridspec_kw={"width_ratios": [widths[p] for p in panels]})
    for ax, panel in zip(axes[0], panels):
        if panel == "fidelity":
            _fidelity_panel(ax, fidelity, ceiling)
        elif panel == "response":
            _response_panel(ax, fidelity, ceiling)
        else:
            _realism_panel(ax, realism, realism_ceiling)
    return save_figure(fig, path, dpi=110)
