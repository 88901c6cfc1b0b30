"""mxplain.review_simulate: a simulated reviewer who answers from the dataset's measurement (wrong
with a given probability), its options checked before anything, and where its file may go. The
whole command on a run: test_review.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mxplain.errors import UserError
from mxplain.review import FORMAT
from mxplain.review_simulate import _write_outside, simulate, simulated_answers


def measure(tiles):
    """Columns size, porosity, polydispersity, facetness: the mean grey level, its negative,
    NaN (the measurement fails) and a constant (it ties)."""
    m = tiles.reshape(len(tiles), -1).mean(1)
    return np.stack([m, -m, np.full_like(m, np.nan), np.ones_like(m)], 1)


def _tiles(values):
    return np.stack([np.full((4, 4), v, np.uint8) for v in values])


PAIRS = [{"attribute": a} for a in ("size", "size", "porosity", "polydispersity", "facetness",
                                    "hue")]
LEFT, RIGHT = _tiles([10, 200, 10, 10, 10, 10]), _tiles([100, 20, 100, 100, 100, 100])


def test_answers_are_the_side_that_measures_more_or_cant_tell():
    rng = np.random.default_rng(0)
    assert simulated_answers(LEFT, RIGHT, PAIRS, measure, 0.0, rng) == [
        "right", "left", "left", "cant_tell", "cant_tell", "cant_tell"]


def test_errors_flip_decided_answers_only_at_their_rate():
    pairs = [{"attribute": "size"}] * 2000
    left, right = _tiles([10] * 2000), _tiles([100] * 2000)
    answers = simulated_answers(left, right, pairs, measure, 0.2, np.random.default_rng(1))
    assert answers.count("left") / 2000 == pytest.approx(0.2, abs=0.03)
    assert set(answers) == {"left", "right"}
    assert simulated_answers(LEFT, RIGHT, PAIRS, measure, 1.0, np.random.default_rng(0))[:5] == [
        "left", "right", "right", "cant_tell", "cant_tell"]
    again = simulated_answers(left, right, pairs, measure, 0.2, np.random.default_rng(1))
    assert again == answers


@pytest.mark.parametrize("kwargs, words", [
    ({"error_rate": 1.5}, "--error-rate = 1.5: needs a number in [0, 1]"),
    ({"error_rate": True}, "--error-rate = True"),
    ({"reviewer": " "}, "--reviewer needs a name"),
    ({"n_pairs": 0}, "--pairs = 0: needs an integer >= 1"),
    ({"delta": 0}, "--delta = 0: needs a number in (0, 1]"),
])
def test_bad_options_are_refused_before_the_run_is_read(tmp_path, kwargs, words):
    with pytest.raises(UserError) as info:
        simulate(tmp_path / "no-such-run", **kwargs)
    assert words in str(info.value)


def test_a_file_outside_the_run_is_new_or_one_it_wrote(tmp_path):
    text = json.dumps({"format": FORMAT, "simulated": {"error_rate": 0.0}})
    target = _write_outside(tmp_path / "sub" / "a.json", text)
    assert target.read_text() == text
    assert _write_outside(target, text.replace("0.0", "0.5")).read_text().endswith("0.5}}")
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"format": FORMAT}))  # real answers, not simulated
    with pytest.raises(UserError, match="is not a simulated answers file mxplain wrote"):
        _write_outside(mine, text)
    assert json.loads(mine.read_text()) == {"format": FORMAT}
    with pytest.raises(UserError, match="is a folder or a link"):
        _write_outside(tmp_path, text)
