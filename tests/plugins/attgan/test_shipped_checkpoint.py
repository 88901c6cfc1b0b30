"""Package-shipped editor checkpoints: ``package:`` references, the export of a trained run (float16
inference state + provenance) and the tile-store content-hash check."""

import json
import re

import pytest
import torch
from attgan_data import make_store, one_thread  # noqa: F401

from mxplain import config as config_mod
from mxplain import resources
from mxplain.errors import UserError
from mxplain.interfaces import RunContext
from mxplain_attgan.editor import AttGANEditor
from mxplain_attgan.export import export_run

TINY = dict(enc_dim=4, dec_dim=4, dis_dim=4, dis_fc_dim=16, n_layers=3, batch_size=8, seed=0,
            g_ema=0.9, dis_sn=True, res_blocks=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("shipped") / "tiles.zarr")


def _run_folder(tmp_path, store, finished: bool = True):
    """A run folder as `mxplain run` leaves it for an editor-only config (tiny editor)."""
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    cfg = {"data": {"name": "store", "path": str(store.path)},
           "editor": {"name": "attgan", **TINY, "epochs": 2}}
    (run / "config.toml").write_text(config_mod.to_toml(config_mod.resolve(cfg)))
    (run / "tiles.zarr").symlink_to(store.path, target_is_directory=True)
    ed = AttGANEditor(**TINY, epochs=2)
    ctx = RunContext(progress=False, training_state_path=run / "models" / "editor.training.pt")
    fit = ed.fit(store, ctx)
    if finished:
        ed.save(run / "models" / "editor.pt")
        (run / "models" / "editor_fit.json").write_text(json.dumps(fit))
    return run, ed


def test_package_references_resolve_through_importlib_resources():
    p = resources.resolve_checkpoint("package:mxplain_attgan/editor.py")
    assert p.is_file() and p.name == "editor.py" and p.parent.name == "mxplain_attgan"
    assert resources.resolve_checkpoint("some/file.pt").as_posix() == "some/file.pt"
    for ref, msg in (("package:no_such_pkg_x/a.pt", "no installed package"),
                     ("package:mxplain_attgan/missing.pt", "ships no file"),
                     ("package:mxplain_attgan", "expected"),
                     ("package:mxplain_attgan/../x.pt", "expected")):
        with pytest.raises(UserError, match=msg):
            resources.resolve_checkpoint(ref)
    # the config keeps package references verbatim (plain paths are made absolute)
    cfg = config_mod.resolve({"data": {"name": "synthetic"},
                              "editor": {"name": "attgan", "checkpoint": "package:pkg/f.pt"}})
    assert cfg["editor"]["checkpoint"] == "package:pkg/f.pt"


def test_export_writes_float16_inference_state_with_provenance(store, tmp_path):
    run, ed = _run_folder(tmp_path, store)
    out = tmp_path / "ship" / "q.pt"
    prov = export_run(run, out, note="test")
    payload = torch.load(out, map_location="cpu", weights_only=True)
    assert payload["provenance"] == payload["state"]["provenance"] == prov
    side = json.loads(out.with_suffix(".json").read_text())
    editor_hash = store.content_hash(include_property=False)  # an editor never sees the property
    assert side["tile_store_content_hash"] == editor_hash == prov["tile_store_content_hash"]
    assert side["tile_store_hash_parts"] == ["lot ids", "attributes", "tiles"]
    assert side["generator_steps"] == len(ed.history_["g_rec"]) and side["finished"]
    for key in ("editor_config", "data_config", "epochs_done", "train_seconds", "device",
                "torch_version", "mxplain_version", "git_commit", "command"):
        assert key in side, key
    assert all(v.dtype == torch.float16 for v in payload["state"]["generator"].values()
               if v.is_floating_point())
    loaded = AttGANEditor.load(out)  # float16 storage -> float32 modules
    assert next(loaded.generator_.parameters()).dtype == torch.float32
    assert loaded.provenance_["tile_store_content_hash"] == editor_hash
    t, a = torch.rand(2, 1, 32, 32), torch.rand(2, 4)
    assert (loaded.edit(t, a) - ed.edit(t, a)).abs().max() < 2e-2  # the EMA weights, rounded
    assert loaded.classify(t).shape == (2, 4)


def test_export_of_a_stopped_run_uses_the_last_epoch(store, tmp_path):
    run, ed = _run_folder(tmp_path, store, finished=False)
    prov = export_run(run, tmp_path / "p.pt")
    assert (prov["epochs_done"], prov["epochs_planned"], prov["finished"]) == (2, 2, False)
    loaded = AttGANEditor.load(tmp_path / "p.pt")
    t, a = torch.rand(2, 1, 32, 32), torch.rand(2, 4)
    assert (loaded.edit(t, a) - ed.edit(t, a)).abs().max() < 2e-2


def test_store_hash_mismatch_is_one_clear_error(store, tmp_path):
    from mxplain.pipeline import run as run_pipeline

    run, _ = _run_folder(tmp_path, store)
    out = tmp_path / "q.pt"
    export_run(run, out)
    assert resources.check_trained_on(out, store, "editor")["command"] == "make quickstart-models"
    other = make_store(tmp_path / "other.zarr", seed=1)
    with pytest.raises(UserError) as err:
        resources.check_trained_on(out, other, "editor")
    msg = str(err.value)
    assert "\n" not in msg and "make quickstart-models" in msg and "another tile store" in msg
    # the same tiles and attributes under the opposite property law: the editor serves it
    flipped = make_store(tmp_path / "flipped.zarr", property_sign=-1.0)
    assert flipped.content_hash() != store.content_hash()
    assert flipped.content_hash(include_property=False) == store.content_hash(include_property=False)
    resources.check_trained_on(out, flipped, "editor")
    cfg = {"data": {"name": "store", "path": str(other.path)},
           "editor": {"name": "attgan", "checkpoint": str(out)}, "run": {"report": False}}
    with pytest.raises(UserError, match=re.escape("retrain it with `make quickstart-models`")):
        run_pipeline(cfg, out=tmp_path / "r", progress=False)
    # the matching store runs with the checkpoint (nothing trains)
    cfg["data"]["path"] = str(store.path)
    folder = run_pipeline(cfg, out=tmp_path / "ok", progress=False)
    m = json.loads((folder / "metrics.json").read_text())["editor"]
    assert m["provenance"]["tile_store_content_hash"] == store.content_hash(include_property=False)
    assert not (folder / "models" / "editor.pt").exists()


def test_export_never_replaces_a_file_it_did_not_write(store, tmp_path):
    from mxplain_attgan.export import main

    run, _ = _run_folder(tmp_path, store)
    mine = tmp_path / "mine.pt"
    mine.write_bytes(b"a user's own file")
    with pytest.raises(UserError, match="not an earlier `make quickstart-models` export"):
        export_run(run, mine)
    assert mine.read_bytes() == b"a user's own file"
    assert not mine.with_suffix(".json").exists() and not (tmp_path / "mine.pt.tmp").exists()
    lone = tmp_path / "lone.json"
    lone.write_text("{}")
    assert main([str(run), "--out", str(tmp_path / "lone.pt")]) == 2
    assert lone.read_text() == "{}" and not (tmp_path / "lone.pt").exists()
    assert main([str(tmp_path / "no-run"), "--out", str(tmp_path / "x.pt")]) == 2
    out = tmp_path / "q.pt"  # an earlier export is replaced, sidecar and all
    first = export_run(run, out, note="first")
    second = export_run(run, out, note="second")
    assert (first["note"], second["note"]) == ("first", "second")
    assert json.loads(out.with_suffix(".json").read_text())["note"] == "second"
    assert torch.load(out, weights_only=True)["provenance"]["note"] == "second"
