"""The report's trust section: the expert review (``metrics.json``'s ``review``, written by
``mxplain review --import``) per attribute, next to the automatic checks of the same edits already
in ``metrics.json``: the editor's realism (the critic's AUC on ±delta edits of that attribute), and
on data with an attribute measurement (synthetic lots) the share of edits the measurement sees
moving the requested way, beside the data's own generator (the ceiling). Where people and measures
agree, the attribute's explanations can be trusted as far as the editor goes."""

from __future__ import annotations

from mxplain.report_html import _dict, _e


def _f(x, digits: int = 2) -> str:
    return _e(f"{x:.{digits}f}") if isinstance(x, (int, float)) and not isinstance(x, bool) else "–"


def _ci(block: dict) -> str:
    lo, hi = (list(block.get("agreement_ci") or []) + [None, None])[:2]
    if lo is None or hi is None:
        return "–"
    return f"{_f(lo)} – {_f(hi)}"


def _review_cells(block: dict | None) -> str:
    if not block or not block.get("answers"):
        return "<td colspan='5'>no answers</td>"
    verdict = _e(block.get("verdict", "?"))
    return (f"<td>{_f(block.get('agreement'))} [{_ci(block)}]</td>"
            f"<td>{_e(block.get('agree'))} / {_e(block.get('agree', 0) + block.get('disagree', 0))}"
            f"</td><td>{_f(block.get('cant_tell_share'))}</td>"
            f"<td>{_f(block.get('kappa'))}</td><td class='verdict-{verdict}'>{verdict}</td>")


def _check_rows(metrics: dict, review: dict) -> list[str]:
    ev = _dict(_dict(metrics.get("editor")).get("evaluation"))
    by_attr = _dict(_dict(_dict(ev.get("realism")).get("edits")).get("by_attribute"))
    fid = _dict(_dict(ev.get("fidelity")).get("attributes"))
    ceil = _dict(_dict(ev.get("fidelity_ceiling")).get("attributes"))
    probe = _dict(_dict(metrics.get("trust")).get("attributes"))
    names = list(_dict(review.get("attributes"))) or list(fid) or list(by_attr) or list(probe)
    rows = []
    for a in names:
        share = _dict(fid.get(a)).get("direction_share")
        top = _dict(ceil.get(a)).get("direction_share")
        rows.append(f"<tr><th>{_e(a)}</th><td>{_f(by_attr.get(a))}</td>"
                    f"<td>{_f(share)}{' (ceiling ' + _f(top) + ')' if top is not None else ''}"
                    f"</td>{_gate_cells(metrics, a)}"
                    f"{_review_cells(_dict(review.get('attributes')).get(a))}</tr>")
    if review.get("pooled"):
        edits = _dict(_dict(ev.get("realism")).get("edits")).get("auc")
        rows.append(f"<tr><th>all attributes</th><td>{_f(edits)}</td>"
                    f"<td>{_f(_dict(ev.get('fidelity')).get('mean_direction_share'))}</td>"
                    "<td colspan='5'></td>"
                    f"{_review_cells(review['pooled'])}</tr>")
    return rows


def _reviewer_rows(review: dict) -> str:
    rows = []
    for name, block in _dict(review.get("per_reviewer")).items():
        rows.append(f"<tr><th>{_e(name)}</th><td>{_e(block.get('answers'))}</td>"
                    f"<td>{_f(block.get('agreement'))} [{_ci(block)}]</td>"
                    f"<td>{_f(block.get('cant_tell_share'))}</td>"
                    f"<td>{_f(block.get('median_seconds'), 1)}</td>"
                    f"<td>{_e(block.get('verdict', '?'))}</td></tr>")
    if not rows:
        return ""
    return ("<div class='wide'><table><tr><th>reviewer</th><th>answers</th><th>agreement "
            "[95 %]</th><th>can't tell</th><th>median s per pair</th><th>verdict</th></tr>" +
            "".join(rows) + "</table></div>")


def _verdict(v) -> str:
    v = str(v or "–")
    return f"<td class='verdict-{_e(v)}'>{_e(v)}</td>"


def _value(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{_e(k)} {_f(x) if isinstance(x, (int, float)) else _e(x)}"
                         for k, x in v.items())
    return _f(v)


def gates_section(metrics: dict) -> str:
    """The trust gates (``metrics.json``'s ``trust``, :mod:`mxplain.trust`): the run's verdict,
    then one row per gate: value, verdict, thresholds, reason ("" where the run has none)."""
    t = _dict(metrics.get("trust"))
    if not t.get("gates"):
        return ""
    rows = []
    for name, g in _dict(t.get("gates")).items():
        thr = g.get("threshold")
        thr = (f"pass {_e(thr.get('pass'))}; warn {_e(thr.get('warn'))}" if isinstance(thr, dict)
               else _e(thr))
        rows.append(f"<tr><th>{_e(name)}</th><td>{_value(g.get('value'))}</td>"
                    f"{_verdict(g.get('verdict'))}<td>{thr}</td><td>{_e(g.get('reason') or '')}</td>"
                    f"</tr>")
    expl = ", ".join(f"{_e(k)}: {_e(_dict(v).get('trust'))}"
                     for k, v in _dict(t.get("explanations")).items())
    verdict = _e(t.get("verdict"))
    return (f"<h2>Trust gates</h2><p class='trust-{verdict}'><b>Run verdict: {verdict}</b>"
            f"{' (explanations: ' + expl + ')' if expl else ''}. Checks that need no ground "
            f"truth; an explanation with a failing gate is untrusted and its numbers below are "
            f"greyed (docs/concepts.md, \"Trust gates\").</p>"
            "<div class='wide'><table><tr><th>gate</th><th>value</th><th>verdict</th>"
            f"<th>thresholds</th><th>reason</th></tr>{''.join(rows)}</table></div>")


def _gate_cells(metrics: dict, a: str) -> str:
    """Per attribute: the probe's held-out rho, its direction share and verdict, the measured
    verdict (synthetic lots: >= 0.9 x ceiling), the attribute's trust."""
    t = _dict(metrics.get("trust"))
    p = _dict(_dict(_dict(_dict(t.get("gates")).get("attribute_probe")).get("attributes")).get(a))
    meas = _dict(_dict(t.get("measurement")).get(a)).get("verdict")
    level = _dict(_dict(t.get("attributes")).get(a)).get("trust")
    ci = p.get("effect_ratio_ci")
    ratio = _f(p.get("effect_ratio")) + (f" [{_f(ci[0])}, {_f(ci[1])}]" if isinstance(
        ci, (list, tuple)) and len(ci) == 2 else "")
    return (f"<td>{_f(p.get('heldout_spearman'))}</td><td>{_f(p.get('value'))}</td>"
            f"<td>{ratio}</td>{_verdict(p.get('verdict') if p else None)}{_verdict(meas)}"
            f"<td class='trust-{_e(level)}'>{_e(level or '–')}</td>")


def trust_section(metrics: dict) -> str:
    """The section's HTML ("" where the run has neither an editor evaluation nor a review): the
    trust gates first (:func:`gates_section`), then per attribute the automatic checks and the
    expert review."""
    review = _dict(metrics.get("review"))
    ev = _dict(_dict(metrics.get("editor")).get("evaluation"))
    if not review and not ev:
        return gates_section(metrics)
    rec = _dict(_dict(ev.get("realism")).get("reconstruction")).get("auc")
    shift = _dict(ev.get("reconstruction_prediction_shift")).get("mean_abs_percent")
    head = ("<tr><th>attribute</th><th>realism: critic AUC of its edits (0.5 = like real)</th>"
            "<th>measurement: edits moving the requested way</th>"
            "<th>probe: held-out Spearman</th><th>probe: edits moving the requested way</th>"
            "<th>probe: effect of an edit over a real lot difference [95 %]</th>"
            "<th>probe verdict</th><th>measured verdict (≥ 0.9 × ceiling)</th><th>trust</th>"
            "<th>reviewers: agreement [Wilson 95 %]</th><th>agree / decided</th>"
            "<th>can't tell</th><th>Fleiss' kappa</th><th>review verdict</th></tr>")
    note = ("<p>No expert review imported yet: write the page with <code>mxplain review RUN</code>"
            ", send it to reviewers, import their answers with <code>mxplain review RUN --import "
            "FILE…</code>.</p>" if not review else
            f"<p>{_e(review.get('pooled', {}).get('answers', 0))} answers of "
            f"{_e(len(review.get('reviewers', [])))} reviewer(s). Agreement: the share of decided "
            f"answers naming the tile the editor was asked to give more of the attribute (0.5 = "
            f"chance); verdict pass where the interval lies above 0.5, fail below, warn "
            f"otherwise.</p>")
    return (gates_section(metrics) + "<h2>Trust: expert review and automatic checks</h2>" + note +
            f"<p>Realism of reconstructions: critic AUC {_f(rec) if rec is not None else 'not run'}"
            f"; predictor shift on reconstructions "
            f"{_f(shift, 2) + ' % (mean |Δ|)' if shift is not None else 'not measured'}.</p>"
            f"<div class='wide'><table>{head}" +
            "".join(_check_rows(metrics, review)) + "</table></div>" + _reviewer_rows(review))
