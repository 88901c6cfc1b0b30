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

import json
import re
from pathlib import Path

from mxplain.errors import UserError
from mxplain.report_compare import _comparison_section, sensitivity_comparison  # noqa: F401
from mxplain.report_evidence import _components, _realism_section, evidence  # noqa: F401
from mxplain.report_html import _dict, _e, _figure, _table, _utf8, read_metrics
from mxplain.runfolder import write_atomic

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
td,th{overflow-wrap:break-word}.numbers td,.numbers th{overflow-wrap:anywhere}
.wide{overflow-x:auto;max-width:100%}ul.answers li{margin:.3em 0}
td.none{color:#a00;font-style:italic}details{margin:1em 0}summary{cursor:pointer;font-weight:600}
.numbers td:last-child{text-align:right;font-variant-numeric:tabular-nums}
p.caption{font-size:.85em;color:#444;max-width:60em}"""


def _explainers(metrics: dict) -> dict:
    """Each configured explainer: ``ran``, or ``skipped: why`` (``[run] on_unsupported = "skip"``,
    ``metrics.json``'s ``explain_skipped``)."""
    config = _dict(_dict(metrics.get("provenance")).get("config"))
    skipped = _dict(metrics.get("explain_skipped"))
    names = list(_dict(config.get("explain"))) or list(_dict(metrics.get("explain")))
    return {n: f"skipped: {skipped[n]}" if n in skipped else "ran" for n in names}


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
    sections, used = evidence(run_dir, metrics, figs)
    parts.append("<h2>Evidence</h2><p class='caption'>The figures and headline numbers behind "
                 "the answers, by component; the full numbers are in the raw metrics at the "
                 "end.</p>" if sections else "")
    parts.extend(sections)
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
