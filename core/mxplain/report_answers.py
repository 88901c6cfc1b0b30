"""The report's first section, the answers a materials scientist reads first (issue 19 item 3):
per attribute and per lot, which way each attribute moves the property and by how much (the
forward sensitivity in the property's units per unit attribute, with its bootstrap interval and
sign stability), and what change of the attributes reaches a target (backward counterfactuals,
over converged tiles only; a lot where none converged says so and shows no numbers). Answers the
trust gates fail (``metrics.json``'s ``trust``) are greyed (CSS class ``untrusted``), those a
gate warns on orange (``trust-caution``), each with the reason. Also the number formatting
shared by the report: 3 significant digits, units."""

from __future__ import annotations

import math
from pathlib import Path

from mxplain.errors import UserError
from mxplain.report_html import _e, sig  # noqa: F401 (sig: the answers' rounding)

#: the cube variables the answers read (loaded alone: a cube's pixel maps are not needed)
ANSWER_VARIABLES = ("tile_mask", "prediction", "reconstruction_prediction", "lot_attributes",
                    "measured_property", "sensitivity", "sensitivity_ci",
                    "sensitivity_sign_stability", "true_sensitivity", "backward_reached_share",
                    "backward_mean_change", "backward_change_ci", "backward_target",
                    "backward_converged", "backward_reachable")
#: gate names in the reasons, in words (the machine names stay in the trust section)
GATE_WORDS = {"editor_realism": "editor realism", "reconstruction_shift": "reconstruction shift",
              "attribute_probe": "independent attribute probe", "editor_health": "editor health",
              "backward_convergence": "backward convergence"}


def _esc(x) -> str:
    return _e(x)


def percent(share) -> str:
    """A share in [0, 1] as a whole percent (``97 %``); ``–`` for none or NaN."""
    ok = isinstance(share, (int, float)) and not isinstance(share, bool) and math.isfinite(share)
    return f"{round(100 * share)} %" if ok else "–"


def with_units(x, units: str, signed: bool = False) -> str:
    s = sig(x, signed=signed)
    return f"{s} {units}" if units and s != "–" else s


def interval(lo, hi) -> str:
    return f"[{sig(lo)}, {sig(hi)}]" if all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi)) else ""


def gate_words(text: str) -> str:
    for name, words in GATE_WORDS.items():
        text = text.replace(name, words)
    return text


def attribute_trust(metrics: dict, explainer: str, attribute: str) -> tuple[str, str]:
    """``(trust, reason)`` of one explainer's answers on one attribute from ``metrics.json``'s
    ``trust`` (``("", "")`` where the run has no verdict for it)."""
    t = metrics.get("trust") if isinstance(metrics.get("trust"), dict) else {}
    block = (t.get("explanations") or {}).get(explainer) or {}
    per = (block.get("attributes") or {}).get(attribute) or {}
    level = per.get("trust") or ""
    reasons = [gate_words(str(r)) for r in per.get("reasons") or []]
    return str(level), "; ".join(reasons)


def gates_not_passed(metrics: dict, explainer: str, attribute: str) -> list[str]:
    """The gates, in words and in order, behind one explainer's trust on one attribute."""
    t = metrics.get("trust") if isinstance(metrics.get("trust"), dict) else {}
    per = ((((t.get("explanations") or {}).get(explainer) or {}).get("attributes") or {})
           .get(attribute) or {})
    names = [str(r).split(":", 1)[0] for r in per.get("reasons") or []]
    return [GATE_WORDS.get(n, n) for n in dict.fromkeys(names)]


def property_units(metrics: dict, cube=None) -> str:
    data = metrics.get("data") if isinstance(metrics.get("data"), dict) else {}
    units = data.get("units") or (cube.attrs.get("property_units") if cube is not None else "")
    return str(units or "")


def property_name(metrics: dict, cube=None) -> str:
    data = metrics.get("data") if isinstance(metrics.get("data"), dict) else {}
    name = data.get("property") or (cube.attrs.get("property_name") if cube is not None else "")
    return str(name or "the property")


def load_cube(run_dir: Path):
    """The answers' variables of the run's cube (None: no cube, or one that does not open; a
    damaged cube, digest mismatch, is a :class:`UserError`)."""
    from mxplain.cube import open_results

    if not (run_dir / "results.zarr").exists():
        return None
    try:
        cube = open_results(run_dir)
    except UserError:
        raise
    except Exception:  # a report still renders without the cube
        return None
    cube = cube[[v for v in ANSWER_VARIABLES + ("backward_attributes",) if v in cube]].load()
    return _backward_fallback(cube)


def _backward_fallback(cube):
    """A cube written before the lot statistics (no ``backward_mean_change``): the mean change
    and reached share over converged tiles, computed here the same way."""
    import numpy as np

    if "backward_mean_change" in cube or "backward_attributes" not in cube or \
            "backward_converged" not in cube:
        return cube
    mask = cube["tile_mask"] & cube["backward_converged"]
    change = (cube["backward_attributes"] - cube["lot_attributes"]).where(mask)
    n = cube["tile_mask"].sum("tile")
    cube["backward_reached_share"] = (mask.sum("tile") / n.where(n > 0)).fillna(0.0)
    with np.errstate(all="ignore"):
        cube["backward_mean_change"] = change.mean("tile").fillna(0.0)
    return cube.drop_vars(["backward_attributes"])


#: the CSS class of an answer by its trust level: greyed (a gate failed) or orange (one warned)
MARK = {"untrusted": "untrusted", "caution": "trust-caution"}
#: the words before an answer sentence by its trust level
PREFIX = {"untrusted": "Untrusted, not advice", "caution": "Caution, not confirmed"}


def _cell(text: str, level: str, reason: str) -> str:
    if level in MARK:
        return (f"<td class='{MARK[level]}' title='{_esc(level + ': ' + reason)}'>{_esc(text)}"
                f"</td>")
    return f"<td>{_esc(text)}</td>"


def _slope_rows(cube, metrics: dict, units: str) -> tuple[list[str], list[str]]:
    """Per attribute over the lots: the median effect, how many lots' intervals exclude 0 on
    either side, the median sign stability; and the plain-words sentences."""
    import numpy as np

    s = np.asarray(cube["sensitivity"].values, np.float64)
    ci = np.asarray(cube["sensitivity_ci"].values, np.float64) if "sensitivity_ci" in cube \
        else None
    st = np.asarray(cube["sensitivity_sign_stability"].values, np.float64) \
        if "sensitivity_sign_stability" in cube else None
    rows, words = [], []
    prop = property_name(metrics, cube)
    for k, a in enumerate(str(x) for x in cube["attribute"].values):
        col = s[:, k][np.isfinite(s[:, k])]
        med = float(np.median(col)) if col.size else float("nan")
        if ci is not None:
            up = int(np.sum(ci[:, k, 0] > 0))
            down = int(np.sum(ci[:, k, 1] < 0))
            lots = f"{up} up, {down} down, {len(s) - up - down} unclear (of {len(s)})"
        else:
            up = int(np.sum(s[:, k] > 0))
            down = int(np.sum(s[:, k] < 0))
            lots = f"{up} up, {down} down (of {len(s)}; no intervals: the sign of the slope)"
        stab = percent(float(np.nanmedian(st[:, k]))) if st is not None else "–"
        level, reason = attribute_trust(metrics, "forward", a)
        way = "raises" if med > 0 else "lowers" if med < 0 else "does not move"
        cls = f" class='{MARK[level]}'" if level in MARK else ""
        rows.append(f"<tr{cls}><th>{_esc(a)}</th><td>{_esc(with_units(med, units, True))}</td>"
                    f"<td>{_esc(lots)}</td><td>{_esc(stab)}</td>"
                    f"<td>{_esc(level or 'not gated')}</td></tr>")
        sentence = (f"{a} {way} {prop}: median {with_units(med, units, True)} per unit {a} "
                    f"(0 → 1 spans the labels' range); lots: {lots}.")
        title = ""
        if level in PREFIX:
            names = ", ".join(gates_not_passed(metrics, "forward", a))
            sentence = f"{PREFIX[level]} (not passed: {names}; hover for why): " + sentence
            title = f" title='{_esc(reason)}'"
        words.append(f"<li{cls}{title}>{_esc(sentence)}</li>")
    return rows, words


def _lot_rows(cube, metrics: dict, units: str) -> list[str]:
    """One row per lot: measured, predicted (tile mean and spread), then per attribute its
    effect with the interval and sign stability."""
    import numpy as np

    attrs = [str(x) for x in cube["attribute"].values]
    rows = []
    for i, lot in enumerate(str(x) for x in cube["lot"].values):
        c = cube.isel(lot=i)
        mask = np.asarray(c["tile_mask"].values, bool)
        pred = np.asarray(c["prediction"].values, np.float64)[mask]
        cells = [f"<th>{_esc(lot)}</th>",
                 f"<td>{_esc(with_units(float(c['measured_property']), units))}</td>",
                 f"<td>{_esc(with_units(float(pred.mean()) if pred.size else None, units))} "
                 f"(SD {_esc(sig(float(pred.std()) if pred.size else None))}, "
                 f"{int(mask.sum())} tiles)</td>"]
        for k, a in enumerate(attrs):
            text = _estimate(c, "sensitivity", "sensitivity_ci", k)
            if "sensitivity_sign_stability" in c:
                text += f", sign {percent(float(c['sensitivity_sign_stability'].values[k]))}"
            cells.append(_cell(text, *attribute_trust(metrics, "forward", a)))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return rows


def _estimate(c, name: str, ci_name: str, k: int) -> str:
    """Attribute ``k``'s estimate ``name`` of one lot's cube, signed, with its interval
    ``ci_name`` where the cube has one."""
    import numpy as np

    text = sig(float(c[name].values[k]), signed=True)
    if ci_name in c:
        text += " " + interval(*np.asarray(c[ci_name].values[k], np.float64))
    return text


def forward_answers(cube, metrics: dict) -> str:
    if cube is None or "sensitivity" not in cube:
        return ""
    units = property_units(metrics, cube)
    per = f"{units} per unit attribute" if units else "property units per unit attribute"
    rows, words = _slope_rows(cube, metrics, units)
    attrs = [str(x) for x in cube["attribute"].values]
    ci_note = ("95 % bootstrap interval over the lot's tiles in brackets; sign: the share of "
               "bootstrap draws with the effect's sign" if "sensitivity_ci" in cube else
               "no bootstrap intervals in this run (n_boot = 0)")
    head = "".join(f"<th>{_esc(a)}</th>" for a in attrs)
    return (f"<h3>Which attributes move {_esc(property_name(metrics, cube))}, which way, how "
            f"much</h3><ul class='answers'>{''.join(words)}</ul>"
            "<div class='wide'><table><tr><th>attribute</th><th>median effect over lots (per "
            "unit attribute)</th><th>lots whose interval is above / below 0</th><th>median "
            "sign stability</th><th>trust</th></tr>" + "".join(rows) + "</table></div>"
            f"<h3>Per lot: effect of each attribute ({_esc(per)})</h3><p>{_esc(ci_note)}.</p>"
            "<div class='wide'><table><tr><th>lot</th><th>measured</th><th>predicted (tile mean)"
            f"</th>{head}</tr>" + "".join(_lot_rows(cube, metrics, units)) + "</table></div>")


def _none_row(lot: str, shown: str, attrs, why: str) -> str:
    return (f"{lot}<td>{_esc(shown)}</td><td colspan='{len(attrs) + 1}' class='none'>"
            f"{_esc(why)}: no advice for this lot and direction</td>")


def _backward_row(cube, i: int, d: int, attrs, metrics: dict, units: str) -> str:
    """One lot and direction over its counterfactuals: reached ones of reachable targets only
    (``backward_reachable``; a target within the tolerance of the start is met by A′ = A and
    is no counterfactual, though the cube counts it as converged)."""
    import numpy as np

    c = cube.isel(lot=i, direction=d)
    direction = str(cube["direction"].values[d])
    mask = np.asarray(c["tile_mask"].values, bool)
    share = float(c["backward_reached_share"]) if "backward_reached_share" in c else float("nan")
    conv = np.asarray(c["backward_converged"].values, bool) & mask \
        if "backward_converged" in c else mask
    reach = np.asarray(c["backward_reachable"].values, bool) & mask \
        if "backward_reachable" in c else mask
    ok, n, n_reach = conv & reach, int(mask.sum()), int(reach.sum())
    start = "reconstruction_prediction" if "reconstruction_prediction" in c else "prediction"
    lot = f"<th>{_esc(cube['lot'].values[i])}</th><td>{_esc(direction)}</td>"
    if n and not n_reach:
        return _none_row(lot, f"no reachable target of {n}", attrs,
                         "every target lay within the tolerance of the start (A′ = A meets it: "
                         "the edits barely move the prediction), so there is no counterfactual")
    if not share > 0 or not ok.any():
        return _none_row(lot, f"0 of {n_reach}", attrs, "no counterfactual reached its target")
    step = np.asarray(c["backward_target"].values, np.float64)[ok] - \
        np.asarray(c[start].values, np.float64)[ok] if "backward_target" in c else None
    reached = f"{percent(ok.sum() / n_reach)} of {n_reach}" + (
        f" reachable ({n - n_reach} unreachable)" if n_reach < n else "")
    cells = [lot, f"<td>{_esc(reached)}</td>",
             f"<td>{_esc(with_units(float(np.mean(step)) if step is not None else None, units, True))}"
             f"</td>"]
    exact = n_reach == n or "backward_attributes" not in c
    change = None if exact else np.asarray(c["backward_attributes"].values, np.float64)[ok] - \
        np.asarray(c["lot_attributes"].values, np.float64)[None]
    for k, a in enumerate(attrs):
        text = _estimate(c, "backward_mean_change", "backward_change_ci", k) if exact else \
            f"{sig(float(change[:, k].mean()), signed=True)} (reachable tiles; no interval)"
        cells.append(_cell(text, *attribute_trust(metrics, "backward", a)))
    return "".join(cells)


def backward_answers(cube, metrics: dict) -> str:
    """What change of the attributes reaches a target, per lot and direction (converged tiles
    only; a lot and direction where none converged: said so, no numbers)."""
    if cube is None or "backward_mean_change" not in cube:
        return ""
    units = property_units(metrics, cube)
    attrs = [str(x) for x in cube["attribute"].values]
    rows = [f"<tr>{_backward_row(cube, i, d, attrs, metrics, units)}</tr>"
            for i in range(cube.sizes["lot"]) for d in range(cube.sizes["direction"])]
    head = "".join(f"<th>{_esc(a)}</th>" for a in attrs)
    return ("<h3>What change reaches a target (backward counterfactuals)</h3><p>Mean change "
            "A′ − A of the attribute labels (0 to 1 scale) over the tiles whose counterfactual "
            "reached its target, with its 95 % bootstrap interval where computed; tiles that "
            "missed their target enter no average.</p><div class='wide'><table><tr><th>lot</th>"
            "<th>direction</th><th>tiles reached</th><th>mean requested change of "
            f"{_esc(property_name(metrics, cube))}</th>{head}</tr>" + "".join(rows) +
            "</table></div>")


def predictions_only(cube, metrics: dict) -> str:
    """Without attribute explanations: per lot the measured and predicted property."""
    import numpy as np

    if "prediction" not in cube or "tile_mask" not in cube:
        return ""
    units = property_units(metrics, cube)
    rows = []
    for i, lot in enumerate(str(x) for x in cube["lot"].values):
        mask = np.asarray(cube["tile_mask"].values[i], bool)
        pred = np.asarray(cube["prediction"].values[i], np.float64)[mask]
        measured = float(cube["measured_property"].values[i]) if "measured_property" in cube \
            else None
        rows.append(f"<tr><th>{_esc(lot)}</th><td>{_esc(with_units(measured, units))}</td>"
                    f"<td>{_esc(with_units(float(pred.mean()) if pred.size else None, units))}"
                    f" (SD {_esc(sig(float(pred.std()) if pred.size else None))}, "
                    f"{int(mask.sum())} tiles)</td></tr>")
    return ("<p>No attribute explanations in this run ([explain.forward] and [explain.backward] "
            "did not run): which attributes move the property is not answered.</p>"
            "<h3>Per lot: measured and predicted</h3><div class='wide'><table><tr><th>lot</th>"
            "<th>measured</th><th>predicted (tile mean)</th></tr>" + "".join(rows) +
            "</table></div>")


def answers_section(run_dir: Path, metrics: dict) -> str:
    """The report's first section ("" where the run has no cube with explanations)."""
    cube = load_cube(Path(run_dir))
    if cube is None:
        return ""
    body = forward_answers(cube, metrics) + backward_answers(cube, metrics)
    if not body:
        body = predictions_only(cube, metrics)
    if not body:
        return ""
    verdict = (metrics.get("trust") or {}).get("verdict") if isinstance(
        metrics.get("trust"), dict) else None
    note = ""
    if verdict and verdict != "trusted":
        note = (f"<p class='trust-note'>Run trust verdict: {_esc(verdict)}. Greyed numbers "
                f"are untrusted (a quality gate failed), orange ones unconfirmed (a gate "
                f"warned: it could not check them or they are borderline); hover for the "
                f"reason. Neither is advice: they are shown as evidence. The gates are in the "
                f"next section.</p>")
    return "<h2>Answers</h2>" + note + body
