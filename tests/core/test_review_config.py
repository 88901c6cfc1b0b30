"""mxplain.review_config: ``[data] attribute_descriptions``, the definitions a reviewer reads."""

from __future__ import annotations

import pytest

from mxplain.errors import UserError
from mxplain.review_config import DEFAULT_DESCRIPTIONS, MAX_LENGTH, check_descriptions, descriptions


def test_the_configs_texts_over_the_defaults():
    texts = descriptions({"attribute_descriptions": {"size": "Mine."}},
                         ["size", "porosity", "hue"])
    assert texts == {"size": "Mine.", "porosity": DEFAULT_DESCRIPTIONS["porosity"], "hue": ""}
    assert descriptions({}, ["facetness"]) == {"facetness": DEFAULT_DESCRIPTIONS["facetness"]}
    assert sorted(DEFAULT_DESCRIPTIONS) == ["facetness", "polydispersity", "porosity", "size"]


@pytest.mark.parametrize("value, attributes, words", [
    ("size", None, "must be a table of attribute = \"definition\", got 'size'"),
    ({"hue": "x"}, ["size", "porosity"], "unknown attribute 'hue'; attributes are size, porosity"),
    ({"size": " "}, None, "size = ' ': needs a non-empty string"),
    ({"size": 3}, None, "size = 3: needs a non-empty string"),
    ({"size": "x" * (MAX_LENGTH + 1)}, None, f"{MAX_LENGTH + 1} characters, at most {MAX_LENGTH}"),
])
def test_bad_descriptions_name_the_key(value, attributes, words):
    with pytest.raises(UserError) as info:
        check_descriptions(value, attributes)
    assert str(info.value).startswith("[data.attribute_descriptions]") and words in str(info.value)


def test_good_descriptions_pass():
    check_descriptions(None)
    check_descriptions({"hue": "Any attribute when the dataset does not say which it has."})
    check_descriptions({"size": "x" * MAX_LENGTH}, ["size"])
