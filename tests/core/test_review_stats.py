"""The review's statistics against hand-computed values: Wilson's interval, Fleiss' kappa, the
agreement block and the power of the test (simulated, and checked against the exact sum)."""

import math

import pytest

from mxplain.review_stats import (
    agreement_block,
    exact_power,
    fleiss_kappa,
    kappa_block,
    pairs_for_power,
    power,
    summarize,
    wilson,
)


def test_wilson_by_hand():
    # 8 of 10: p = 0.8, z^2 = 3.8415; centre (0.8 + 0.19207) / 1.38415 = 0.71674,
    # half 1.95996 * sqrt(0.016 + 0.0096037) / 1.38415 = 0.22658
    assert wilson(8, 10) == pytest.approx((0.49016, 0.94332), abs=1e-5)
    # 6 of 8 (the browser test's reviewer)
    assert wilson(6, 8) == pytest.approx((0.40927, 0.92853), abs=1e-5)
    # 0 of 5: [0, z^2 / (n + z^2)] = [0, 3.8415 / 8.8415]
    lo, hi = wilson(0, 5)
    assert lo == 0.0 and hi == pytest.approx(0.43448, abs=1e-5)
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_fleiss_kappa_by_hand():
    # Fleiss (1971) / the usual worked example: 10 items, 14 raters, 5 categories: kappa 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-5)
    # two raters, four items: P_i = 1, 1, 0, 1 (mean 0.75); p = (5/8, 3/8), P_e = 0.53125;
    # kappa = (0.75 - 0.53125) / 0.46875 = 0.46667
    assert fleiss_kappa([[2, 0], [0, 2], [1, 1], [2, 0]]) == pytest.approx(0.466667, abs=1e-6)
    assert fleiss_kappa([[2, 0], [2, 0]]) is None  # one category only: undefined
    assert fleiss_kappa([[1, 0], [0, 1]]) is None  # no item rated twice


def _rec(reviewer, pair, answer, more="left", attribute="size", seconds=2.0):
    return {"reviewer": reviewer, "pair": pair, "attribute": attribute, "answer": answer,
            "more": more, "seconds": seconds}


def test_agreement_and_kappa_blocks():
    recs = [_rec("a", f"p{i}", ans) for i, ans in
            enumerate(["left"] * 6 + ["right"] * 2 + ["cant_tell"] * 2)]
    block = agreement_block(recs)
    assert (block["agree"], block["disagree"], block["cant_tell"]) == (6, 2, 2)
    assert block["agreement"] == 0.75 and block["cant_tell_share"] == 0.2
    assert block["verdict"] == "warn"  # [0.41, 0.93] holds 0.5
    assert block["median_seconds"] == 2.0
    assert agreement_block([_rec("a", f"p{i}", "left") for i in range(12)])["verdict"] == "pass"
    assert agreement_block([_rec("a", f"p{i}", "right") for i in range(12)])["verdict"] == "fail"
    # two reviewers on the same four pairs, answers as in the two-rater example above
    two = [_rec("a", "p1", "left"), _rec("b", "p1", "left"), _rec("a", "p2", "right"),
           _rec("b", "p2", "right"), _rec("a", "p3", "left"), _rec("b", "p3", "right"),
           _rec("a", "p4", "left"), _rec("b", "p4", "left"), _rec("a", "p5", "left")]
    k = kappa_block(two)
    assert k == {"kappa": pytest.approx(0.466667, abs=1e-6), "kappa_pairs": 4,
                 "kappa_reviewers": 2}
    out = summarize(two, ["size", "porosity"])
    assert out["attributes"]["porosity"]["answers"] == 0
    assert out["per_reviewer"]["a"]["answers"] == 5
    assert out["pooled"]["kappa"] == pytest.approx(0.466667, abs=1e-6)


def test_power_simulated_and_exact():
    # the simulation agrees with the exact binomial sum; at chance the test passes <= 2.5 % + MC
    for n in (10, 21, 40):
        assert power(0.8, n) == pytest.approx(exact_power(0.8, n), abs=0.02)
    assert exact_power(0.8, 21) == pytest.approx(0.8915, abs=1e-4)
    assert power(0.5, 40) < 0.03 and exact_power(0.5, 40) == pytest.approx(0.01924, abs=1e-4)
    assert exact_power(0.8, 20, cant_tell=0.2) < exact_power(0.8, 20)
    assert pairs_for_power(0.8) == 21  # docs/review.md's table (seed 0, 4000 reviews per size)
    assert pairs_for_power(0.9) == 11
