"""``[data] attribute_descriptions``: the definition of each attribute that ``mxplain review`` shows
a reviewer with its question ("which tile has more <attribute>?").

A dataset that offers the key takes it as a constructor parameter (the built-in ``synthetic`` and
``store`` datasets do) and checks it with :func:`check_descriptions`; :func:`descriptions` merges the
config's texts over :data:`DEFAULT_DESCRIPTIONS`.
"""

from __future__ import annotations

from collections.abc import Iterable

from mxplain.errors import UserError

#: what the four built-in attributes mean, in the words a reviewer reads
DEFAULT_DESCRIPTIONS = {
    "size": "Crystal size: the typical diameter of the crystals (grains). Larger crystals mean "
            "more size.",
    "porosity": "Porosity: how many pores (small dark holes) the crystals hold for their area. "
                "More or larger holes mean more porosity.",
    "polydispersity": "Polydispersity: how much the crystal sizes differ within the tile. A mix "
                      "of large and small crystals means more; crystals all of one size mean less.",
    "facetness": "Facetness: how faceted the crystals are. Flat faces, straight edges and sharp "
                 "corners mean more; rounded, smooth outlines mean less.",
}
MAX_LENGTH = 2000


def check_descriptions(value, attributes: Iterable[str] | None = None) -> None:
    """``[data] attribute_descriptions``: unset, or a table of attribute name -> non-empty text
    (at most :data:`MAX_LENGTH` characters); with ``attributes`` (a dataset that knows them) an
    unknown name is refused too. A :class:`UserError` naming the key otherwise."""
    if value is None:
        return
    where = "[data.attribute_descriptions]"
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a table of attribute = \"definition\", got {value!r}")
    known = None if attributes is None else list(attributes)
    for key, text in value.items():
        if known is not None and key not in known:
            raise UserError(f"{where} unknown attribute {key!r}; attributes are "
                            f"{', '.join(known)}")
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{where} {key} = {text!r}: needs a non-empty string")
        if len(text) > MAX_LENGTH:
            raise UserError(f"{where} {key}: {len(text)} characters, at most {MAX_LENGTH}")


def descriptions(data_cfg: dict, attributes: Iterable[str]) -> dict[str, str]:
    """The definition of each of ``attributes``: the config's ``attribute_descriptions`` over the
    defaults; an attribute with neither gets an empty string (the page says none is set)."""
    own = data_cfg.get("attribute_descriptions") or {}
    return {a: str(own.get(a) or DEFAULT_DESCRIPTIONS.get(a, "")) for a in attributes}
