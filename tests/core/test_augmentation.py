"""The augmentation study (mxplain.studies.augmentation) at CPU test size."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mxplain import plugins
from mxplain.studies import augmentation as aug


@pytest.fixture(scope="module")
def simulator():
    return plugins.create("dataset", "synthetic").simulator()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("augment") / "study"
    assert aug.main(["--out", str(out), "--quick", "--seed", "3", "--quiet"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_quick_study_writes_table_figure_json(quick_run):
    out, results = quick_run
    for rel in ("table.csv", "table.md", "results.json", "study.json", "generated.npz",
                "figures/augmentation.png", "figures/augmentation_samples.png",
                "models/texturevae.pt"):
        assert (out / rel).is_file(), rel
    assert json.loads((out / "study.json").read_text())["status"] == "done"
    # 2 generators x 2 sizes, 2 draws each; M = 0 is one training per draw shared by both
    assert [(r["generator"], r["m"], r["draws"]) for r in results["summary"]] == [
        ("texturevae", 0, 2), ("texturevae", 8, 2), ("grf", 0, 2), ("grf", 8, 2)]
    zero = {g: [r["test_r2"] for r in results["draws"] if r["generator"] == g and r["m"] == 0]
            for g in aug.GENERATORS}
    assert zero["texturevae"] == zero["grf"]
    assert all(np.isfinite(r["test_r2"]) for r in results["draws"])
    lines = (out / "table.csv").read_text().strip().splitlines()
    assert lines[0].startswith("generator,m,test_r2_mean") and len(lines) == 5
    assert (out / "table.md").read_text().count("\n| grf |") == 2
    assert set(results["ks"]) == {"texturevae", "grf"}
    for ks in results["ks"].values():
        assert 0.0 <= ks["ks_vs_authentic"] <= 1.0 and 0.0 <= ks["p_vs_authentic"] <= 1.0
    assert results["editor"]["train_seconds"] > 0 and results["wall_seconds"] > 0
    assert results["config"]["sizes"] == [0, 8] and results["config"]["pool"] == 8
    assert results["config"]["seed"] == 3 and results["seeds"]["dataset_seeds"]["test"] == 3003


def test_generated_labels_are_the_simulators(quick_run, simulator):
    out, results = quick_run
    pools = np.load(out / "generated.npz")
    for gen in aug.GENERATORS:
        tiles = pools[f"{gen}_tiles"]
        assert tiles.shape == (8, 32, 32) and tiles.dtype == np.uint8
        np.testing.assert_array_equal(pools[f"{gen}_labels"], simulator.simulate(tiles))
        np.testing.assert_array_equal(results["properties"][f"generated_{gen}"],
                                      simulator.simulate(tiles))


def test_ks_statistic_is_scipys(quick_run):
    from scipy.stats import ks_2samp

    _out, results = quick_run
    p = results["properties"]
    authentic = np.concatenate([p["authentic_train"], p["authentic_val"], p["authentic_test"]])
    for gen in aug.GENERATORS:
        expect = ks_2samp(authentic, p[f"generated_{gen}"]).statistic
        assert results["ks"][gen]["ks_vs_authentic"] == pytest.approx(expect)


def test_same_seed_same_pools_and_r2(quick_run):
    """The saved editor and the seed give the same generated tiles; a CNN draw is repeatable."""
    from mxplain.store import TileStore

    out, results = quick_run
    cfg = aug.quick_config(seed=3)
    editor = plugins.get("editor", "texturevae").load(out / "models" / "texturevae.pt")
    dataset = plugins.create("dataset", "synthetic")
    sets = {k: aug._store_tiles(TileStore.open(out / "stores" / f"{k}.zarr"))
            for k in ("train", "val", "test")}
    pools = aug.generate_pools(cfg, editor, dataset.simulator(), sets["train"])
    saved = np.load(out / "generated.npz")
    for gen in aug.GENERATORS:
        np.testing.assert_array_equal(pools[gen][0], saved[f"{gen}_tiles"])
    idx = aug.draw_indices(cfg, "grf", 8, 1)
    np.testing.assert_array_equal(idx, np.arange(8))  # M = pool: the whole pool
    x = np.concatenate([sets["train"][0], pools["grf"][0][idx]])
    y = np.concatenate([sets["train"][1], pools["grf"][1][idx]])
    again = aug.train_once(cfg, x, y, sets["val"][:2], sets["test"][:2], draw=1)
    first = next(r for r in results["draws"] if r["generator"] == "grf" and r["m"] == 8
                 and r["draw"] == 1)
    assert again["test_r2"] == first["test_r2"] and again["epochs_run"] == first["epochs_run"]


def test_rerun_in_its_own_folder_loads_the_editor_and_repeats(quick_run):
    out, first = quick_run
    (out / "notes.txt").write_text("mine")
    assert aug.main(["--out", str(out), "--quick", "--seed", "3", "--quiet"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["editor"]["loaded_from"].endswith("texturevae.pt")
    assert again["editor"]["train_seconds"] == first["editor"]["train_seconds"]
    assert [r["test_r2"] for r in again["draws"]] == [r["test_r2"] for r in first["draws"]]
    assert again["properties"] == first["properties"]
    assert (out / "notes.txt").read_text() == "mine"


def test_draws_differ_below_the_pool_and_are_seeded():
    cfg = aug.StudyConfig(sizes=(0, 50, 1000), draws=3)
    a = aug.draw_indices(cfg, "texturevae", 50, 0)
    assert len(a) == 50 and len(np.unique(a)) == 50 and a.max() < 1000
    np.testing.assert_array_equal(a, aug.draw_indices(cfg, "texturevae", 50, 0))
    assert not np.array_equal(a, aug.draw_indices(cfg, "texturevae", 50, 1))
    assert not np.array_equal(a, aug.draw_indices(cfg, "grf", 50, 0))


@pytest.mark.parametrize("args, words", [
    (["--draws", "0"], "draws"),
    (["--sizes", "0,a"], "--sizes"),
    (["--sizes", "50,100"], "including 0"),
    (["--vae-epochs", "0"], "epochs"),
    (["--seed", "-1"], "seed"),
])
def test_bad_arguments_exit_2_before_anything(tmp_path, capsys, args, words):
    out = tmp_path / "study"
    assert aug.main(["--out", str(out), "--quick", "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0]
    assert not out.exists()


def test_foreign_folder_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert aug.main(["--out", str(out), "--quick", "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"
    assert aug.main(["--quiet"]) == 2  # --out is required
    assert "error:" in capsys.readouterr().err


def test_study_imports_no_plugin():
    code = ("import sys, mxplain.studies.augmentation, mxplain.studies.augmentation_report, "
            "mxplain.studies.generators, mxplain.studies.cnn; "
            "print([m for m in sys.modules if m.startswith('mxplain_')])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
