"""mxplain.run_inputs: a run folder may not be or lie inside what the run reads, and --overwrite
may not delete an input."""

from __future__ import annotations

import pytest

from mxplain.errors import UserError
from mxplain.run_inputs import _input_paths, check_paths


def _cfg(tmp_path):
    (tmp_path / "store.zarr").mkdir()
    (tmp_path / "p.pt").write_bytes(b"")
    return {"data": {"name": "zarr", "path": str(tmp_path / "store.zarr")},
            "predictor": {"name": "w", "checkpoint": str(tmp_path / "p.pt"), "depth": 10},
            "editor": {"name": "a", "checkpoint": "package:mxplain_attgan/data/x.pt"},
            "explain": {"forward": {"note": str(tmp_path / "missing")}},
            "run": {"out": str(tmp_path / "store.zarr")}}


def test_inputs_are_the_config_and_every_existing_path_it_names(tmp_path):
    found = _input_paths(_cfg(tmp_path), tmp_path / "c.toml")
    assert found == {"config": tmp_path / "c.toml", "[data] path": tmp_path / "store.zarr",
                     "[predictor] checkpoint": tmp_path / "p.pt"}


@pytest.mark.parametrize("out, words", [
    ("store.zarr", "--out '{}/store.zarr' is the input [data] path"),
    ("store.zarr/run", "lies inside the input [data] path"),
    ("c.toml", "is the input config"),
])
def test_an_output_that_is_or_lies_inside_an_input_is_refused(tmp_path, out, words):
    cfg = _cfg(tmp_path)
    (tmp_path / "c.toml").write_text("")
    with pytest.raises(UserError) as info:
        check_paths(cfg, tmp_path / "c.toml", tmp_path / out, overwrite=False)
    assert words.format(tmp_path) in str(info.value)


def test_overwrite_may_not_delete_an_input_inside_the_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "p.pt").write_bytes(b"")
    cfg = {"data": {"name": "synthetic"}, "predictor": {"checkpoint": str(run / "p.pt")}}
    check_paths(cfg, None, run, overwrite=False)  # reading a file of a run folder is fine
    with pytest.raises(UserError, match=r"input \[predictor\] checkpoint .* lies inside the run "
                                        r"folder .* that --overwrite replaces"):
        check_paths(cfg, None, run, overwrite=True)
    check_paths(cfg, None, tmp_path / "elsewhere", overwrite=True)
