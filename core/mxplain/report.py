"""``mxplain report RUN_DIR [--compare OTHER_RUN]``: one self-contained HTML page (figures embedded
as data URIs) read top-down: first the answers (:mod:`mxplain.report_answers`: per lot, which
attributes move the property, which way and how much, with intervals; what change reaches a
target), then the trust gates and checks (:func:`mxplain.review_report.trust_section`), then the
evidence (figures, by the components the run used), the provenance, the references and the raw
metrics collapsed at the end. Numbers are rounded to 3 significant digits with units. With
``--compare``, its own page ``report/compare-<other run>.html`` sets the forward sensitivities of
the two runs side by side on the lots they share (e.g. the texture forest of Ling et al. 2017
against the WideResNet of Liu et al. 2020). Every string from the run is HTML-escaped."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from pathlib import Path

from mxplain.errors import UserError
from mxplain.runfolder import write_atomic

#: (key, figure-name prefixes, explainers whose numbers the section shows); titles: _title
SECTIONS = [
    ("predictor", ("predictor_",), ()),
    ("editor", ("attgan_", "editor_"), ()),
    ("forward", ("forward_",), ("forward",)),
    ("backward", ("backward_",), ("backward",)),
    ("pixel", ("compare_", "gradcam_", "overlay_"), ("gradcam", "compare")),
    ("texture", ("vgg_", "texture_"), ()),
    ("latent", ("texturevae_", "latent_"), ("latent_design",)),
]
#: the papers the methods follow, cited by author and year (the seeds in /work/shared/seeds)
REFERENCES = [
    ("liu2020", "Liu et al. 2020", "S. Liu, B. Kailkhura, J. Zhang, A. M. Hiszpanski, E. Robertson, "
     "D. Loveland, T. Y.-J. Han: Explainable deep learning for uncovering actionable scientific "
     "insights for materials discovery and design (attribute-conditioned GAN explanations of a "
     "peak-stress regressor of TATB SEM images), arXiv:2007.08631, 2020."),
    ("cang2018", "Cang et al. 2018", "R. Cang, H. Li, H. Yao, Y. Jiao, Y. Ren: Investigating key "
     "challenges in applying deep learning techniques to integrated computational material "
     "engineering (latent-space versus pixel gradients for microstructure design), report, 2018."),
    ("ling2017", "Ling et al. 2017", "J. Ling, M. Hutchinson, E. Antono, B. DeCost, E. A. Holm, "
     "B. Meredig: Building data-driven models with microstructural images: generalization and "
     "interpretability (VGG texture features and random forests), Materials Discovery 10, 2017."),
    ("sardeshmukh2021", "Sardeshmukh et al. 2021", "A. Sardeshmukh, S. Reddy, B. P. Gautham, "
     "P. Bhattacharyya: TextureVAE: learning interpretable representations of material "
     "microstructures using variational autoencoders, AAAI-MAKE 2021 (CEUR-WS Vol-2964)."),
    ("he2019", "He et al. 2019", "Z. He, W. Zuo, M. Kan, S. Shan, X. Chen: AttGAN: facial attribute "
     "editing by only changing what you want, IEEE Transactions on Image Processing 28, 2019."),
]

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;
padding:.2em .5em;text-align:left;vertical-align:top}figure{display:inline-block;margin:.5em}
img{max-width:100%;border:1px solid #eee}figcaption{font-size:.8em;color:#555}
pre{background:#f6f6f6;padding:.5em;overflow-x:auto;font-size:.8em}
.untrusted{opacity:.45;filter:grayscale(1)}.trust-note{color:#a00;font-weight:600}
.verdict-fail,.trust-untrusted{color:#a00;font-weight:600}.verdict-warn,.trust-caution{color:#a60}
.verdict-pass,.trust-trusted{color:#070}
td,th{overflow-wrap:anywhere}.wide{overflow-x:auto;max-width:100%}ul.answers li{margin:.3em 0}
td.none{color:#a00;font-style:italic}details{margin:1em 0}summary{cursor:pointer;font-weight:600}
.numbers td:last-child{text-align:right;font-variant-numeric:tabular-nums}
p.caption{font-size:.85em;color:#444;max-width:60em}"""


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


def _value(v) -> str:
    """A metrics value for the page: numbers to 3 significant digits, lists of numbers shortened,
    everything else as text (escaped by the caller)."""
    from mxplain.report_answers import sig

    if isinstance(v, bool) or v is None:
        return str(v).lower() if isinstance(v, bool) else "–"
    if isinstance(v, (int, float)):
        return str(v) if isinstance(v, int) else sig(v)
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) and v:
            shown = ", ".join(_value(x) for x in v[:6])
            return f"[{shown}{', …' if len(v) > 6 else ''}]" + (f" ({len(v)} values)"
                                                                if len(v) > 6 else "")
        return ", ".join(_value(x) for x in v[:12]) + (" …" if len(v) > 12 else "")
    return str(v)


def _flat(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """A nested dict as ``(dotted key, leaf)`` rows: no table inside a table; empty dicts and
    lists are left out (no empty rows)."""
    rows: list[tuple[str, object]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows.extend(_flat(v, key + "."))
        elif v not in ([], (), "") and not (isinstance(v, float) and math.isnan(v)):
            rows.append((key, v))
    return rows


def _table(d: dict, depth: int = 0) -> str:
    """``d`` as one flat two-column table (nested keys dotted, numbers rounded; "" where empty)."""
    rows = _flat(d)
    if not rows:
        return ""
    return ("<div class='wide'><table class='numbers'>" + "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(_value(v))}</td></tr>" for k, v in rows) +
        "</table></div>")


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
    units = _dict(metrics.get("data")).get("units") or "property units"
    fig.suptitle(f"forward sensitivity per lot ({units} per unit attribute)", fontsize=9)
    literal_text(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    img = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f"<h2>Compared with {_e(names['other run'])}</h2><p>This run: {_e(names['this run'])}"
            f"; other run: {_e(names['other run'])}; {comp['lots']} lots in common.</p>" +
            _comparison_table(comp) +
            f'<figure><img alt="sensitivity comparison" src="data:image/png;base64,{img}">'
            f"<figcaption>each point is a lot</figcaption></figure>")


COMPARE_COLUMNS = (("median_this", "median sensitivity, this run"),
                   ("median_other", "median sensitivity, other run"),
                   ("sign_agreement_between_runs", "lots where the runs agree in sign"),
                   ("spearman_between_runs", "Spearman between the runs over lots"),
                   ("truth_sign_agreement_this", "sign agreement with the true law, this run"),
                   ("truth_sign_agreement_other", "sign agreement with the true law, other run"))


def _comparison_table(comp: dict) -> str:
    """One row per attribute (no nested tables), then the means over attributes."""
    rows = comp["attributes"]
    cols = [(k, label) for k, label in COMPARE_COLUMNS
            if any(r.get(k) is not None for r in rows.values())]
    head = "".join(f"<th>{_e(label)}</th>" for _, label in cols)
    body = "".join(f"<tr><th>{_e(a)}</th>" + "".join(
        f"<td>{_e(_value(r.get(k)))}</td>" for k, _ in cols) + "</tr>" for a, r in rows.items())
    means = "; ".join(f"mean {k[5:].replace('_', ' ')}: {_value(v)}" for k, v in comp.items()
                      if k.startswith("mean_"))
    return (f"<div class='wide'><table><tr><th>attribute</th>{head}</tr>{body}</table></div>"
            + (f"<p>{_e(means)}</p>" if means else ""))


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


def _components(metrics: dict) -> dict:
    """The config's component names: ``data``, ``predictor``, ``editor`` ("" where none)."""
    config = _dict(_dict(metrics.get("provenance")).get("config"))
    return {k: str(_dict(config.get(k)).get("name") or "") for k in ("data", "predictor", "editor")}


def _title(key: str, comp: dict) -> str:
    """A section's title from the components the run used (never a component it did not)."""
    pred, editor = comp["predictor"] or "the predictor", comp["editor"]
    via = f" through the {editor} editor" if editor else ""
    return {"predictor": f"Predictor accuracy: {pred}",
            "editor": f"Editor: {editor or 'none'}",
            "forward": f"Forward sensitivity: attribute sweeps{via} (after Liu et al. 2020)",
            "backward": f"Backward counterfactuals{via} (after Liu et al. 2020, eq. 2)",
            "pixel": "Pixel vs attribute explanations (GradCAM, Integrated Gradients)",
            "texture": f"Texture features of {pred} (after Ling et al. 2017)",
            "latent": ("TextureVAE and latent design (after Sardeshmukh et al. 2021, Cang et al. "
                       "2018)" if editor == "texturevae" else
                       f"Latent design in the {editor or 'editor'} latent space (after Cang et "
                       f"al. 2018)")}[key]


def _key_numbers(block) -> str:
    """A section's headline numbers: the block's top-level scalars (nested ones are in the raw
    metrics at the end)."""
    if not isinstance(block, dict):
        return ""
    flat = {k: v for k, v in block.items() if isinstance(v, (int, float, str, bool))
            and k != "figures"}
    return _table(flat)


def _section_block(key: str, metrics: dict):
    explain = _dict(metrics.get("explain"))
    if key in ("predictor", "editor"):
        return {k: v for k, v in _dict(metrics.get(key)).items() if k != "evaluation"}
    if key in ("forward", "backward"):
        return explain.get(key)
    if key == "pixel":
        return {k: v for k, v in explain.items() if k in ("gradcam", "compare") and v} or None
    if key == "latent":
        return explain.get("latent_design")
    return None


def _evidence(metrics: dict, figs: list[Path]) -> tuple[list[str], set[Path]]:
    """The evidence sections: per component its headline numbers and figures, greyed with the
    reason where the trust gates fail its explanations."""
    comp = _components(metrics)
    parts, used = [], set()
    for key, prefixes, explainers in SECTIONS:
        sec = [f for f in figs if f.name.startswith(prefixes)]
        block = _section_block(key, metrics)
        numbers = "" if key == "pixel" else _key_numbers(block)
        if key == "pixel" and block:
            numbers = "".join(_key_numbers(v) for v in block.values())
        realism = _realism_section(metrics) if key == "editor" else ""
        if not sec and not numbers and not realism:
            continue
        parts.append(f"<h2>{_e(_title(key, comp))}</h2>")
        why = _untrusted(metrics, explainers)
        if why:  # shown greyed, with the reason, never as advice (metrics.json trust)
            from mxplain.report_answers import gate_words

            parts.append(f"<p class='trust-note'>Untrusted: {_e(gate_words(why))}</p>"
                         f"<div class='untrusted'>")
        parts.extend([realism, numbers])
        parts.extend(_figure(f) for f in sec)
        parts.append("</div>" if why else "")
        used.update(sec)
    return parts, used


def _summary(run_dir: Path, metrics: dict) -> str:
    """One line under the title: property, lots, components."""
    data, comp = _dict(metrics.get("data")), _components(metrics)
    prop = data.get("property") or "the property"
    units = f" ({data['units']})" if data.get("units") else ""
    lots = f"{data['lots']} lots" if "lots" in data else "lots"
    tiles = f", {data['tiles']} tiles" if "tiles" in data else ""
    used = ", ".join(f"{k} {v}" for k, v in comp.items() if v)
    return (f"<p>How the attributes of the microstructure move <b>{_e(prop)}{_e(units)}</b>, as "
            f"the predictor sees it: {_e(lots)}{_e(tiles)}; {_e(used)}.</p>")


def _references() -> str:
    return "<h2>References</h2><ul>" + "".join(
        f"<li id='{_e(key)}'><b>{_e(short)}</b>: {_e(full)}</li>" for key, short, full in
        REFERENCES) + "</ul>"


def _raw(metrics: dict) -> str:
    prov = _dict(metrics.get("provenance"))
    raw = {k: v for k, v in metrics.items() if k != "provenance"}
    return ("<h2>Raw metrics</h2><details><summary>metrics.json, flattened (numbers to 3 "
            "significant digits)</summary>" + _table(raw) + "</details><details><summary>Resolved "
            "config</summary><pre>" + _e(json.dumps(prov.get("config", {}), indent=1,
                                                    ensure_ascii=False)) +
            "</pre></details>")


def render_report(run_dir: Path, metrics: dict, compare: Path | None = None) -> str:
    """The page's HTML: answers, trust, evidence, provenance, references, raw metrics (with
    ``compare``: the comparison with the other run after the answers)."""
    from mxplain.report_answers import answers_section
    from mxplain.review_report import trust_section  # the gates and the expert review

    figs = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    title = f"mxplain report: {run_dir.name}" + (f" compared with {compare.name}" if compare
                                                  else "")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' "
             f"content='width=device-width'><title>{_e(title)}</title><style>{STYLE}</style>"
             f"</head><body>", f"<h1>{_e(title)}</h1>", _summary(run_dir, metrics),
             answers_section(run_dir, metrics)]
    if compare is not None:
        parts.append(_comparison_section(run_dir, compare, metrics))
    parts.append(trust_section(metrics))
    evidence, used = _evidence(metrics, figs)
    parts.append("<h2>Evidence</h2><p class='caption'>The figures and headline numbers behind "
                 "the answers, by component; the full numbers are in the raw metrics at the "
                 "end.</p>" if evidence else "")
    parts.extend(evidence)
    rest = [f for f in figs if f not in used]
    if rest:
        parts.append("<h2>Other figures</h2>" + "".join(_figure(f) for f in rest))
    prov = _dict(metrics.get("provenance"))
    parts.append("<h2>Run summary and provenance</h2>" + _table(
        {**{k: v for k, v in prov.items() if k != "config"}, "data": _dict(metrics.get("data")),
         "explainers": _explainers(metrics), "timings (s)": _dict(metrics.get("timings_seconds"))}))
    parts += [_references(), _raw(metrics), "</body></html>"]
    return _utf8("\n".join(p for p in parts if p))


def compare_page(other: Path) -> str:
    """The comparison page's path in the run folder: ``report/compare-<other run's name>.html``."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", _utf8(Path(other).resolve().name)).strip("._")
    return f"report/compare-{name or 'run'}.html"


def write_report(run_dir: str | Path, compare: str | Path | None = None,
                 redraw: bool = True) -> Path:
    """Write ``run_dir/report/index.html``; with ``compare`` (another run folder) its own page
    ``report/compare-<name>.html`` with the side-by-side section of :func:`sensitivity_comparison`
    (the run's report is left as it is), recorded in the run folder's ``written`` files.
    ``redraw`` (the run's own page): the explainers' figures are first drawn again from the run
    folder alone (:func:`mxplain.redraw.redraw_figures`); the run itself, which has just drawn
    them, passes ``False``."""
    run_dir = Path(run_dir)
    mpath = run_dir / "metrics.json"
    if not mpath.is_file():
        raise UserError(f"{str(run_dir)!r} is not a finished mxplain run (no metrics.json)")
    metrics = read_metrics(mpath)
    if compare is None:
        if redraw:
            from mxplain.redraw import redraw_figures

            redraw_figures(run_dir)
        page = render_report(run_dir, metrics)
        (run_dir / "report").mkdir(exist_ok=True)
        write_atomic(run_dir / "report" / "index.html", page)
        return run_dir / "report" / "index.html"
    compare = Path(compare)
    if not (compare / "metrics.json").is_file():
        raise UserError(f"{str(compare)!r} is not a finished mxplain run (no metrics.json)")
    page = render_report(run_dir, metrics, compare)
    return _write_recorded(run_dir, compare_page(compare), page)


def _write_recorded(run_dir: Path, rel: str, text: str) -> Path:
    """Write ``rel`` into a run folder under its lock, refusing a file mxplain did not write, and
    record it (``state.json`` ``written``); a folder without a state is written to plainly."""
    from mxplain.review import locked
    from mxplain.runfolder import may_write, read_state, record_written

    target = run_dir / rel
    if read_state(run_dir) is None:
        target.parent.mkdir(exist_ok=True)
        write_atomic(target, text)
        return target
    with locked(run_dir):
        if not may_write(run_dir, rel):
            raise UserError(f"{str(target)!r} exists and was not written by mxplain; move it "
                            f"away (mxplain never replaces a file it did not write)")
        target.parent.mkdir(exist_ok=True)
        write_atomic(target, text)
        record_written(run_dir, [rel])
    return target
