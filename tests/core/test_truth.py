"""mxplain.truth: one sign-agreement rule for every explainer's ground-truth score."""

import numpy as np
import pytest

from mxplain.truth import negligible_mask, sign_agreement


def test_negligible_is_relative_to_the_lots_largest_effect():
    truth = np.array([[2.0, -0.15, 0.5, np.nan], [0.0, 0.0, 0.0, 0.0]])
    assert negligible_mask(truth).tolist() == [[False, True, False, True], [True, True, True, True]]


def test_sign_agreement_scores_non_negligible_finite_pairs_only():
    truth = np.array([[2.0, -0.1, 0.5, -1.0], [2.0, -0.1, 0.5, -1.0]])
    est = np.array([[1.0, 5.0, -0.2, -3.0], [0.5, 5.0, np.nan, 1.0]])
    r = sign_agreement(est, truth, ["a", "b", "c", "d"])
    # scored: a (2 lots), c (lot 0), d (2 lots); b is negligible (0.1 <= 0.1 * 2)
    assert r["pairs"] == 5
    assert r["agreement"] == pytest.approx(3 / 5)
    assert r["by_attribute"] == {"a": 1.0, "c": 0.0, "d": 0.5}
    # a (K,) truth broadcasts to every lot; weights weigh the pairs
    w = sign_agreement(est, truth[0], weights=np.abs(truth[0]))
    assert w["agreement"] == pytest.approx((2 + 2 + 1) / (2 + 2 + 0.5 + 1 + 1))
    assert sign_agreement(np.full((2, 4), np.nan), truth) == {"agreement": None, "pairs": 0}
