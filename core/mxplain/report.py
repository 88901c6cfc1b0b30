"""``mxplain report RUN_DIR``: one self-contained HTML page (figures embedded as data URIs) with
the run's provenance, metrics and figures. Every string from the run is HTML-escaped."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from mxplain.errors import UserError
from mxplain.runfolder import write_atomic

SECTIONS = [  # (title, figure-name prefixes)
    ("Predictor accuracy", ("predictor_",)),
    ("Editor", ("attgan_", "editor_")),
    ("Forward sensitivity", ("forward_",)),
    ("Backward counterfactuals", ("backward_",)),
    ("Pixel vs attribute explanations", ("compare_", "gradcam_", "overlay_")),
    ("Texture features", ("vgg_", "texture_")),
    ("TextureVAE and latent design", ("texturevae_", "latent_")),
]

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;
padding:.2em .5em;text-align:left;vertical-align:top}figure{display:inline-block;margin:.5em}
img{max-width:100%;border:1px solid #eee}figcaption{font-size:.8em;color:#555}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:.8em}"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _table(d: dict, depth: int = 0) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict) and depth < 2 and len(v) <= 40:
            cell = _table(v, depth + 1)
        elif isinstance(v, float):
            cell = _e(f"{v:.4g}")
        elif isinstance(v, (dict, list)):
            cell = f"<pre>{_e(json.dumps(v, default=str)[:2000])}</pre>"
        else:
            cell = _e(v)
        rows.append(f"<tr><th>{_e(k)}</th><td>{cell}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(path.name)}</figcaption></figure>")


def _lot_sections(run_dir: Path) -> str:
    """One table per lot from the results cube: labels, property, predictions, explanations."""
    import numpy as np

    from mxplain.cube import open_results

    if not (run_dir / "results.zarr").exists():
        return ""
    try:
        cube = open_results(run_dir).load()
    except Exception:  # a report still renders without the cube
        return ""
    attrs = [str(a) for a in cube["attribute"].values]
    out = ["<h2>Per lot</h2>"]
    for i, lot in enumerate(cube["lot"].values):
        c = cube.isel(lot=i)
        mask = c.tile_mask.values.astype(bool)
        pred = c.prediction.values[mask]
        head = ["attribute", "label"]
        rows = {a: [f"{float(c.lot_attributes.values[j]):.2f}"] for j, a in enumerate(attrs)}
        for var, label in (("sensitivity", "sensitivity"), ("true_sensitivity", "true effect")):
            if var in c:
                head.append(label)
                for j, a in enumerate(attrs):
                    rows[a].append(f"{float(c[var].values[j]):+.1f}")
        if "backward_attributes" in c:
            for d, direction in enumerate(c["direction"].values):
                head.append(f"mean A′−A ({direction})")
                change = c.backward_attributes.values[mask, d, :] - c.lot_attributes.values
                for j, a in enumerate(attrs):
                    rows[a].append(f"{float(np.nanmean(change[:, j])):+.3f}")
        units = cube.attrs.get("property_units", "")
        summary = (f"measured {float(c.measured_property):.1f}; predicted {pred.mean():.1f} ± "
                   f"{pred.std():.1f} over {mask.sum()} tiles {units}")
        table = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" + "".join(
            f"<tr><th>{_e(a)}</th>" + "".join(f"<td>{_e(v)}</td>" for v in vals) + "</tr>"
            for a, vals in rows.items())
        out.append(f"<h3>lot {_e(lot)}</h3><p>{_e(summary)}</p><table>{table}</table>")
    return "\n".join(out)


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    mpath = run_dir / "metrics.json"
    if not mpath.is_file():
        raise UserError(f"{str(run_dir)!r} is not a finished mxplain run (no metrics.json)")
    try:
        metrics = json.loads(mpath.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{str(mpath)!r} is not valid JSON") from None
    figs = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    used: set[Path] = set()
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mxplain report — "
             f"{_e(run_dir.name)}</title><style>{STYLE}</style></head><body>",
             f"<h1>mxplain report: {_e(run_dir.name)}</h1>"]
    prov = metrics.get("provenance", {})
    summary = {k: v for k, v in prov.items() if k != "config"}
    parts.append("<h2>Run summary and provenance</h2>" + _table(
        {**summary, "data": metrics.get("data", {}), "timings (s)": metrics.get("timings_seconds",
                                                                               {})}))
    for title, prefixes in SECTIONS:
        sec = [f for f in figs if f.name.startswith(prefixes)]
        key = {"Predictor accuracy": "predictor", "Editor": "editor"}.get(title)
        block = metrics.get(key) if key else None
        if title == "Forward sensitivity":
            block = metrics.get("explain", {}).get("forward")
        elif title == "Backward counterfactuals":
            block = metrics.get("explain", {}).get("backward")
        elif title == "Pixel vs attribute explanations":
            block = {k: v for k, v in metrics.get("explain", {}).items()
                     if k in ("gradcam", "compare")} or None
        if not sec and not block:
            continue
        parts.append(f"<h2>{_e(title)}</h2>")
        if block:
            parts.append(_table(block if isinstance(block, dict) else {"value": block}))
        parts.extend(_figure(f) for f in sec)
        used.update(sec)
    parts.append(_lot_sections(run_dir))
    rest = [f for f in figs if f not in used]
    if rest:
        parts.append("<h2>Other figures</h2>" + "".join(_figure(f) for f in rest))
    parts.append("<h2>Resolved config</h2><pre>" +
                 _e(json.dumps(prov.get("config", {}), indent=1)) + "</pre></body></html>")
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    write_atomic(out / "index.html", "\n".join(parts))
    return out / "index.html"
