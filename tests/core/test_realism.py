"""mxplain.realism: the classifier two-sample test of editor realism, on editors whose output is
known: the identity (an exact null: AUC about 0.5), a blur and a faint checkerboard (AUC near 1).
32 px tiles of blobby "crystals" whose size follows the lot's first attribute; one thread."""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from mxplain import editor_eval, realism
from mxplain.errors import UserError
from mxplain.interfaces import Dataset, Editor, NoLearnedState
from mxplain.store import LotTable, TileStore

ATTRS = ("size", "porosity")
N_LOTS, PER_LOT, SIZE = 8, 28, 32
N_CLASS = 96  # tiles per class: 48 per class in each fold's training half, 96 scored


def _tiles(a: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Bright blobs on a dark background: blob scale from a[0], dark pits from a[1], pixel noise."""
    out = []
    for _ in range(n):
        field = ndi.gaussian_filter(rng.normal(0, 1, (SIZE, SIZE)), 1.0 + 2.0 * a[0], mode="wrap")
        img = np.where(field > 0, 0.75, 0.15) + rng.normal(0, 0.03, (SIZE, SIZE))
        img[rng.random((SIZE, SIZE)) < 0.02 * a[1]] = 0.05
        out.append(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    vals = np.stack([rng.permutation((np.arange(N_LOTS) + 0.5) / N_LOTS) for _ in ATTRS], 1)
    path = tmp_path_factory.mktemp("realism") / "tiles.zarr"
    table = LotTable([f"L{i}" for i in range(N_LOTS)], ATTRS, vals, np.arange(N_LOTS, dtype=float))
    TileStore.create(path, table, [PER_LOT] * N_LOTS, SIZE)
    for i in range(N_LOTS):
        TileStore.write_lot(path, i, _tiles(vals[i], PER_LOT, rng), PER_LOT)
    TileStore.mark_complete(path)
    return TileStore.open(path)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Identity(NoLearnedState, Editor):
    name = "identity"
    attributes = ATTRS

    def encode(self, tiles):
        return tiles

    def decode(self, latent, attributes):
        return latent + 0.0 * attributes.sum()


class Blur(Identity):
    name = "blur"

    def decode(self, latent, attributes):
        k = torch.ones(1, 1, 3, 3) / 9.0
        return torch.nn.functional.conv2d(torch.nn.functional.pad(latent, (1, 1, 1, 1),
                                                                  mode="replicate"), k)


class Checkerboard(Identity):
    name = "checkerboard"

    def decode(self, latent, attributes):
        h = latent.shape[-1]
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij")
        return (latent + 0.04 * (((yy + xx) % 2) * 2.0 - 1.0)).clamp(0, 1)


@pytest.fixture(scope="module")
def identity_result(store):
    return realism.realism_test(Identity(), store, n_per_class=N_CLASS, seed=0)


def test_identity_editor_is_indistinguishable(identity_result):
    r = identity_result
    for key in ("reconstruction", "edits"):
        t = r[key]
        # an exact null; 0.15 is about 3 standard errors of a 2-fold AUC of 48 vs 48 tiles per fold
        assert abs(t["auc"] - 0.5) < 0.15, t
        lo, hi = t["auc_ci"]
        assert lo <= t["auc"] <= hi and hi - lo < 0.4
        assert t["n_train"] == N_CLASS // 2 and t["n_test"] == N_CLASS
        assert len(t["auc_folds"]) == 2
    assert set(r["edits"]["by_attribute"]) == set(ATTRS)
    p = r["protocol"]
    assert p["delta"] == 0.35 and p["seed"] == 0 and p["seconds"] > 0
    halves = [set(h) for h in p["lot_halves"]]
    assert not halves[0] & halves[1] and len(halves[0] | halves[1]) == N_LOTS
    json.dumps(r)  # metrics.json material


@pytest.mark.parametrize("editor", [Blur(), Checkerboard()], ids=lambda e: e.name)
def test_artefacts_are_told_apart(store, editor):
    r = realism.realism_test(editor, store, n_per_class=N_CLASS, seed=0)
    for key in ("reconstruction", "edits"):
        assert r[key]["auc"] > 0.9, (key, r[key])
        assert r[key]["auc_ci"][0] > 0.75


def test_same_seed_same_result(store, identity_result):
    again = realism.realism_test(Identity(), store, n_per_class=N_CLASS, seed=0)
    for key in ("reconstruction", "edits"):
        assert again[key] == identity_result[key]
    other = realism.realism_test(Identity(), store, n_per_class=N_CLASS, seed=1)
    assert other["protocol"]["lot_halves"] != identity_result["protocol"]["lot_halves"]


def test_sides_are_disjoint_and_balanced(store):
    s = realism.sample_sides(store, N_CLASS, seed=0)
    assert s.edited.sum() == (~s.edited).sum() == N_CLASS
    for i in range(N_LOTS):  # same number of real and edited tiles in every lot
        in_lot = s.lot_idx == i
        assert (s.edited & in_lot).sum() == (~s.edited & in_lot).sum()
        assert len(set(s.group[in_lot])) == 1  # a lot lies in one half
    keys = {t.tobytes() for t in s.tiles}
    assert len(keys) == len(s.tiles)  # no tile on both sides
    assert realism.sample_sides(store, N_CLASS * 10, seed=0).edited.sum() == N_LOTS * PER_LOT // 2


def test_edit_targets_move_one_attribute_by_delta():
    a0 = np.array([[0.05, 0.5], [0.95, 0.2], [0.5, 0.5], [0.3, 0.9]] * 25)
    a, j = realism.edit_targets(a0, 0.35, seed=0)
    change = a - a0
    assert np.all((np.abs(change) > 1e-6).sum(axis=1) == 1)
    assert np.allclose(np.abs(change[np.arange(len(a0)), j]), 0.35, atol=1e-6)
    assert a.min() >= 0 and a.max() <= 1
    assert set(np.unique(j)) == {0, 1}
    assert np.array_equal(realism.edit_targets(a0, 0.35, seed=0)[0], a)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_per_class": -1}, "n_per_class = -1"),
    ({"n_per_class": 2.5}, "n_per_class = 2.5"),
    ({"delta": 0.8}, "delta = 0.8"),
    ({"delta": 0}, "delta = 0"),
    ({"epochs": 0}, "epochs = 0"),
])
def test_bad_options_are_one_user_error_line(store, kwargs, match):
    with pytest.raises(UserError, match=match) as exc:
        realism.realism_test(Identity(), store, **kwargs)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("value", [-3, "many", True, 1.5])
def test_bad_config_value_is_one_user_error_line(value):
    with pytest.raises(UserError, match=r"\[run\] editor_realism_tiles") as exc:
        realism.check_tiles(value)
    assert "\n" not in str(exc.value)
    assert realism.check_tiles(0) == 0 and realism.check_tiles(512) == 512


def test_off_and_too_few_lots(store, tmp_path):
    assert "skipped" in realism.realism_test(Identity(), store, n_per_class=0)
    table = LotTable(["a"], ATTRS, np.array([[0.5, 0.5]]), np.array([1.0]))
    TileStore.create(tmp_path / "one.zarr", table, [4], SIZE)
    TileStore.write_lot(tmp_path / "one.zarr", 0, np.zeros((4, SIZE, SIZE), np.uint8), 4)
    TileStore.mark_complete(tmp_path / "one.zarr")
    one = TileStore.open(tmp_path / "one.zarr")
    assert "2 lots" in realism.realism_test(Identity(), one, n_per_class=8)["skipped"]


def test_dataset_has_no_reference_editor_by_default(store):
    class Plain(Dataset):
        name = "plain"

        def build(self, path, ctx, resume=False):
            return store

    assert Plain().reference_editor(store) is None


def test_figure_and_report_section(identity_result, tmp_path):
    import matplotlib.image as mpimg

    from mxplain.report import _realism_section

    p = editor_eval.fidelity_figure(None, tmp_path / "f.png", realism=identity_result,
                                    realism_ceiling=identity_result)
    assert mpimg.imread(p).shape[1] > 300
    html = _realism_section({"editor": {"evaluation": {
        "realism": identity_result, "realism_ceiling": {"skipped": "<none> & co"}}}})
    assert html.count("<tr>") == 4 and "&lt;none&gt; &amp; co" in html
    assert f"{identity_result['edits']['auc']:.3f}" in html
    assert _realism_section({}) == ""


@pytest.mark.parametrize("value", ["-2", '"many"', "1.5"])
def test_bad_config_value_through_the_cli(tmp_path, capsys, value):
    from mxplain.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nname = "synthetic"\nn_lots = 2\ntiles_per_lot = 2\ntile_size = 32\n'
                   f"[run]\neditor_realism_tiles = {value}\n")
    code = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--quiet"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert "editor_realism_tiles" in err[0]
    assert not (tmp_path / "run" / "tiles.zarr").exists()  # refused before any data is built
