"""mxplain.review_report: the report's trust section: the gates with their verdicts and
thresholds, then per attribute the automatic checks of the edits next to the expert review."""

from __future__ import annotations

import re

from mxplain.review_report import gates_section, trust_section

GATES = {"verdict": "caution",
         "gates": {"editor_realism": {"value": 0.612, "verdict": "warn",
                                      "threshold": {"pass": "<= 0.6", "warn": "<= 0.75"},
                                      "reason": "AUC <b>0.61</b>"},
                   "attribute_probe": {"value": {"size": 0.9, "porosity": "n/a"},
                                       "verdict": "pass", "threshold": ">= 0.75",
                                       "attributes": {"size": {"heldout_spearman": 0.93,
                                                               "value": 0.95, "effect_ratio": 0.8,
                                                               "effect_ratio_ci": [0.7, 0.9],
                                                               "verdict": "pass"}}}},
         "explanations": {"forward": {"trust": "caution"}},
         "attributes": {"size": {"trust": "trusted"}},
         "measurement": {"size": {"verdict": "pass"}}}
EVALUATION = {"realism": {"reconstruction": {"auc": 0.55},
                          "edits": {"auc": 0.7, "by_attribute": {"size": 0.66, "porosity": 0.8}}},
              "fidelity": {"mean_direction_share": 0.9,
                           "attributes": {"size": {"direction_share": 0.95},
                                          "porosity": {"direction_share": 0.85}}},
              "fidelity_ceiling": {"attributes": {"size": {"direction_share": 0.99}}},
              "reconstruction_prediction_shift": {"mean_abs_percent": 1.234}}
REVIEW = {"reviewers": ["Ada", "Bo"],
          "attributes": {"size": {"answers": 10, "agreement": 0.875, "agreement_ci": [0.53, 0.98],
                                  "agree": 7, "disagree": 1, "cant_tell_share": 0.2,
                                  "kappa": 0.41, "verdict": "pass"},
                         "porosity": {"answers": 0}},
          "pooled": {"answers": 10, "agreement": 0.875, "agree": 7, "disagree": 1},
          "per_reviewer": {"Ada": {"answers": 6, "agreement": 1.0, "agreement_ci": [0.6, 1.0],
                                   "cant_tell_share": 0.0, "median_seconds": 3.25,
                                   "verdict": "pass"}}}


def rows(html):
    return [re.sub(r"\|+", "|", re.sub(r"<[^>]+>", "|", r)).strip("|")
            for r in re.findall(r"<tr>(.*?)</tr>", html)]


def test_gates_one_row_each_with_the_runs_verdict():
    html = gates_section({"trust": GATES})
    assert "<b>Run verdict: caution</b> (explanations: forward: caution)." in html
    assert rows(html)[1:] == ["editor_realism|0.61|warn|pass &lt;= 0.6; warn &lt;= 0.75|AUC "
                              "&lt;b&gt;0.61&lt;/b&gt;",
                              "attribute_probe|size 0.90, porosity n/a|pass|&gt;= 0.75"]
    assert gates_section({}) == gates_section({"trust": {"gates": {}}}) == ""


def test_checks_and_review_per_attribute():
    metrics = {"trust": GATES, "editor": {"evaluation": EVALUATION}, "review": REVIEW}
    html = trust_section(metrics)
    assert html.startswith(gates_section(metrics))
    body = rows(html.split("<h2>Trust: expert review")[1])
    assert body[1] == ("size|0.66|0.95 (ceiling 0.99)|0.93|0.95|0.80 [0.70, 0.90]|pass|pass|"
                       "trusted|0.88 [0.53 – 0.98]|7 / 8|0.20|0.41|pass")
    assert body[2] == "porosity|0.80|0.85|–|–|–|–|–|–|no answers"
    assert body[3] == "all attributes|0.70|0.90|0.88 [–]|7 / 8|–|–|?"  # pooled: no verdict
    assert body[5] == "Ada|6|1.00 [0.60 – 1.00]|0.00|3.2|pass"  # median seconds to one digit
    assert "10 answers of 2 reviewer(s)" in html
    assert "critic AUC 0.55; predictor shift on reconstructions 1.23 % (mean |Δ|)" in html


def test_without_a_review_the_section_says_how_to_get_one():
    html = trust_section({"editor": {"evaluation": {"fidelity": EVALUATION["fidelity"]}}})
    assert "No expert review imported yet" in html and "mxplain review RUN --import" in html
    assert "critic AUC not run; predictor shift on reconstructions not measured" in html
    assert [r.split("|")[0] for r in rows(html)[1:]] == ["size", "porosity"]
    assert trust_section({}) == ""
