"""Trust gates: checks of a run's explanations that need no ground truth (SPEC "Trust").

Every run with an editor computes, after its explainers (:func:`trust_gates`), ``metrics.json``'s
``trust`` section: each gate with its ``value``, ``verdict`` (``pass`` / ``warn`` / ``fail``), the
``threshold`` it was judged by and a ``reason`` in words, per attribute where the gate has one:

``editor_realism``        the critic AUCs of the realism test (:mod:`mxplain.realism`): the
                          reconstructions' and, per attribute, that attribute's edits'; lower is
                          better (0.5: indistinguishable from real tiles);
``reconstruction_shift``  the predictor's mean absolute shift on the editor's reconstructions at the
                          lot's own attributes, in percent of its prediction on the tile;
``attribute_probe``       per attribute, the share of the editor's +/-delta edits that the
                          independent probe (:mod:`mxplain.probe`) sees moving the requested way
                          over the probe's own resolution (the share of real tile pairs one edit
                          apart that it orders right: its ceiling, as the data's own generator is
                          the synthetic measurement's), and their effect ratio (how far they move
                          its reading, over how far a real lot difference of delta does): the worse
                          of the two; an attribute the probe cannot see (resolution below
                          ``probe_min_resolution`` or held-out Spearman below
                          ``probe_min_spearman``) is ``warn`` with ``judged = false``;
``editor_health``         the editor's own training losses against its plugin's known failure
                          signs (:meth:`mxplain.interfaces.Editor.health`);
``backward_convergence``  the lowest reached share of reachable counterfactual targets over the
                          directions (``explain.backward.reached_share``), where backward ran.

Each attribute gets the worst verdict of the gates that concern it (realism of its edits, the
probe's verdict on it, and the editor-wide realism of reconstructions, shift and health):
``trusted`` (all pass), ``caution`` (a warn) or ``untrusted`` (a fail). Each explanation that
edits through the editor gets per attribute the same, backward's also its convergence gate; the
run's ``verdict`` is the worst of them. The cube carries it (attribute ``trust_verdict``, variable
``trust_attribute_verdict``), and the report shows the gates first and greys untrusted numbers.
Thresholds: the ``[trust]`` table (:data:`TRUST_DEFAULTS`), checked when the config is resolved.
"""

from __future__ import annotations

import math
from typing import Any

from mxplain.errors import UserError

VERDICTS = ("pass", "warn", "fail")
TRUST_LEVELS = {"pass": "trusted", "warn": "caution", "fail": "untrusted"}

TRUST_DEFAULTS: dict[str, Any] = {
    "realism_auc_pass": 0.70, "realism_auc_warn": 0.85,
    "shift_percent_pass": 1.5, "shift_percent_warn": 5.0,
    "probe_share_ratio_pass": 0.9, "probe_share_ratio_warn": 0.75,
    "probe_effect_pass": 0.5, "probe_effect_warn": 0.33,
    "reached_share_pass": 0.9, "reached_share_warn": 0.6,
    "probe_min_resolution": 0.6, "probe_min_spearman": 0.0, "probe_tiles": 24,
}
#: keys of earlier releases, refused with what replaced them
RENAMED = {"probe_share_pass": "probe_share_ratio_pass (now the share over the probe's resolution; "
                               "default 0.9)",
           "probe_share_warn": "probe_share_ratio_warn (now the share over the probe's resolution; "
                               "default 0.75)"}
TRUST_DOC = {
    "realism_auc_pass": "editor realism gate: pass where the critic AUC (reconstructions; each "
                        "attribute's edits) is at most this (0.5: like real tiles)",
    "realism_auc_warn": "editor realism gate: warn up to this AUC, fail above",
    "shift_percent_pass": "reconstruction shift gate: pass where the predictor moves at most this "
                          "many percent (mean absolute shift) on the editor's reconstructions",
    "shift_percent_warn": "reconstruction shift gate: warn up to this percent, fail above",
    "probe_share_ratio_pass": "attribute probe gate: pass where the share of an attribute's "
                              "±0.35 edits that move the independent probe's reading the requested "
                              "way is at least this fraction of the probe's resolution (the share "
                              "of real tile pairs 0.35 apart in that attribute it orders right)",
    "probe_share_ratio_warn": "attribute probe gate: warn down to this fraction, fail below",
    "probe_effect_pass": "attribute probe gate: pass where an attribute's ±0.35 edits move the "
                         "probe's reading by at least this fraction of what a real lot difference "
                         "of 0.35 moves it (the effect ratio: the mean change per unit requested "
                         "over the probe's held-out calibration slope; 1: like real lots)",
    "probe_effect_warn": "attribute probe gate: warn down to this effect ratio, fail below (both "
                         "the share and the ratio must pass)",
    "reached_share_pass": "backward convergence gate: pass where at least this share of "
                          "reachable counterfactual targets was reached (in each direction)",
    "reached_share_warn": "backward convergence gate: warn down to this share, fail below",
    "probe_min_resolution": "the probe judges an attribute only where its resolution (the share "
                            "of real tile pairs from different lots, 0.35 apart in that attribute, "
                            "whose order its leave-lots-out predictions get right; 0.5: chance) "
                            "reaches this; otherwise that attribute's probe verdict is warn (the "
                            "probe cannot see it)",
    "probe_min_spearman": "the probe judges an attribute only where its leave-lots-out Spearman "
                          "against the lot labels (tiles) also reaches this",
    "probe_tiles": "real tiles per lot the attribute probe is trained on (0: no probe)",
}
#: (gate, key prefix, higher is better, lowest and highest allowed threshold)
_PAIRS = (("editor_realism", "realism_auc", False, 0.0, 1.0),
          ("reconstruction_shift", "shift_percent", False, 0.0, math.inf),
          ("attribute_probe", "probe_share_ratio", True, 0.0, 2.0),
          ("attribute_probe", "probe_effect", True, 0.0, 10.0),
          ("backward_convergence", "reached_share", True, 0.0, 1.0))


def _number(key: str, value, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise UserError(f"[trust] {key} = {value!r}: needs a number in [{lo:g}, {hi:g}]")
    return float(value)


def resolve_trust(raw: dict | None, where: str = "config") -> dict:
    """The ``[trust]`` table with defaults filled in; a :class:`UserError` for an unknown key, a
    value of the wrong type or range, or a pass threshold on the wrong side of its warn one."""
    import difflib

    raw = dict(raw or {})
    for key in raw:
        if key in RENAMED:
            raise UserError(f"{where}: [trust] {key} was renamed: use {RENAMED[key]}")
        if key not in TRUST_DEFAULTS:
            hint = difflib.get_close_matches(key, list(TRUST_DEFAULTS), n=1)
            raise UserError(f"{where}: unknown key {key!r} in [trust]"
                            + (f"; did you mean {hint[0]!r}?" if hint else ""))
    out = {**TRUST_DEFAULTS, **raw}
    try:
        for _gate, prefix, higher, lo, hi in _PAIRS:
            p = _number(f"{prefix}_pass", out[f"{prefix}_pass"], lo, hi)
            w = _number(f"{prefix}_warn", out[f"{prefix}_warn"], lo, hi)
            if (higher and w > p) or (not higher and w < p):
                raise UserError(f"[trust] {prefix}_warn = {w:g} must be {'<=' if higher else '>='}"
                                f" {prefix}_pass = {p:g} ({'higher' if higher else 'lower'} "
                                f"is better)")
        _number("probe_min_spearman", out["probe_min_spearman"], -1.0, 1.0)
        _number("probe_min_resolution", out["probe_min_resolution"], 0.0, 1.0)
        tiles = out["probe_tiles"]
        if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 0:
            raise UserError(f"[trust] probe_tiles = {tiles!r}: needs an integer >= 0")
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    return out


def verdict(value, pass_at: float, warn_at: float, higher_better: bool) -> str:
    """``pass`` / ``warn`` / ``fail`` of ``value`` against two thresholds (inclusive); a missing
    or NaN value is ``warn`` (nothing to judge by)."""
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "warn"
    if higher_better:
        return "pass" if value >= pass_at else "warn" if value >= warn_at else "fail"
    return "pass" if value <= pass_at else "warn" if value <= warn_at else "fail"


def worst(verdicts) -> str:
    """The worst of ``verdicts`` (``pass`` for none)."""
    vs = [v for v in verdicts if v in VERDICTS]
    return max(vs, key=VERDICTS.index) if vs else "pass"


def _threshold(cfg: dict, prefix: str, higher: bool) -> dict:
    op = ">=" if higher else "<="
    return {"pass": f"{op} {cfg[prefix + '_pass']:g}", "warn": f"{op} {cfg[prefix + '_warn']:g}"}


def _judge(value, cfg: dict, prefix: str, higher: bool, what: str, fmt: str = "{:.2f}") -> dict:
    v = verdict(value, cfg[prefix + "_pass"], cfg[prefix + "_warn"], higher)
    thr = _threshold(cfg, prefix, higher)
    if not (isinstance(value, (int, float)) and math.isfinite(value)):
        return {"value": value, "verdict": v, "threshold": thr,
                "reason": f"{what}: not measured, nothing to judge by"}
    reason = (f"{what} {fmt.format(value)}: " + ("within" if v == "pass" else "outside") +
              f" the pass threshold ({thr['pass']})" + ("" if v != "fail" else f", beyond warn "
                                                        f"({thr['warn']})"))
    return {"value": value, "verdict": v, "threshold": thr, "reason": reason}


def _get(d, *keys):
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def realism_gate(ev: dict, cfg: dict) -> dict | None:
    """Critic AUCs of reconstructions and of each attribute's edits (None: realism not run)."""
    real = _get(ev, "realism")
    if not isinstance(real, dict) or "skipped" in real:
        return None
    rec = _get(real, "reconstruction", "auc")
    edits = _get(real, "edits", "auc")
    gate = _judge(max(x for x in (rec, edits, -1.0) if isinstance(x, (int, float))
                      and math.isfinite(x)) if rec is not None or edits is not None else None,
                  cfg, "realism_auc", False, "worst critic AUC (reconstructions, edits)")
    gate["value"] = {"reconstruction": rec, "edits": edits}
    gate["parts"] = {"reconstruction": _judge(rec, cfg, "realism_auc", False,
                                              "critic AUC of reconstructions")}
    gate["attributes"] = {a: _judge(auc, cfg, "realism_auc", False, f"critic AUC of {a} edits")
                          for a, auc in (_get(real, "edits", "by_attribute") or {}).items()}
    return gate


def shift_gate(ev: dict, cfg: dict) -> dict | None:
    shift = _get(ev, "reconstruction_prediction_shift", "mean_abs_percent")
    if shift is None:
        return None
    return _judge(shift, cfg, "shift_percent", False,
                  "predictor shift on reconstructions (mean |Δ|, %)", "{:.2f} %")


def _probe_sees(a: str, block: dict, cfg: dict) -> str | None:
    """Why the probe cannot judge attribute ``a`` (``None``: it can): its resolution below
    ``probe_min_resolution`` or its held-out tile Spearman below ``probe_min_spearman``."""
    res, rho = block.get("resolution"), block.get("heldout_spearman")
    for name, v, key in (("resolution", res, "probe_min_resolution"),
                         ("held-out Spearman", rho, "probe_min_spearman")):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= cfg[key]):
            shown = "not measured" if v is None or not math.isfinite(v) else f"{v:.2f}"
            return f"unknown: the probe cannot see {a} ({name} {shown} < {cfg[key]:g}); its " \
                   f"edits are not judged"
    return None


def _probe_attribute(a: str, block: dict, cfg: dict) -> dict:
    """One attribute's probe verdict: the worst of its direction share over its resolution and its
    effect ratio, where the probe sees it (:func:`_probe_sees`); else ``warn``, not judged."""
    share, res = block.get("direction_share"), block.get("resolution")
    ratio_share = (share / res if isinstance(share, (int, float)) and isinstance(res, (int, float))
                   and math.isfinite(share) and math.isfinite(res) and res > 0 else None)
    part = _judge(ratio_share, cfg, "probe_share_ratio", True,
                  f"probe: share of {a} edits moving the requested way "
                  f"({'–' if share is None else format(share, '.2f')}) over its resolution "
                  f"({'–' if res is None else format(res, '.2f')})")
    ratio, ci = block.get("effect_ratio"), block.get("effect_ratio_ci")
    shown = "{:.2f}" + (f" (95 % interval {ci[0]:.2f} to {ci[1]:.2f})"
                        if isinstance(ci, (list, tuple)) and len(ci) == 2 else "")
    effect = _judge(ratio, cfg, "probe_effect", True, f"probe: {a} edits move its reading by "
                    f"this fraction of a real lot difference of the same size", shown)
    g = {**part, "value": share, "share_ratio": ratio_share,
         "verdict": worst([part["verdict"], effect["verdict"]]),
         "reason": "; ".join(p["reason"] for p in (part, effect) if p["verdict"] != "pass")
         or f"{part['reason']}; {effect['reason']}",
         "effect_ratio": ratio, "effect_ratio_ci": ci,
         "parts": {"direction_share": part, "effect_ratio": effect},
         "heldout_spearman": block.get("heldout_spearman"), "resolution": res, "judged": True}
    blind = _probe_sees(a, block, cfg)
    if blind is not None:
        g.update(verdict="warn", reason=blind, judged=False)
    return g


def probe_gate(ev: dict, cfg: dict) -> dict | None:
    """Per attribute (:func:`_probe_attribute`): the probe's direction share over its resolution
    and its effect ratio where it sees the attribute, else ``warn`` (not judged); the gate: the
    worst judged attribute (``warn`` when none is judged)."""
    probe = _get(ev, "probe")
    if not isinstance(probe, dict) or "skipped" in probe:
        return None
    attrs = {a: _probe_attribute(a, block, cfg)
             for a, block in (probe.get("attributes") or {}).items()}
    judged = [g for g in attrs.values() if g["judged"]]
    shares = [g["value"] for g in judged if isinstance(g["value"], (int, float))]
    sh, ef = _threshold(cfg, "probe_share_ratio", True), _threshold(cfg, "probe_effect", True)
    v = worst(g["verdict"] for g in judged) if judged else "warn"
    bad = [a for a, g in attrs.items() if g["judged"] and g["verdict"] != "pass"]
    unseen = [a for a, g in attrs.items() if not g["judged"]]
    reason = (f"{len(judged)} of {len(attrs)} attributes judged by the probe"
              + (f"; not passing: {', '.join(bad)}" if bad else
                 "; every judged one passes" if judged else "")
              + (f"; not judged (the probe cannot see them): {', '.join(unseen)}"
                 if unseen else ""))
    return {"value": min(shares) if shares else None, "verdict": v,
            "threshold": {k: f"share / resolution {sh[k]}, effect ratio {ef[k]}"
                          for k in ("pass", "warn")},
            "reason": reason, "attributes": attrs}


def health_gate(checks) -> dict | None:
    """The editor's own checks, ``[(check, verdict, reason), ...]`` (None: it declares none)."""
    rows = [{"check": str(c), "verdict": v if v in VERDICTS else "warn", "reason": str(r)}
            for c, v, r in (checks or [])]
    if not rows:
        return None
    v = worst(r["verdict"] for r in rows)
    bad = [r["check"] for r in rows if r["verdict"] != "pass"]
    return {"value": {r["check"]: r["verdict"] for r in rows}, "verdict": v,
            "threshold": "the editor plugin's own failure signs",
            "reason": "; ".join(r["reason"] for r in rows if r["verdict"] != "pass")
            if bad else "no known failure sign in the editor's training losses", "checks": rows}


def convergence_gate(backward: dict | None, cfg: dict) -> dict | None:
    shares = _get(backward, "reached_share")
    if not isinstance(shares, dict) or not shares:
        return None
    vals = [v for v in shares.values() if isinstance(v, (int, float)) and math.isfinite(v)]
    gate = _judge(min(vals) if vals else None, cfg, "reached_share", True,
                  "lowest reached share of reachable counterfactual targets")
    gate["directions"] = dict(shares)
    return gate


def measurement_verdicts(ev: dict, factor: float = 0.9) -> dict:
    """Ground truth beside the gates, where the data measure attributes (synthetic lots): per
    attribute the measured direction share against ``factor`` x the ceiling's (the data's own
    generator as the editor): ``pass`` at or above it, else ``fail``."""
    fid = _get(ev, "fidelity", "attributes") or {}
    ceil = _get(ev, "fidelity_ceiling", "attributes") or {}
    out = {}
    for a, block in fid.items():
        share, top = block.get("direction_share"), _get(ceil, a, "direction_share")
        ok = all(isinstance(x, (int, float)) and math.isfinite(x) for x in (share, top))
        out[a] = {"direction_share": share, "ceiling": top,
                  "verdict": ("pass" if share >= factor * top else "fail") if ok else "warn",
                  "rule": f">= {factor:g} x ceiling"}
    return out


def _attribute_verdicts(gates: dict, names) -> dict:
    """Per attribute: the worst of the gates that concern it, with the reasons of those that do
    not pass."""
    wide = [(g, gates[g]) for g in ("reconstruction_shift", "editor_health") if g in gates]
    real = gates.get("editor_realism")
    if real is not None:
        wide.append(("editor_realism", real["parts"]["reconstruction"]))
    out = {}
    for a in names:
        parts = list(wide)
        for g in ("editor_realism", "attribute_probe"):
            block = _get(gates, g, "attributes", a)
            if block is not None:
                parts.append((g, block))
        v = worst(p["verdict"] for _, p in parts)
        out[a] = {"verdict": v, "trust": TRUST_LEVELS[v],
                  "reasons": [f"{g}: {p['reason']}" for g, p in parts if p["verdict"] != "pass"]}
    return out


def trust_gates(metrics: dict, cfg: dict, attributes, editor_explainers=(),
                health_checks=None) -> dict:
    """``metrics.json``'s ``trust`` section from the run's metrics (the module docstring);
    ``editor_explainers``: the explainers that edit through the editor; ``health_checks``: what
    the editor's :meth:`~mxplain.interfaces.Editor.health` returned."""
    ev = _get(metrics, "editor", "evaluation") or {}
    gates = {}
    for name, gate in (("editor_realism", realism_gate(ev, cfg)),
                       ("reconstruction_shift", shift_gate(ev, cfg)),
                       ("attribute_probe", probe_gate(ev, cfg)),
                       ("editor_health", health_gate(health_checks))):
        if gate is not None:
            gates[name] = gate
    explain = metrics.get("explain") or {}
    conv = convergence_gate(explain.get("backward"), cfg) if "backward" in explain else None
    if conv is not None:
        gates["backward_convergence"] = conv
    attrs = _attribute_verdicts(gates, list(attributes))
    explanations = {}
    for ename in explain:
        if ename not in editor_explainers:
            explanations[ename] = {"trust": "not gated", "reasons": [
                "does not edit through the editor: no gate applies"]}
            continue
        per = {}
        for a, block in attrs.items():
            v, reasons = block["verdict"], list(block["reasons"])
            if ename == "backward" and conv is not None:
                v = worst([v, conv["verdict"]])
                if conv["verdict"] != "pass":
                    reasons.append(f"backward_convergence: {conv['reason']}")
            per[a] = {"trust": TRUST_LEVELS[v], "reasons": reasons}
        overall = worst({v: k for k, v in TRUST_LEVELS.items()}[p["trust"]] for p in per.values())
        explanations[ename] = {"trust": TRUST_LEVELS[overall], "attributes": per}
    levels = [attrs[a]["verdict"] for a in attrs] + ([conv["verdict"]] if conv else [])
    out = {"gates": gates, "attributes": attrs, "explanations": explanations,
           "verdict": TRUST_LEVELS[worst(levels)] if gates else "not gated",
           "thresholds": dict(cfg)}
    measured = measurement_verdicts(ev)
    if measured:
        out["measurement"] = measured
    return out


def mark_cube(path, trust: dict) -> None:
    """The cube's trust marks: attribute ``trust_verdict`` (the run's), ``trust_attributes``
    (per attribute) and the variable ``trust_attribute_verdict`` (attribute)."""
    import numpy as np
    import xarray as xr

    from mxplain import zarrio

    names = list(trust.get("attributes", {}))
    values = np.array([trust["attributes"][a]["trust"] for a in names], dtype="<U12")
    da = xr.DataArray(values, dims=("attribute",), attrs={
        "description": "trusted / caution / untrusted: the worst trust gate of the attribute's "
                       "explanations (metrics.json trust)"})
    zarrio.write_small(path, "trust_attribute_verdict", da)
    zarrio.update_attrs(path, {"trust_verdict": trust.get("verdict", "not gated"),
                               "trust_attributes": dict(zip(names, values.tolist()))})
