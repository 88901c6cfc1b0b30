"""``mxplain report`` draws the explainers' figures again (mxplain.redraw): a figure mxplain did not
write is never replaced; the run's own figures are (the whole path, from a killed and resumed run,
is tests/core/test_resume.py::test_kill_cube_write_and_resume)."""

import json

import pytest

from mxplain.errors import UserError
from mxplain.redraw import _move_into, redraw_figures
from mxplain.runfolder import LOCK, MARKER, STATE, read_state


def test_redrawn_figures_replace_only_mxplain_s_own(tmp_path):
    run, drawn = tmp_path / "run", tmp_path / "drawn"
    (run / "figures").mkdir(parents=True)
    drawn.mkdir()
    (run / STATE).write_text(json.dumps({MARKER: 1, "config_hash": "x",
                                         "written": ["figures/mine.png"]}))
    (run / "figures" / "mine.png").write_bytes(b"old")
    (run / "figures" / "theirs.png").write_bytes(b"a user's file")
    for name in ("mine.png", "new.png"):
        (drawn / name).write_bytes(b"drawn " + name.encode())
    assert _move_into(run, drawn) == ["figures/mine.png", "figures/new.png"]
    assert (run / "figures" / "mine.png").read_bytes() == b"drawn mine.png"
    assert "figures/new.png" in read_state(run)["written"]
    (drawn / "theirs.png").write_bytes(b"drawn")
    with pytest.raises(UserError, match="theirs.png.*not written by mxplain"):
        _move_into(run, drawn)
    assert (run / "figures" / "theirs.png").read_bytes() == b"a user's file"
    assert not (run / LOCK).exists() and not list((run / "figures").glob(".*"))


def test_a_run_without_a_cube_draws_nothing(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    assert redraw_figures(tmp_path) == []
