"""The report's evidence: per component its headline numbers and figures. The predictor, the
editor (with its realism test) and the predictor's texture features are drawn here; every
explainer's section comes from the explainer itself
(:meth:`~mxplain.interfaces.Explainer.report_section`, :mod:`mxplain.report_sections`), greyed
with the reason where the trust gates fail its explanations."""

from __future__ import annotations

from pathlib import Path

from mxplain.report_html import _dict, _e, _figure, _num, _value
from mxplain.report_sections import ReportInput, ReportSection, default_section, scalar_rows

#: (key, figure-name prefixes) of the sections drawn from the run's models; titles: _title
MODEL_SECTIONS = [("predictor", ("predictor_",)), ("editor", ("attgan_", "editor_")),
                  ("texture", ("vgg_", "texture_"))]


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
            "indistinguishable, 1.0 = every tile told apart.</p><div class='wide'><table>" + head
            + "".join(rows) + "</table></div>")


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


def evidence(run_dir: Path, metrics: dict, figs: list[Path]) -> tuple[list[str], set[Path]]:
    """The evidence sections (predictor, editor, each explainer's, texture) and the figures they
    show."""
    comp = _components(metrics)
    sections: list[tuple[ReportSection, list[str], str]] = []
    for key, prefixes in MODEL_SECTIONS[:2]:
        sections.append(_model_section(key, prefixes, metrics, figs, comp))
    sections += [(s, names, "") for s, names in explainer_sections(run_dir, metrics, figs, comp)]
    sections.append(_model_section(*MODEL_SECTIONS[2], metrics, figs, comp))
    parts, used = [], set()
    for section, names, extra in sections:
        section.figures = [f for f in section.figures if f not in used]
        if not section.figures and not any(section.tables) and not section.paragraphs \
                and not extra:
            continue
        body = render_section(section, _untrusted(metrics, names))
        parts.extend(body[:1] + [extra] + body[1:])  # the realism test under the editor's title
        used.update(section.figures)
    return parts, used


def _model_section(key: str, prefixes, metrics: dict, figs: list[Path], comp: dict):
    """The predictor's, the editor's (its realism test first) or the texture features' section."""
    block = {k: v for k, v in _dict(metrics.get(key)).items() if k != "evaluation"} \
        if key != "texture" else {}
    rows = scalar_rows(block)
    section = ReportSection(_title(key, comp), tables=[rows] if rows else [],
                            figures=[f for f in figs if f.name.startswith(prefixes)])
    return section, [], _realism_section(metrics) if key == "editor" else ""


def _components(metrics: dict) -> dict:
    """The config's component names: ``data``, ``predictor``, ``editor`` ("" where none)."""
    config = _dict(_dict(metrics.get("provenance")).get("config"))
    return {k: str(_dict(config.get(k)).get("name") or "") for k in ("data", "predictor", "editor")}


def _title(key: str, comp: dict) -> str:
    """A model section's title from the components the run used (never a component it did not)."""
    pred, editor = comp["predictor"] or "the predictor", comp["editor"]
    return {"predictor": f"Predictor accuracy: {pred}",
            "editor": f"Editor: {editor or 'none'}",
            "texture": f"Texture features of {pred} (after Ling et al. 2017)"}[key]


def explainer_sections(run_dir: Path, metrics: dict, figures: list[Path],
                       components: dict[str, str]) -> list[tuple[ReportSection, list[str]]]:
    """Each explainer of the run's ``explain`` block, built with its config parameters, asked for
    its section; sections sharing a title merged. Returns ``(section, explainer names)`` in the
    run's order. An explainer whose plugin is not installed here gets :func:`default_section`."""
    explain = metrics.get("explain") if isinstance(metrics.get("explain"), dict) else {}
    config = _dict(_dict(_dict(metrics.get("provenance")).get("config")).get("explain"))
    merged: dict[str, tuple[ReportSection, list[str]]] = {}
    cube = _cube(run_dir) if explain else None
    for name, block in explain.items():
        run = ReportInput(name=name, metrics=block if isinstance(block, dict) else {},
                          run_dir=run_dir, figures=figures, components=components,
                          run_metrics=metrics, cube=cube)
        exp = _build(name, config.get(name))
        section = exp.report_section(run) if exp is not None else default_section(run)
        if section is None:
            continue
        if section.title in merged:
            into, names = merged[section.title]
            into.paragraphs += section.paragraphs
            into.tables += section.tables
            into.figures = sorted({*into.figures, *section.figures}, key=lambda f: f.name)
            names.append(name)
        else:
            merged[section.title] = (section, [name])
    return list(merged.values())


def _cube(run_dir: Path):
    """The run's results cube, opened lazily; ``None`` where it has none or it does not open."""
    from mxplain.cube import open_results
    from mxplain.errors import UserError

    path = run_dir / "results.zarr"
    try:
        return open_results(path, verify=False) if path.exists() else None
    except (UserError, OSError, ValueError, KeyError):
        return None


def _build(name: str, params):
    """The run's explainer ``name`` with its config parameters; ``None`` where this mxplain
    cannot build it (its plugin not installed, parameters it no longer takes)."""
    from mxplain import plugins
    from mxplain.errors import UserError

    try:
        return plugins.get("explainer", name)(**(params if isinstance(params, dict) else {}))
    except (UserError, TypeError, ValueError):
        return None


def render_section(section: ReportSection, untrusted: str = "") -> list[str]:
    """A section's HTML parts: its title, the trust note (greyed body) where ``untrusted`` says
    why, paragraphs, tables (numbers rounded) and embedded figures."""
    parts = [f"<h2>{_e(section.title)}</h2>"]
    if untrusted:  # shown greyed, with the reason, never as advice (metrics.json trust)
        from mxplain.report_answers import gate_words

        parts.append(f"<p class='trust-note'>Untrusted: {_e(gate_words(untrusted))}</p>"
                     f"<div class='untrusted'>")
    parts.extend(f"<p>{_e(p)}</p>" for p in section.paragraphs)
    for rows in section.tables:
        if rows:
            parts.append("<div class='wide'><table class='numbers'>" + "".join(
                f"<tr><th>{_e(row[0])}</th>" + "".join(f"<td>{_e(_value(v))}</td>"
                                                       for v in row[1:]) + "</tr>"
                for row in rows) + "</table></div>")
    parts.extend(_figure(f) for f in section.figures)
    if untrusted:
        parts.append("</div>")
    return parts
