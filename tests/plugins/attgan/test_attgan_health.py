"""AttGANEditor.health (issue 19 item 1, the editor_health trust gate): the README's failure signs
read from the training history: a reconstruction loss that does not fall, a real-tile attribute
classifier that never closes the gap from the no-information loss to the soft-label floor."""

import numpy as np
from attgan_data import make_store, one_thread  # noqa: F401

from mxplain_attgan.editor import AttGANEditor


def _editor(rec, cls):
    e = AttGANEditor()
    e.history_ = {"g_rec": list(rec), "d_cls": list(cls)}
    return e


def _losses(store):
    a = np.clip(np.repeat(store.lot_attributes, store.counts, axis=0), 1e-6, 1 - 1e-6)
    m = a.mean(axis=0, keepdims=True)
    floor = float(-(a * np.log(a) + (1 - a) * np.log(1 - a)).mean())
    none = float(-(a * np.log(m) + (1 - a) * np.log(1 - m)).mean())
    return floor, none


def test_health_from_history(tmp_path):
    store = make_store(tmp_path / "t.zarr", n_lots=4, per_lot=3, size=16)
    floor, none = _losses(store)
    good = dict(_editor(np.linspace(0.4, 0.05, 100), np.linspace(none, floor + 0.01, 100))
                .health({}, store)[i][:2] for i in range(2))
    assert good == {"reconstruction loss falls": "pass", "attribute classifier learns": "pass"}
    checks = _editor(np.full(100, 0.3), np.full(100, none)).health({}, store)
    assert [c[1] for c in checks] == ["fail", "fail"]
    assert "does not fall" in checks[0][2] and "soft-label floor" in checks[1][2]
    mid = _editor(np.linspace(0.4, 0.28, 100), np.full(100, none - 0.3 * (none - floor)))
    assert [c[1] for c in mid.health({}, store)] == ["warn", "warn"]
    assert [c[1] for c in _editor([], []).health({}, store)] == ["warn"]  # no history
    assert len(_editor(np.full(10, 0.3), np.full(10, 0.6)).health({}, None)) == 1  # no labels
