"""mxplain.studies.cnn: the augmentation study's small CNN regressor and its dihedral
augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mxplain.studies.cnn import CNNRegressor, SmallCNN, dihedral


def test_small_cnn_has_three_stages_and_one_output_per_tile():
    net = SmallCNN(width=4)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 4, 8, 8, 16, 16]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.features) == 3
    assert net(torch.zeros(5, 1, 32, 32)).shape == (5,)


def test_dihedral_maps_each_tile_to_one_of_its_eight_symmetries():
    x = torch.arange(3 * 16, dtype=torch.float32).reshape(3, 1, 4, 4)
    images = [torch.rot90(x[:1], k, dims=(2, 3)) for k in range(4)]
    images += [torch.flip(t, dims=(3,)) for t in images]
    seen = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        out = dihedral(x, g)
        assert out.shape == x.shape
        for i in range(3):
            assert sorted(out[i].flatten().tolist()) == sorted(x[i].flatten().tolist())
        seen.add(next(k for k, t in enumerate(images) if torch.equal(out[:1], t)))
    assert seen == set(range(8))


def _pore_tiles(n, rng):
    """Tiles with a random dark fraction; the target is that fraction (invariant under flips)."""
    frac = rng.uniform(0.1, 0.9, n)
    tiles = np.where(rng.uniform(0, 1, (n, 16, 16)) < frac[:, None, None], 20, 230).astype(np.uint8)
    return tiles, frac


def test_regressor_learns_a_dihedral_invariant_target_and_is_seeded():
    rng = np.random.default_rng(0)
    (x, y), (xv, yv), (xt, yt) = (_pore_tiles(n, rng) for n in (96, 32, 32))
    params = dict(width=4, epochs=8, patience=3, min_epochs=4, batch_size=16, lr=5e-3, seed=1)
    model = CNNRegressor(**params).fit(x, y, xv, yv)
    pred = model.predict(xt)
    r2 = 1 - np.sum((pred - yt) ** 2) / np.sum((yt - yt.mean()) ** 2)
    assert r2 > 0.8, r2
    assert model.center_ == pytest.approx(y.mean()) and model.scale_ == pytest.approx(y.std())
    assert 1 <= model.best_epoch_ <= model.epochs_run_ == len(model.history_) <= 8
    assert model.history_[model.best_epoch_ - 1] == min(model.history_)
    again = CNNRegressor(**params).fit(x, y, xv, yv)
    np.testing.assert_array_equal(again.predict(xt), pred)
    assert vars(CNNRegressor(**params)) == {**params, "weight_decay": 1e-4}
