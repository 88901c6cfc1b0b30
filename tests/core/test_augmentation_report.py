"""mxplain.studies.augmentation_report: the study's summary table, KS tests and output files, on
hand-made draws."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image
from scipy.stats import ks_2samp

from mxplain.studies import augmentation_report as rep

ROWS = [{"generator": g, "m": m, "test_r2": r2, "epochs_run": e, "seconds": 1.0}
        for g, m, r2, e in [("texturevae", 0, 0.5, 10), ("texturevae", 0, 0.7, 20),
                            ("texturevae", 50, 0.8, 30), ("grf", 0, 0.5, 10),
                            ("grf", 0, 0.7, 20), ("grf", 50, 0.1, 12), ("grf", 50, 0.3, 14)]]


def test_summary_per_generator_and_size():
    summary = rep.summarize(ROWS, (50, 0))
    assert [(r["generator"], r["m"], r["draws"]) for r in summary] == [
        ("texturevae", 0, 2), ("texturevae", 50, 1), ("grf", 0, 2), ("grf", 50, 2)]
    first, one, _, last = summary
    assert first["test_r2_mean"] == pytest.approx(0.6)
    assert first["test_r2_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert (first["test_r2_min"], first["test_r2_max"], first["epochs_mean"]) == (0.5, 0.7, 15.0)
    assert one["test_r2_sd"] == 0.0  # a single draw has no spread
    assert last["test_r2_mean"] == pytest.approx(0.2) and last["epochs_mean"] == 13.0


def test_tables_hold_the_summary_numbers():
    summary = rep.summarize(ROWS, (0, 50))
    md = rep.table_markdown(summary).splitlines()
    assert len(md) == 2 + 4 and md[-1] == "| grf | 50 | 0.200 | 0.141 | 0.100 | 0.300 | 2 | 13.0 |"
    rows = list(csv.DictReader(io.StringIO(rep.table_csv(summary))))
    assert [r["generator"] for r in rows] == ["texturevae"] * 2 + ["grf"] * 2
    assert float(rows[0]["test_r2_mean"]) == pytest.approx(0.6) and rows[1]["draws"] == "1"


def test_ks_tests_are_scipys_against_authentic_and_training_labels():
    rng = np.random.default_rng(0)
    authentic, train = rng.normal(0, 1, 60), rng.normal(0, 1, 20)
    pools = {"texturevae": (None, rng.normal(0, 1, 40), {}),
             "grf": (None, rng.normal(3, 0.1, 40), {})}
    ks = rep.ks_tests(authentic, train, pools)
    assert ks["grf"]["ks_vs_authentic"] == pytest.approx(ks_2samp(authentic, pools["grf"][1]).statistic)
    assert ks["texturevae"]["p_vs_train"] == pytest.approx(ks_2samp(train, pools["texturevae"][1]).pvalue)
    assert ks["grf"]["ks_vs_authentic"] > 0.95 > 0.3 > ks["texturevae"]["ks_vs_authentic"]


def test_outputs_are_written_and_the_figures_decode(tmp_path):
    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 255, (4, 16, 16), dtype=np.uint8)
    sets = {k: (tiles, rng.uniform(0, 1, 4)) for k in ("train", "val", "test")}
    pools = {g: (tiles, rng.uniform(0, 1, 4), {}) for g in ("texturevae", "grf")}
    summary = rep.summarize(ROWS, (0, 50))
    props = {f"authentic_{k}": list(sets[k][1]) for k in sets}
    props |= {f"generated_{g}": list(pools[g][1]) for g in pools}
    results = {"config": {"sizes": [0, 50], "n_train": 4, "draws": 2}, "summary": summary,
               "properties": props, "ks": rep.ks_tests(sets["test"][1], sets["train"][1], pools),
               "simulator": {"property_name": "k", "property_units": "1"}}
    rep.write_pools(tmp_path, sets, pools)
    rep.write_outputs(tmp_path, results)
    assert json.loads((tmp_path / "results.json").read_text())["summary"] == summary
    assert (tmp_path / "table.md").read_text() == rep.table_markdown(summary)
    with np.load(tmp_path / "generated.npz") as z:
        assert sorted(z.files) == ["grf_labels", "grf_tiles", "texturevae_labels", "texturevae_tiles"]
        np.testing.assert_array_equal(z["grf_tiles"], tiles)
    assert not (tmp_path / "generated.tmp.npz").exists()
    for name in ("augmentation.png", "augmentation_samples.png"):
        with Image.open(tmp_path / "figures" / name) as im:
            im.load()
            assert im.size[0] > 300
