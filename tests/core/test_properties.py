"""Property-based tests (hypothesis): config and label parsing either succeed with valid values or
raise a UserError; never another exception."""

import string

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxplain import config, ingest
from mxplain.errors import UserError
from mxplain.store import LotTable

cell = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                 st.text(alphabet=string.printable.replace(",", "").replace("\n", "")
                         .replace("\r", "").replace('"', ""), max_size=6),
                 st.just(""))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.text(alphabet=string.ascii_letters, min_size=0, max_size=3),
                               cell, cell, cell), min_size=0, max_size=5))
def test_label_parsing(tmp_path, rows):
    path = tmp_path / "labels.csv"
    lines = ["lot,size,porosity,property"] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    try:
        ids, attrs, values, prop = ingest.read_labels(path, "property")
        LotTable(ids, attrs, values, prop).validate(str(path))
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert np.all((values >= 0) & (values <= 1)) and np.all(np.isfinite(prop))
    assert len(set(ids)) == len(ids)


keys = st.sampled_from(["name", "n_lots", "tile_size", "seed", "law", "depth", "epochs", "bogus",
                        "checkpoint", "steps", "explain_tiles", "device"])
values = st.one_of(st.integers(-3, 100), st.text(max_size=8), st.booleans(), st.none(),
                   st.floats(allow_nan=False, allow_infinity=False),
                   st.sampled_from(["synthetic", "wideresnet", "attgan", "forward", "store"]))
table = st.dictionaries(keys, values, max_size=4)


@settings(max_examples=80, deadline=None)
@given(raw=st.dictionaries(st.sampled_from(["data", "predictor", "editor", "explain", "run",
                                            "extra"]),
                           st.one_of(table, st.dictionaries(st.sampled_from(["forward", "gradcam",
                                                                             "nope"]), table)),
                           max_size=4))
def test_config_resolution(raw):
    raw = {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in raw.items()}
    try:
        cfg = config.resolve(raw)
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert cfg["data"]["name"] in ("synthetic", "store")
