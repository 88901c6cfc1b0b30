"""mxplain.report_answers: the report's first section (forward effects per attribute and lot,
backward changes over converged and reachable tiles, predictions alone), its trust marks and its
number formatting, on a hand-made cube."""

from __future__ import annotations

import json
import re

import numpy as np
import xarray as xr

from mxplain import report_answers as ra
from mxplain.cube import FORMAT_VERSION

ATTRS = ["grain_size", "roughness"]
TRUST = {"verdict": "untrusted", "explanations": {"forward": {"attributes": {
    "grain_size": {"trust": "untrusted", "reasons": ["attribute_probe: share 0.40",
                                                     "editor_realism: AUC 0.9",
                                                     "attribute_probe: again"]},
    "roughness": {"trust": "trusted", "reasons": []}}}}}
METRICS = {"data": {"property": "hardness", "units": "HV"}, "trust": TRUST}


def cube(n_tiles=3):
    """Three lots: L0 reaches every target, L1 none, L2's targets all lie within the tolerance."""
    sens = np.array([[-58.0, 80.0], [-20.0, 81.0], [-30.0, -2.0]])
    ci = np.stack([sens - 5.0, sens + 5.0], -1)  # roughness of L2: [-7, 3] includes 0
    shape = (3, n_tiles, 2)
    converged = np.ones(shape, bool)
    converged[1] = False
    reachable = np.ones(shape, bool)
    reachable[2] = False
    change = np.full((3, 2, 2), 0.125)
    change[:, 1] *= -1
    return xr.Dataset(
        {"sensitivity": (("lot", "attribute"), sens),
         "sensitivity_ci": (("lot", "attribute", "bound"), ci),
         "sensitivity_sign_stability": (("lot", "attribute"), np.full((3, 2), 0.97)),
         "tile_mask": (("lot", "tile"), np.ones((3, n_tiles), bool)),
         "prediction": (("lot", "tile"), np.tile([[100.0, 110.0, 120.0]], (3, 1))),
         "lot_attributes": (("lot", "attribute"), np.full((3, 2), 0.5)),
         "measured_property": (("lot",), np.array([105.0, 2345.6, 99.0])),
         "backward_mean_change": (("lot", "direction", "attribute"), change),
         "backward_change_ci": (("lot", "direction", "attribute", "bound"),
                                np.stack([change - 0.01, change + 0.01], -1)),
         "backward_reached_share": (("lot", "direction"), np.array([[1.0, 1.0], [0, 0], [1, 1]])),
         "backward_converged": (("lot", "tile", "direction"), converged),
         "backward_reachable": (("lot", "tile", "direction"), reachable),
         "backward_target": (("lot", "tile", "direction"),
                             np.stack([np.full((3, n_tiles), 130.0), np.full((3, n_tiles), 90.0)],
                                      -1))},
        coords={"lot": ["L0", "L1", "L2"], "attribute": ATTRS,
                "direction": ["increase", "decrease"], "bound": ["low", "high"]},
        attrs={"mxplain_results_cube": FORMAT_VERSION, "property_units": "MPa"})


def text(html):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#x27;", "'")


def test_number_words():
    assert (ra.percent(0.974), ra.percent(None), ra.percent(float("nan")), ra.percent(True)) == \
        ("97 %", "–", "–", "–")
    assert ra.with_units(2345.6, "HV") == "2350 HV" and ra.with_units(0.5, "", True) == "+0.500"
    assert ra.with_units(None, "HV") == "–"
    assert ra.interval(1, 2.345) == "[1.00, 2.35]" and ra.interval(float("nan"), 1) == ""
    assert ra.gate_words("attribute_probe: x; editor_realism") == \
        "independent attribute probe: x; editor realism"


def test_trust_of_an_answer_and_the_property_words():
    level, reason = ra.attribute_trust(METRICS, "forward", "grain_size")
    assert level == "untrusted" and reason.startswith("independent attribute probe: share 0.40; ")
    assert ra.attribute_trust(METRICS, "backward", "grain_size") == ("", "")
    assert ra.attribute_trust({"trust": "broken"}, "forward", "grain_size") == ("", "")
    assert ra.gates_not_passed(METRICS, "forward", "grain_size") == [
        "independent attribute probe", "editor realism"]  # in order, each once
    c = cube()
    assert ra.property_units(METRICS, c) == "HV" and ra.property_units({}, c) == "MPa"
    assert ra.property_name(METRICS) == "hardness" and ra.property_name({}) == "the property"


def test_forward_answers_median_effects_lots_and_marks():
    html = ra.forward_answers(cube(), METRICS)
    words = text(html)
    assert "grain_size lowers hardness: median -30.0 HV per unit grain_size" in words
    assert "lots: 0 up, 3 down, 0 unclear (of 3)" in words
    assert "roughness raises hardness: median +80.0 HV" in words
    assert "lots: 2 up, 0 down, 1 unclear (of 3)" in words  # L2's interval [-7, 3] holds 0
    assert "Untrusted, not advice (not passed: independent attribute probe, editor realism" in words
    assert html.count("class='untrusted'") == 2 + 3  # the sentence, the summary row, 3 lot cells
    assert "-58.0 [-63.0, -53.0], sign 97 %" in words and "2350 HV" in words
    assert "110 HV (SD 8.16, 3 tiles)" in words
    assert ra.forward_answers(cube().drop_vars("sensitivity"), METRICS) == ""
    no_ci = text(ra.forward_answers(cube().drop_vars("sensitivity_ci"), {}))
    assert "2 up, 1 down (of 3; no intervals: the sign of the slope)" in no_ci
    assert "no bootstrap intervals in this run" in no_ci


def test_backward_answers_only_over_converged_reachable_tiles():
    words = text(ra.backward_answers(cube(), METRICS))
    assert "L0 increase 100 % of 3 +20.0 HV +0.125 [0.115, 0.135]" in words  # 130 - mean 110
    assert "L0 decrease 100 % of 3 -20.0 HV -0.125" in words
    assert "L1 increase 0 of 3 no counterfactual reached its target" in words
    assert "L2 decrease no reachable target of 3 every target lay within the tolerance" in words
    assert ra.backward_answers(cube().drop_vars("backward_mean_change"), METRICS) == ""
    part = cube()
    part["backward_reachable"][0, 0, 0] = False  # one of L0's increase targets is unreachable
    part["backward_attributes"] = (("lot", "tile", "direction", "attribute"),
                                   np.full((3, 3, 2, 2), 0.75))
    # the cube's units where metrics has none; the step from the two reachable tiles, 130 - 115
    assert "L0 increase 100 % of 2 reachable (1 unreachable) +15.0 MPa +0.250 (reachable tiles; " \
        "no interval)" in text(ra.backward_answers(part, {}))


def test_predictions_only_and_the_section_of_a_run(tmp_path):
    words = text(ra.predictions_only(cube()[["tile_mask", "prediction", "measured_property"]], {}))
    assert "No attribute explanations in this run" in words and "L1 2350 MPa 110 MPa (SD 8.16, 3 tiles)" \
        in words
    run = tmp_path / "run"
    run.mkdir()
    assert ra.answers_section(run, METRICS) == ""  # no cube
    cube().to_zarr(run / "results.zarr", mode="w")
    (run / "metrics.json").write_text(json.dumps(METRICS))
    html = ra.answers_section(run, METRICS)
    assert html.startswith("<h2>Answers</h2><p class='trust-note'>Run trust verdict: untrusted.")
    assert "What change reaches a target" in html
    trusted = ra.answers_section(run, {**METRICS, "trust": {"verdict": "trusted"}})
    assert "trust-note" not in trusted and "class='untrusted'" not in trusted


def test_an_old_cube_gets_its_backward_statistics_from_the_tiles(tmp_path):
    old = cube().drop_vars(["backward_mean_change", "backward_change_ci", "backward_reached_share"])
    old["backward_attributes"] = (("lot", "tile", "direction", "attribute"),
                                  np.full((3, 3, 2, 2), 0.75))
    run = tmp_path / "run"
    run.mkdir()
    old.to_zarr(run / "results.zarr", mode="w")
    loaded = ra.load_cube(run)
    np.testing.assert_allclose(loaded["backward_mean_change"].values[0], 0.25)
    np.testing.assert_allclose(loaded["backward_mean_change"].values[1], 0.0)  # none converged
    np.testing.assert_allclose(loaded["backward_reached_share"].values, [[1, 1], [0, 0], [1, 1]])
