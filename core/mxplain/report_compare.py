"""``mxplain report RUN --compare OTHER``: the forward sensitivities of two runs side by side on
the lots and attributes they share (sign agreement with each other and with the true law,
Spearman over lots, a scatter per attribute)."""

from __future__ import annotations

import base64
from pathlib import Path

from mxplain.errors import UserError
from mxplain.report_html import _dict, _e, _value, read_metrics


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


