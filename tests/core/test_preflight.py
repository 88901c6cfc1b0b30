"""mxplain.preflight: a resolved config checked against the machine and the files it names before
anything is written (explainers' needs, checkpoints, memory and disk, the scheduler address). The
same refusals through ``mxplain run``: test_bad_input.py."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from tiny_run import DATA, MODELS

from mxplain import config, preflight
from mxplain.checkpoint import FORMAT, save_atomic
from mxplain.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def resolved(text: str) -> dict:
    return config.resolve(tomllib.loads(text))


def test_sizes_in_words_and_the_machine(monkeypatch):
    assert (preflight.gib(512), preflight.gib(3 * 2 ** 20), preflight.gib(2.5 * 2 ** 30),
            preflight.gib(1.5 * 2 ** 40)) == ("0.5 KiB", "3.0 MiB", "2.5 GiB", "1.5 TiB")
    assert preflight.host_memory() > 2 ** 28
    assert preflight.device_memory("cpu") == (preflight.host_memory(), "this machine")
    asked = []
    usage = shutil.disk_usage(Path(__file__).parent)
    monkeypatch.setattr(preflight.shutil, "disk_usage",
                        lambda p: asked.append(p) or usage._replace(free=12345))
    free, at = preflight.free_disk(Path(__file__).parent / "no" / "such" / "dir")
    assert (free, at, asked) == (12345, Path(__file__).parent, [Path(__file__).parent])


def test_the_data_shape_comes_from_the_dataset_before_it_is_built():
    shape = preflight.data_shape(resolved(DATA))
    assert (shape.n_lots, shape.n_tiles, shape.tile_size) == (4, 24, 32)
    assert tuple(shape.attributes) == ("size", "porosity", "polydispersity", "facetness")


def test_what_explainers_need_is_checked_against_the_config():
    cfg = resolved(DATA + MODELS + "[explain.forward]\nsteps = 3\n")
    assert preflight.unsupported(cfg) == {}
    del cfg["editor"]
    why = preflight.unsupported(cfg)
    assert list(why) == ["forward"] and why["forward"].startswith("needs an [editor]")
    with pytest.raises(UserError, match=r"c.toml: \[explain.forward\] needs an \[editor\]; remove "
                                        r"\[explain.forward\] or set \[run\] on_unsupported"):
        preflight.check_requirements(cfg, "c.toml")
    cfg["run"]["on_unsupported"] = "skip"
    assert preflight.check_requirements(cfg) == why


def _footprint_cfg(monkeypatch, memory=None, disk=None):
    if memory is not None:
        monkeypatch.setattr(preflight, "host_memory", lambda: memory)
        monkeypatch.setattr(preflight, "device_memory", lambda spec: (memory, "this machine"))
    if disk is not None:
        monkeypatch.setattr(preflight, "free_disk", lambda out: (disk, Path("/disk")))
    return resolved(DATA + MODELS)


def test_sizes_that_cannot_fit_name_their_keys(tmp_path, monkeypatch):
    preflight.check_sizes(_footprint_cfg(monkeypatch), tmp_path, "cpu")  # fits this machine
    with pytest.raises(UserError, match=r"c.toml: \[data\] n_lots = 4, tiles_per_lot = 6, "
                                        r"tile_size = 32: .* on disk, '/disk' has 1.0 KiB free"):
        preflight.check_sizes(_footprint_cfg(monkeypatch, disk=1024), tmp_path, "cpu",
                              where="c.toml")
    preflight.check_sizes(_footprint_cfg(monkeypatch, disk=1024), tmp_path, "cpu",
                          check_disk=False)  # --resume: the data is on disk already
    with pytest.raises(UserError, match="of memory, this machine has 1.0 MiB; lower these values"):
        preflight.check_sizes(_footprint_cfg(monkeypatch, memory=2 ** 20, disk=2 ** 40), tmp_path,
                              "cpu")


def test_small_configs_fit_a_small_machine(monkeypatch, tmp_path):
    """The estimates are rough, not pessimistic: the CPU configs fit 4 GiB of memory."""
    monkeypatch.setattr(preflight, "host_memory", lambda: 4 * 2 ** 30)
    monkeypatch.setattr(preflight, "device_memory", lambda spec: (4 * 2 ** 30, "a small GPU"))
    root = Path(__file__).resolve().parents[2]
    for path in (None, root / "examples/texturevae.toml", root / "examples/texture_rf.toml"):
        preflight.check_sizes(config.load(path), tmp_path, "cpu")


def test_check_disk_says_how_much_and_where(tmp_path):
    preflight.check_disk(1, tmp_path, "the cube")
    with pytest.raises(UserError, match=r"the cube would need ~1.0 TiB on disk, .* free; hint$"):
        preflight.check_disk(2 ** 50 // 1024, tmp_path, "the cube", "; hint")


def _checkpoint(path, kind="editor", name="attgan", **state):
    save_atomic({"format": FORMAT, "kind": kind, "name": name, "params": {}, "state": state}, path)
    return path


def _with_editor(ckpt):
    return resolved(DATA + f'[editor]\nname = "attgan"\ncheckpoint = "{ckpt}"\n')


def test_checkpoints_of_another_kind_size_or_attributes_are_refused(tmp_path):
    attrs = ["size", "porosity", "polydispersity", "facetness"]
    preflight.check_checkpoints(_with_editor(_checkpoint(tmp_path / "ok.pt", tile_size=32,
                                                         attributes=attrs)))
    cases = [(_checkpoint(tmp_path / "p.pt", kind="predictor", name="wideresnet"),
              "holds a predictor 'wideresnet', not the editor 'attgan' of [editor]"),
             (_checkpoint(tmp_path / "64.pt", tile_size=64),
              "was trained on 64 px tiles, the data's are 32 px"),
             (_checkpoint(tmp_path / "a.pt", attributes=["size"]),
              "edits the attributes ['size'], the data's are ['size', 'porosity'")]
    for ckpt, words in cases:
        with pytest.raises(UserError) as info:
            preflight.check_checkpoints(_with_editor(ckpt), "c.toml")
        assert str(info.value).startswith(f"c.toml: [editor] checkpoint {str(ckpt)!r}")
        assert words in str(info.value)
    cfg = _with_editor(tmp_path / "ok.pt")
    (tmp_path / "ok.pt").unlink()
    with pytest.raises(UserError, match="does not exist"):
        preflight.check_checkpoints(cfg)


@pytest.mark.parametrize("address", ["not a url", "tcp://host-without-port", "zmq://x:1"])
def test_a_scheduler_address_that_does_not_parse_is_refused(address):
    with pytest.raises(UserError, match=f"cannot reach the Dask scheduler {address!r}: "):
        preflight.check_scheduler(address)


def test_addresses_that_parse_and_no_scheduler_pass():
    preflight.check_scheduler(None)
    preflight.check_scheduler("tcp://127.0.0.1:8786")
    preflight.check_scheduler("inproc://worker")
