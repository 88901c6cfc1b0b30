"""The report's trust section: the expert review (``metrics.json``'s ``review``, written by
``mxplain review --import``) per attribute, next to the automatic checks of the same edits already
in ``metrics.json``: the editor's realism (the critic's AUC on ±delta edits of that attribute), and
on data with an attribute measurement (synthetic lots) the share of edits the measurement sees
moving the requested way, beside the data's own generator (the ceiling). Where people and measures
agree, the attribute's explanations can be trusted as far as the editor goes."""

from __future__ import annotations

from mxplain.report import _dict, _e


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
    names = list(_dict(review.get("attributes"))) or list(fid) or list(by_attr)
    rows = []
    for a in names:
        share = _dict(fid.get(a)).get("direction_share")
        top = _dict(ceil.get(a)).get("direction_share")
        rows.append(f"<tr><th>{_e(a)}</th><td>{_f(by_attr.get(a))}</td>"
                    f"<td>{_f(share)}{' (ceiling ' + _f(top) + ')' if top is not None else ''}"
                    f"</td>{_review_cells(_dict(review.get('attributes')).get(a))}</tr>")
    if review.get("pooled"):
        edits = _dict(_dict(ev.get("realism")).get("edits")).get("auc")
        rows.append(f"<tr><th>all attributes</th><td>{_f(edits)}</td>"
                    f"<td>{_f(_dict(ev.get('fidelity')).get('mean_direction_share'))}</td>"
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
    return ("<table><tr><th>reviewer</th><th>answers</th><th>agreement [95 %]</th>"
            "<th>can't tell</th><th>median s per pair</th><th>verdict</th></tr>" +
            "".join(rows) + "</table>")


def trust_section(metrics: dict) -> str:
    """The section's HTML ("" where the run has neither an editor evaluation nor a review)."""
    review = _dict(metrics.get("review"))
    ev = _dict(_dict(metrics.get("editor")).get("evaluation"))
    if not review and not ev:
        return ""
    rec = _dict(_dict(ev.get("realism")).get("reconstruction")).get("auc")
    shift = _dict(ev.get("reconstruction_prediction_shift")).get("mean_abs_percent")
    head = ("<tr><th>attribute</th><th>realism: critic AUC of its edits (0.5 = like real)</th>"
            "<th>measurement: edits moving the requested way</th>"
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
    return ("<h2>Trust: expert review and automatic checks</h2>" + note +
            f"<p>Realism of reconstructions: critic AUC {_f(rec) if rec is not None else 'not run'}"
            f"; predictor shift on reconstructions "
            f"{_f(shift, 2) + ' % (mean |Δ|)' if shift is not None else 'not measured'}.</p>"
            f"<table>{head}" +
            "".join(_check_rows(metrics, review)) + "</table>" + _reviewer_rows(review))
