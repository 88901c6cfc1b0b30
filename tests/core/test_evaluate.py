"""mxplain.evaluate: the predictor scored on every tile of a store (RMSE and MAPE overall and per
lot, the lot means' Pearson r; against each tile's own property where the store has one) and the
two figures of seed 000's supplement B."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mxplain.evaluate import error_metrics, evaluate_predictor, predict_lots, tile_truth_metrics
from mxplain.interfaces import NoLearnedState, Predictor, RunContext


class Grey(NoLearnedState, Predictor):
    """1000 + 200 * a tile's mean grey level."""

    name = "grey"

    def forward(self, tiles):
        return 1000 + 200 * tiles.mean(dim=(1, 2, 3))


def test_error_metrics():
    m = error_metrics(np.array([110.0, 90.0, 100.0]), np.array([100.0, 100.0, 100.0]))
    assert m["rmse"] == pytest.approx(np.sqrt(200 / 3))
    assert m["mape_percent"] == pytest.approx(20 / 3)
    m = error_metrics(np.array([15.0, 900.0]), np.array([10.0, 1000.0]))  # per-tile percentages
    assert m["mape_percent"] == pytest.approx((50 + 10) / 2)


def test_tile_truth_metrics_score_each_tile_against_its_own_property():
    preds = [np.array([1.0, 2.0]), np.array([3.0, 5.0, 4.0])]
    truth = np.array([[1.0, 2.0, np.nan], [3.0, 4.0, np.nan]])  # lot 1's third tile: unknown
    m = tile_truth_metrics(preds, truth)
    assert m["tiles"] == 4 and m["rmse"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 1 / 5) and m["pearson_r"] == pytest.approx(6.5 / np.sqrt(8.75 * 5))
    assert tile_truth_metrics([np.array([1.0, 2.0])], np.array([[3.0, np.nan]])) == {"tiles": 1}
    assert tile_truth_metrics([np.ones(4)], np.full((1, 4), 2.0)) == {"tiles": 4}  # no variance


def test_predict_lots_gives_each_lot_its_tiles_predictions(small_store):
    preds = predict_lots(Grey(), small_store, RunContext(progress=False, batch_size=2))
    assert [len(p) for p in preds] == [4, 3, 5]
    tiles = small_store.tiles(1).astype(np.float64) / 255
    np.testing.assert_allclose(preds[1], 1000 + 200 * tiles.mean((1, 2)), rtol=1e-6)


def test_evaluate_predictor_scores_and_draws(small_store, tmp_path):
    ctx = RunContext(progress=False, out_dir=tmp_path)
    metrics = evaluate_predictor(Grey(), small_store, ctx)
    preds = predict_lots(Grey(), small_store, ctx)
    lot_b = metrics["per_lot"]["b"]
    assert lot_b["measured"] == 1100.0
    assert lot_b["predicted_mean"] == pytest.approx(float(preds[1].mean()), rel=1e-6)
    assert lot_b["predicted_std"] == pytest.approx(float(preds[1].std()), rel=1e-5)
    assert lot_b["rmse"] == pytest.approx(float(np.sqrt(np.mean((preds[1] - 1100) ** 2))), 1e-5)
    errors = np.concatenate([p - m for p, m in zip(preds, (1000.0, 1100.0, 1200.0))])
    assert metrics["all_tiles"]["rmse"] == pytest.approx(float(np.sqrt(np.mean(errors ** 2))), 1e-5)
    means = [p.mean() for p in preds]
    assert metrics["lot_mean_pearson_r"] == pytest.approx(
        float(np.corrcoef(means, [1000, 1100, 1200])[0, 1]), 1e-5)
    assert "per_tile_truth" not in metrics
    for name in ("predictor_per_lot.png", "predictor_rmse_per_lot.png"):
        assert (tmp_path / "figures" / name).read_bytes()[:4] == b"\x89PNG"


def test_without_a_run_folder_no_figure_is_drawn(small_store, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    metrics = evaluate_predictor(Grey(), small_store, RunContext(progress=False))
    assert list(work.iterdir()) == [] and set(metrics["per_lot"]) == {"a", "b", "c"}
    assert torch.is_grad_enabled()  # predict's no_grad does not leak
