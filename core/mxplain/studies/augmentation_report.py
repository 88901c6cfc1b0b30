"""Outputs of the augmentation study (:mod:`mxplain.studies.augmentation`).

In the study folder:

* ``table.csv`` / ``table.md`` - test R^2 (mean, sd over the draws, min, max) per generator and
  number M of generated tiles added;
* ``results.json`` - everything: config, seeds, wall times, every draw's R^2 and epochs, the
  property distributions (authentic and generated) with their two-sample KS statistics
  (``scipy.stats.ks_2samp``), the generators' and the editor's descriptions;
* ``figures/augmentation.png`` - test R^2 mean +/- sd against M for both generators, and the
  property histograms of authentic vs generated tiles; ``figures/augmentation_samples.png`` -
  example tiles of each source with their simulated property;
* ``generated.npz`` - both generated pools (``uint8`` tiles) and their simulated labels.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from mxplain.studies.generators import GENERATORS

LABELS = {"texturevae": "TextureVAE (latent neighbourhood)", "grf": "GRF, fixed pore fraction"}
SHORT = {"texturevae": "TextureVAE", "grf": "GRF"}
COLOURS = {"texturevae": "tab:blue", "grf": "tab:orange", "authentic": "0.3"}


def _stats(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def summarize(rows: list[dict], sizes) -> list[dict]:
    out = []
    for gen in GENERATORS:
        for m in sorted(sizes):
            sel = [r for r in rows if r["generator"] == gen and r["m"] == m]
            s = _stats([r["test_r2"] for r in sel])
            out.append({"generator": gen, "m": int(m), "test_r2_mean": s["mean"],
                        "test_r2_sd": s["sd"], "test_r2_min": s["min"], "test_r2_max": s["max"],
                        "draws": s["n"],
                        "epochs_mean": float(np.mean([r["epochs_run"] for r in sel]))})
    return out


def ks_tests(authentic: np.ndarray, train: np.ndarray, pools: dict) -> dict:
    from scipy.stats import ks_2samp

    out = {}
    for gen in GENERATORS:
        y = pools[gen][1]
        a = ks_2samp(authentic, y)
        t = ks_2samp(train, y)
        out[gen] = {"ks_vs_authentic": float(a.statistic), "p_vs_authentic": float(a.pvalue),
                    "ks_vs_train": float(t.statistic), "p_vs_train": float(t.pvalue)}
    return out


def assemble(cfg, sets: dict, pools: dict, rows: list[dict], editor_info: dict, simulator,
             wall_seconds: float) -> dict:
    import torch

    import mxplain

    authentic = np.concatenate([sets[k][1] for k in ("train", "val", "test")])
    props = {"authentic_train": sets["train"][1], "authentic_val": sets["val"][1],
             "authentic_test": sets["test"][1],
             **{f"generated_{g}": pools[g][1] for g in GENERATORS}}
    return {
        "study": "augmentation (seed 001 section 3.2, Fig. 4)",
        "config": cfg.to_dict(),
        "seeds": {"dataset_seeds": {k: 1000 * cfg.seed + i + 1
                                    for i, k in enumerate(("train", "val", "test"))},
                  "cnn_seed_of_draw": "1000 * seed + draw",
                  "pool_draws": "SeedSequence(seed, spawn_key=(3, generator index, m, draw))",
                  "generators": "SeedSequence(seed, spawn_key=(1,)) texturevae, (2,) grf"},
        "simulator": simulator.describe(),
        "summary": summarize(rows, cfg.sizes),
        "draws": rows,
        "ks": ks_tests(authentic, sets["train"][1], pools),
        "property_stats": {k: _stats(v) for k, v in props.items()},
        "properties": {k: [float(x) for x in v] for k, v in props.items()},
        "generators": {g: pools[g][2] for g in GENERATORS},
        "editor": editor_info,
        "wall_seconds": float(wall_seconds),
        "training_seconds": float(sum(r["seconds"] for r in rows if r["generator"] == "grf"
                                      or r["m"] > 0)),
        "provenance": {"mxplain": getattr(mxplain, "__version__", "unknown"),
                       "torch": torch.__version__, "numpy": np.__version__,
                       "python": platform.python_version(), "threads": torch.get_num_threads()},
    }


def table_markdown(summary: list[dict]) -> str:
    lines = ["| generator | M generated | test R^2 mean | sd | min | max | draws | epochs (mean) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary:
        lines.append(f"| {r['generator']} | {r['m']} | {r['test_r2_mean']:.3f} | "
                     f"{r['test_r2_sd']:.3f} | {r['test_r2_min']:.3f} | {r['test_r2_max']:.3f} | "
                     f"{r['draws']} | {r['epochs_mean']:.1f} |")
    return "\n".join(lines) + "\n"


def table_csv(summary: list[dict]) -> str:
    keys = ["generator", "m", "test_r2_mean", "test_r2_sd", "test_r2_min", "test_r2_max",
            "draws", "epochs_mean"]
    lines = [",".join(keys)]
    for r in summary:
        lines.append(",".join(f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k])
                              for k in keys))
    return "\n".join(lines) + "\n"


def figure(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mxplain.figures import save_figure

    sizes = sorted(results["config"]["sizes"])
    pos = np.arange(len(sizes))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, gen in enumerate(GENERATORS):
        rows = {r["m"]: r for r in results["summary"] if r["generator"] == gen}
        mean = np.array([rows[m]["test_r2_mean"] for m in sizes])
        sd = np.array([rows[m]["test_r2_sd"] for m in sizes])
        x = pos + (k - 0.5) * 0.08
        ax.errorbar(x, mean, yerr=sd, marker="o", capsize=3, color=COLOURS[gen], label=LABELS[gen])
    ax.set_xticks(pos, [str(m) for m in sizes])
    ax.set_xlabel("generated tiles added to the authentic training tiles (M)")
    ax.set_ylabel("test R^2 (mean +/- sd over draws)")
    n = results["config"]["n_train"]
    ax.set_title(f"{n} authentic training tiles, {results['config']['draws']} draws per M")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    props = results["properties"]
    authentic = np.concatenate([props[f"authentic_{k}"] for k in ("train", "val", "test")])
    every = np.concatenate([authentic] + [props[f"generated_{g}"] for g in GENERATORS])
    bins = np.linspace(float(every.min()), float(every.max()) + 1e-9, 31)
    bx.hist(authentic, bins=bins, density=True, histtype="stepfilled", alpha=0.35,
            color=COLOURS["authentic"], label=f"authentic (n = {len(authentic)})")
    for gen in GENERATORS:
        ks = results["ks"][gen]["ks_vs_authentic"]
        bx.hist(props[f"generated_{gen}"], bins=bins, density=True, histtype="step", lw=1.8,
                color=COLOURS[gen], label=f"{LABELS[gen]}: KS = {ks:.3f}")
    sim = results["simulator"]
    bx.set_xlabel(f"{sim['property_name']} ({sim['property_units']})")
    bx.set_ylabel("density")
    bx.set_title("simulated property: authentic vs generated tiles")
    bx.legend(fontsize=8)
    return save_figure(fig, path)


def samples_figure(sets: dict, pools: dict, path: Path, n: int = 8) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mxplain.figures import save_figure

    sources = [("authentic", sets["train"][0], sets["train"][1])]
    sources += [(SHORT[g], pools[g][0], pools[g][1]) for g in GENERATORS]
    k = min(n, *(len(s[1]) for s in sources))
    fig, axes = plt.subplots(len(sources), k, figsize=(1.3 * k, 1.5 * len(sources)), squeeze=False)
    for r, (name, tiles, y) in enumerate(sources):
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(tiles[c], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{y[c]:.3f}", fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=8)
    return save_figure(fig, path)


def write_pools(out: Path, sets: dict, pools: dict) -> None:
    """The generated pools and their example figure (written as soon as they exist)."""
    out = Path(out)
    samples_figure(sets, pools, out / "figures" / "augmentation_samples.png")
    tmp = out / "generated.tmp.npz"
    np.savez_compressed(tmp, **{f"{g}_tiles": pools[g][0] for g in GENERATORS},
                        **{f"{g}_labels": pools[g][1] for g in GENERATORS})
    tmp.replace(out / "generated.npz")


def write_outputs(out: Path, results: dict) -> None:
    from mxplain.runfolder import write_atomic

    out = Path(out)
    write_atomic(out / "results.json", json.dumps(results, indent=1))
    write_atomic(out / "table.md", table_markdown(results["summary"]))
    write_atomic(out / "table.csv", table_csv(results["summary"]))
    figure(results, out / "figures" / "augmentation.png")
