"""What the run's forward sensitivities should have been: the run's own trained predictor, probed
on tiles re-rendered by the user's generator (``make_data.render``, each explained tile from its
own seed) with one attribute swept over the forward explainer's grid and the others at the lot's
labels, the lot's slope estimated as the forward explainer does (Theil-Sen: the median of the
within-tile pairwise slopes). Beside it mxplain's ``sensitivity`` from the cube and the law's
coefficient (what the property itself does per unit attribute).

    python examples/new_user/true_sensitivity.py RUN_DIR --data runs/new_user_data [--json out.json]

Writes a markdown table to stdout. Check first that the explained tiles are the generator's:
the predictor on the re-rendered tile at the lot's labels equals the cube's ``prediction``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_data import ATTRIBUTES, LAW, render  # noqa: E402


def theil_sen(values: np.ndarray, preds: np.ndarray) -> float:
    """Median over tiles and step pairs i < j of (p_j - p_i) / (v_j - v_i); preds (n, steps)."""
    i, j = np.triu_indices(len(values), 1)
    return float(np.median((preds[:, j] - preds[:, i]) / (values[j] - values[i])))


def lot_labels(data: Path) -> dict[str, np.ndarray]:
    with (data / "lots.csv").open(newline="") as f:
        return {r["lot"]: np.array([float(r[a]) for a in ATTRIBUTES]) for r in csv.DictReader(f)}


def probe(run: Path, data: Path, seed: int = 0) -> dict:
    """Per lot and attribute: the re-rendered (true) slope and mxplain's; the largest difference
    between the cube's predictions and those on re-rendered tiles (the tiles check)."""
    import mxplain

    cube = mxplain.open_results(run)
    metrics = json.loads((run / "metrics.json").read_text())
    steps = int(metrics["explain"]["forward"]["steps"])
    grid = np.linspace(0.0, 1.0, steps)
    model = mxplain.load_checkpoint(run / "models" / "predictor.pt")
    labels, size = lot_labels(data), int(cube.sizes["y"])
    out, worst = {}, 0.0
    for li, lot in enumerate(str(x) for x in cube["lot"].values):
        index = int(lot[1:]) - 1  # make_data.lot_id
        tiles = [t for t in range(cube.sizes["tile"]) if bool(cube["tile_mask"].values[li, t])]
        own = np.stack([render(labels[lot], seed, index, t, size) for t in tiles])
        pred = model.predict(own[:, None])
        worst = max(worst, float(np.max(np.abs(pred - cube["prediction"].values[li, tiles]))))
        row = {}
        for k, a in enumerate(ATTRIBUTES):
            swept = []
            for v in grid:
                attrs = labels[lot].copy()
                attrs[k] = v
                swept.append(np.stack([render(attrs, seed, index, t, size) for t in tiles]))
            preds = model.predict(np.stack(swept, 1).reshape(-1, 1, size, size))
            row[a] = {"true": theil_sen(grid, preds.reshape(len(tiles), steps)),
                      "mxplain": float(cube["sensitivity"].values[li, k])}
        out[lot] = row
    return {"lots": out, "prediction_check_max_abs": worst, "steps": steps,
            "units": str(metrics.get("data", {}).get("units", ""))}


def table(res: dict) -> str:
    u = res["units"]
    lines = [f"| lot | {' | '.join(f'{a}: true / mxplain ({u})' for a in ATTRIBUTES)} |",
             "| --- |" + " --- |" * len(ATTRIBUTES)]
    for lot, row in res["lots"].items():
        lines.append(f"| {lot} | " + " | ".join(
            f"{row[a]['true']:+.1f} / {row[a]['mxplain']:+.1f}" for a in ATTRIBUTES) + " |")
    med = {a: [np.median([r[a][w] for r in res["lots"].values()]) for w in ("true", "mxplain")]
           for a in ATTRIBUTES}
    lines.append("| median | " + " | ".join(f"**{t:+.1f}** / **{m:+.1f}**"
                                           for t, m in med.values()) + " |")
    lines.append("| law (the property itself) | " + " | ".join(f"{LAW[a]:+.0f}"
                                                           for a in ATTRIBUTES) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    res = probe(a.run, a.data, a.seed)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    print(table(res))
    print(f"\ntiles check: max |cube prediction - prediction on re-rendered tile| = "
          f"{res['prediction_check_max_abs']:.3g} {res['units']}")


if __name__ == "__main__":
    main()
