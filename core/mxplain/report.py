"""``mxplain report RUN_DIR [--compare OTHER_RUN]``: one self-contained HTML page (figures embedded
as data URIs) with the run's provenance, metrics and figures; with ``--compare``, a section that sets
the forward sensitivities of the two runs side by side on the lots they share (e.g. the texture
forest against the WideResNet, seed 002 vs seed 000). Every string from the run is HTML-escaped."""

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
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:.8em}
.untrusted{opacity:.45;filter:grayscale(1)}.trust-note{color:#a00;font-weight:600}
.verdict-fail,.trust-untrusted{color:#a00;font-weight:600}.verdict-warn,.trust-caution{color:#a60}
.verdict-pass,.trust-trusted{color:#070}"""
#: the explainers whose numbers a report section shows (greyed where the trust gates fail them)
SECTION_EXPLAINERS = {"Forward sensitivity": ("forward",), "Backward counterfactuals": ("backward",),
                      "TextureVAE and latent design": ("latent_design",)}


def _e(x) -> str:
    return html.escape(_utf8(str(x)), quote=True)


def _utf8(s: str) -> str:
    """``s`` with what cannot be written as UTF-8 (a folder name's non-UTF-8 byte, decoded by
    Python as a lone surrogate) replaced, so the page can always be written."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        try:
            data = s.encode("utf-8", "surrogateescape")  # the original bytes back
        except UnicodeEncodeError:
            data = s.encode("utf-8", "replace")
        return data.decode("utf-8", "replace")


def _dict(x) -> dict:
    return x if isinstance(x, dict) else {}


def read_metrics(path: Path) -> dict:
    """``metrics.json`` as a dict; unreadable, not UTF-8, not JSON or not an object: a
    :class:`UserError` naming the file."""
    try:
        metrics = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{str(path)!r} is not UTF-8 text (a damaged metrics file)") from None
    except json.JSONDecodeError:
        raise UserError(f"{str(path)!r} is not valid JSON") from None
    if not isinstance(metrics, dict):
        raise UserError(f"{str(path)!r} holds a JSON {type(metrics).__name__}, not the object of "
                        f"a run's metrics")
    return metrics


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


def _num(x) -> str:
    return _e(f"{x:.3f}") if isinstance(x, (int, float)) and not isinstance(x, bool) else "?"


def _realism_section(metrics: dict) -> str:
    """The editor's realism (classifier two-sample test, :mod:`mxplain.realism`) as one small
    table: AUC, interval, the critic's training AUC and the tiles per class, for the editor and,
    where run, the data's own generator (the realism ceiling)."""
    ev = (metrics.get("editor") or {}).get("evaluation") or {}
    rows = []
    for key, who in (("realism", "editor"), ("realism_ceiling", "ceiling: the data's generator")):
        res = ev.get(key)
        if not isinstance(res, dict):
            continue
        if "skipped" in res:
            rows.append(f"<tr><td>{_e(who)}</td><td colspan='5'>skipped: {_e(res['skipped'])}"
                        f"</td></tr>")
            continue
        for test in ("reconstruction", "edits"):
            r = res.get(test) or {}
            ci = r.get("auc_ci") or [None, None]
            rows.append(f"<tr><td>{_e(who)}</td><td>{_e(test)}</td><td>{_num(r.get('auc'))}</td>"
                        f"<td>{_num(ci[0])} – {_num(ci[1])}</td><td>{_num(r.get('train_auc'))}</td>"
                        f"<td>{_e(r.get('n_train', '?'))} / {_e(r.get('n_test', '?'))}</td></tr>")
    if not rows:
        return ""
    head = ("<tr><th>editor</th><th>real vs</th><th>AUC</th><th>95 % interval</th>"
            "<th>critic's AUC on its training tiles</th><th>tiles per class (train / test)</th>"
            "</tr>")
    return ("<h3>Realism (classifier two-sample test)</h3><p>A small CNN trained on half of the "
            "lots tells real tiles from the editor's; ROC AUC on the other half: 0.5 = "
            "indistinguishable, 1.0 = every tile told apart.</p><table>" + head + "".join(rows) +
            "</table>")


def _lot_sections(run_dir: Path) -> str:
    """One table per lot from the results cube: labels, property, predictions, explanations."""
    import numpy as np

    from mxplain.cube import open_results

    if not (run_dir / "results.zarr").exists():
        return ""
    try:
        cube = open_results(run_dir).load()
    except UserError:  # a damaged cube (digest mismatch) is said, never rendered around
        raise
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


def _common_sensitivities(run_dir: Path, other_dir: Path):
    """Forward sensitivities ``(lots, attributes)`` of two runs on their common lots and attributes,
    and the true law of the first run (NaN where unknown)."""
    import numpy as np

    from mxplain.cube import open_results

    cubes = []
    for d in (run_dir, other_dir):
        path = Path(d) / "results.zarr"
        if not path.exists():
            raise UserError(f"{str(d)!r} has no results.zarr to compare")
        cube = open_results(path)
        if "sensitivity" not in cube:
            raise UserError(f"{str(d)!r} has no forward sensitivities ([explain.forward] did not run)")
        cubes.append(cube)
    a, b = cubes
    lots = [lot for lot in a["lot"].values.tolist() if lot in set(b["lot"].values.tolist())]
    attrs = [x for x in a["attribute"].values.tolist() if x in set(b["attribute"].values.tolist())]
    if not lots or not attrs:
        raise UserError(f"{str(run_dir)!r} and {str(other_dir)!r} share no lots and attributes")
    sa = a["sensitivity"].sel(lot=lots, attribute=attrs).values.astype(float)
    sb = b["sensitivity"].sel(lot=lots, attribute=attrs).values.astype(float)
    truth = (a["true_sensitivity"].sel(lot=lots, attribute=attrs).values.astype(float)
             if "true_sensitivity" in a else np.full(sa.shape, np.nan))
    return attrs, sa, sb, truth


def sensitivity_comparison(run_dir: Path, other_dir: Path) -> dict:
    """Forward sensitivities of two runs on their common lots and attributes: per attribute the
    sign agreement of each run with the true law (where known), the share of lots where the two
    runs agree in sign, and the Spearman correlation of their per-lot sensitivities."""
    attrs, sa, sb, truth = _common_sensitivities(run_dir, other_dir)
    return _compare_arrays(attrs, sa, sb, truth)


def _compare_arrays(attrs, sa, sb, truth) -> dict:
    import numpy as np
    from scipy.stats import spearmanr

    from mxplain.truth import negligible_mask, sign_agreement

    out: dict = {"lots": int(sa.shape[0]), "attributes": {}}
    for k, name in enumerate(attrs):
        ok = np.isfinite(sa[:, k]) & np.isfinite(sb[:, k])
        row = {"median_this": float(np.median(sa[ok, k])) if ok.any() else None,
               "median_other": float(np.median(sb[ok, k])) if ok.any() else None,
               "sign_agreement_between_runs": float(np.mean(np.sign(sa[ok, k]) == np.sign(sb[ok, k])))
               if ok.any() else None,
               "spearman_between_runs": float(spearmanr(sa[ok, k], sb[ok, k]).statistic)
               if ok.sum() > 2 and np.ptp(sa[ok, k]) > 0 and np.ptp(sb[ok, k]) > 0 else None}
        known = ok & ~negligible_mask(truth)[:, k]
        if known.any():
            t = truth[known, k][:, None]  # one lot a row: scored by the per-lot rule above
            row["truth_sign_agreement_this"] = sign_agreement(sa[known, k][:, None], t)["agreement"]
            row["truth_sign_agreement_other"] = sign_agreement(sb[known, k][:, None], t)[
                "agreement"]
        out["attributes"][name] = row
    for key in ("truth_sign_agreement_this", "truth_sign_agreement_other",
                "sign_agreement_between_runs"):
        vals = [r[key] for r in out["attributes"].values() if r.get(key) is not None]
        if vals:
            out[f"mean_{key}"] = float(np.mean(vals))
    return out


def _comparison_section(run_dir: Path, other_dir: Path, metrics: dict) -> str:
    import io

    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mxplain.figures import literal_text

    attrs, sa, sb, truth = _common_sensitivities(run_dir, other_dir)
    comp = _compare_arrays(attrs, sa, sb, truth)
    try:
        other_metrics = read_metrics(Path(other_dir) / "metrics.json")
    except (OSError, UserError):
        other_metrics = {}

    def predictor_name(m):
        return _dict(_dict(_dict(m.get("provenance")).get("config")).get("predictor")).get(
            "name", "?")

    names = {"this run": f"{run_dir.name} ({predictor_name(metrics)})",
             "other run": f"{Path(other_dir).name} ({predictor_name(other_metrics)})"}
    fig, axes = plt.subplots(1, len(attrs), figsize=(3.2 * len(attrs), 3.0), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], attrs)):
        ax.scatter(sb[:, k], sa[:, k], s=14)
        lim = np.nanmax(np.abs(np.concatenate([sa[:, k], sb[:, k]]))) if np.isfinite(sa[:, k]).any() else 1
        ax.axhline(0, color="#999", lw=0.6)
        ax.axvline(0, color="#999", lw=0.6)
        ax.set_xlim(-1.1 * lim, 1.1 * lim)
        ax.set_ylim(-1.1 * lim, 1.1 * lim)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"other: {names['other run']}", fontsize=7)
        ax.set_ylabel(f"this: {names['this run']}", fontsize=7)
    fig.suptitle("forward sensitivity per lot (property units per unit attribute)", fontsize=9)
    literal_text(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    img = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f"<h2>Compared with {_e(names['other run'])}</h2>" + _table({**names, **comp}) +
            f'<figure><img alt="sensitivity comparison" src="data:image/png;base64,{img}">'
            f"<figcaption>each point is a lot</figcaption></figure>")


def _explainers(metrics: dict) -> dict:
    """Each configured explainer: ``ran``, or ``skipped: why`` (``[run] on_unsupported = "skip"``,
    ``metrics.json``'s ``explain_skipped``)."""
    config = _dict(_dict(metrics.get("provenance")).get("config"))
    skipped = _dict(metrics.get("explain_skipped"))
    names = list(_dict(config.get("explain"))) or list(_dict(metrics.get("explain")))
    return {n: f"skipped: {skipped[n]}" if n in skipped else "ran" for n in names}


def _untrusted(metrics: dict, explainers) -> str:
    """Why the trust gates fail the explanations of ``explainers`` ("" where none is untrusted)."""
    out = []
    for name in explainers:
        block = _dict(_dict(_dict(metrics.get("trust")).get("explanations")).get(name))
        if block.get("trust") != "untrusted":
            continue
        bad = {a: p for a, p in _dict(block.get("attributes")).items()
               if _dict(p).get("trust") == "untrusted"}
        reasons = sorted({r for p in bad.values() for r in p.get("reasons", [])
                          if "fail" in r or "outside" in r or "beyond" in r})
        out.append(f"{name} fails its trust gates for {', '.join(bad)}: " + "; ".join(reasons))
    return " ".join(out)


def write_report(run_dir: str | Path, compare: str | Path | None = None) -> Path:
    """Write ``run_dir/report/index.html``; with ``compare`` (another run folder) add the side-by-side
    section of :func:`sensitivity_comparison`."""
    run_dir = Path(run_dir)
    mpath = run_dir / "metrics.json"
    if not mpath.is_file():
        raise UserError(f"{str(run_dir)!r} is not a finished mxplain run (no metrics.json)")
    metrics = read_metrics(mpath)
    figs = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    used: set[Path] = set()
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mxplain report — "
             f"{_e(run_dir.name)}</title><style>{STYLE}</style></head><body>",
             f"<h1>mxplain report: {_e(run_dir.name)}</h1>"]
    from mxplain.review_report import trust_section  # the expert review beside the checks

    parts.append(trust_section(metrics))
    prov = _dict(metrics.get("provenance"))
    summary = {k: v for k, v in prov.items() if k != "config"}
    parts.append("<h2>Run summary and provenance</h2>" + _table(
        {**summary, "data": _dict(metrics.get("data")), "explainers": _explainers(metrics),
         "timings (s)": _dict(metrics.get("timings_seconds"))}))
    for title, prefixes in SECTIONS:
        sec = [f for f in figs if f.name.startswith(prefixes)]
        key = {"Predictor accuracy": "predictor", "Editor": "editor"}.get(title)
        block = metrics.get(key) if key else None
        explain = _dict(metrics.get("explain"))
        if title == "Forward sensitivity":
            block = explain.get("forward")
        elif title == "Backward counterfactuals":
            block = explain.get("backward")
        elif title == "Pixel vs attribute explanations":
            block = {k: v for k, v in explain.items()
                     if k in ("gradcam", "compare")} or None
        if not sec and not block:
            continue
        parts.append(f"<h2>{_e(title)}</h2>")
        why = _untrusted(metrics, SECTION_EXPLAINERS.get(title, ()))
        if why:  # shown greyed, with the reason, never as advice (metrics.json trust)
            parts.append(f"<p class='trust-note'>Untrusted: {_e(why)}</p><div class='untrusted'>")
        if title == "Editor":
            parts.append(_realism_section(metrics))
        if block:
            parts.append(_table(block if isinstance(block, dict) else {"value": block}))
        parts.extend(_figure(f) for f in sec)
        parts.append("</div>" if why else "")
        used.update(sec)
    if compare is not None:
        if not (Path(compare) / "metrics.json").is_file():
            raise UserError(f"{str(compare)!r} is not a finished mxplain run (no metrics.json)")
        parts.append(_comparison_section(run_dir, Path(compare), metrics))
    parts.append(_lot_sections(run_dir))
    rest = [f for f in figs if f not in used]
    if rest:
        parts.append("<h2>Other figures</h2>" + "".join(_figure(f) for f in rest))
    parts.append("<h2>Resolved config</h2><pre>" +
                 _e(json.dumps(prov.get("config", {}), indent=1)) + "</pre></body></html>")
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    write_atomic(out / "index.html", _utf8("\n".join(parts)))
    return out / "index.html"
