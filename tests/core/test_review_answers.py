"""mxplain.review_answers: an answers file read and checked against the run's key (this run, this
page's pairs, one answer a pair, a reviewer's name), before anything is imported. The import into
a run folder is exercised end to end in test_review.py."""

from __future__ import annotations

import json

import pytest

from mxplain.errors import UserError
from mxplain.review import FORMAT
from mxplain.review_answers import _no_duplicates, check_answers, read_answers

KEY = {"run_id": "r1", "sets": {"s1": {
    "order": ["p1", "p2"],
    "pairs": {"p1": {"attribute": "size", "more": "left"},
              "p2": {"attribute": "porosity", "more": "right"}}}}}


def _doc(**changes):
    doc = {"format": FORMAT, "run_id": "r1", "set_id": "s1", "reviewer": "  Ada ",
           "pair_ids": ["p1", "p2"],
           "answers": [{"pair": "p2", "answer": "right", "seconds": 4.5},
                       {"pair": "p1", "answer": "cant_tell", "seconds": True}]}
    return {**doc, **changes}


def test_answers_become_records_with_the_keys_side():
    records = check_answers(_doc(), KEY, "a.json")
    assert records == [
        {"reviewer": "Ada", "set": "s1", "pair": "p2", "attribute": "porosity", "answer": "right",
         "more": "right", "seconds": 4.5},
        {"reviewer": "Ada", "set": "s1", "pair": "p1", "attribute": "size", "answer": "cant_tell",
         "more": "left", "seconds": None}]  # a boolean is no time


@pytest.mark.parametrize("changes, words", [
    ({"run_id": "r2"}, "belong to another run (id 'r2'; this run's is 'r1')"),
    ({"set_id": "s9"}, "of a review page this run did not write (set 's9'); known sets: s1"),
    ({"reviewer": " "}, "have no reviewer name"),
    ({"reviewer": "x" * 201}, "have no reviewer name (1 to 200 characters)"),
    ({"pair_ids": ["p2", "p1"]}, "pair ids differ from those of page s1"),
    ({"answers": []}, "hold no answers"),
    ({"answers": [{"pair": "p7", "answer": "left"}]}, "answer 1 names pair 'p7'"),
    ({"answers": [{"pair": "p1", "answer": "left"}] * 2}, "pair 'p1' is answered twice"),
    ({"answers": [{"pair": "p1", "answer": "up"}]}, "answer 1 is 'up'; one of left, right, "
                                                    "cant_tell expected"),
])
def test_answers_that_do_not_fit_the_key_are_one_error(changes, words):
    with pytest.raises(UserError) as info:
        check_answers(_doc(**changes), KEY, "a.json")
    assert words in str(info.value) and "a.json" in str(info.value)


@pytest.mark.parametrize("raw, words", [
    (b"\xff\xfe{}", "are not UTF-8 text"),
    (b'{"format": "mxplain-review-answers", "answers": [', "are not valid JSON (Expecting value "
                                                           "at line 1, column 50): a truncated"),
    (b'{"format": "other"}', 'is not an answers file of an mxplain review page (no "format": '
                             '"mxplain-review-answers")'),
    (b"[]", "is not an answers file"),
])
def test_files_that_are_no_answers_are_one_error(tmp_path, raw, words):
    path = tmp_path / "a.json"
    path.write_bytes(raw)
    with pytest.raises(UserError) as info:
        read_answers(path)
    assert words in str(info.value)


def test_a_downloaded_file_reads_back_with_its_bytes(tmp_path):
    raw = json.dumps(_doc()).encode()
    (tmp_path / "a.json").write_bytes(raw)
    assert read_answers(tmp_path / "a.json") == (_doc(), raw)
    with pytest.raises(UserError, match="cannot read answers"):
        read_answers(tmp_path / "missing.json")


def test_one_answer_per_reviewer_and_pair_over_all_files():
    records = check_answers(_doc(), KEY, "a.json")
    other = check_answers(_doc(reviewer="Bo"), KEY, "b.json")
    _no_duplicates([("a.json", records), ("b.json", other)])
    with pytest.raises(UserError, match="reviewer 'Ada' answered pair 'p2' in both a.json and "
                                        "c.json"):
        _no_duplicates([("a.json", records), ("c.json", records[:1])])
