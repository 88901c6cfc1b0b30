"""TextureVAE editor: losses on known inputs, shapes, training, the attribute probe, save/load."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mxplain.errors import UserError
from mxplain.interfaces import RunContext
from mxplain_texturevae.editor import TextureVAEEditor
from mxplain_texturevae.model import (
    Decoder,
    gram,
    kl_divergence,
    layer_style_loss,
    sliding_patches,
    style_loss,
)
from mxplain_texturevae.quality import (
    gram_similarity,
    texture_scores,
    traversal,
)

TINY = {"latent_dim": 8, "dec_dim": 4, "batch_size": 3, "lr": 3e-3, "figures": False}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mxplain import plugins

    root = tmp_path_factory.mktemp("tvae")
    ctx = RunContext(out_dir=root, progress=False)
    return plugins.create("dataset", "synthetic", n_lots=6, tiles_per_lot=3, tile_size=32,
                          seed=3).build(root / "tiles.zarr", ctx)


@pytest.fixture(scope="module")
def fitted(store, tmp_path_factory):
    ctx = RunContext(out_dir=tmp_path_factory.mktemp("fit"), progress=False)
    ed = TextureVAEEditor(epochs=4, **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = ed.fit(store, ctx)
    return ed, metrics


# ---- losses on known inputs ---------------------------------------------------------------------
def test_gram_of_constant_image():
    f = torch.full((1, 2, 3, 3), 2.0)
    assert torch.allclose(gram(f), torch.full((1, 2, 2), 4.0 * 9))


def test_style_loss_known_values():
    f = torch.ones(1, 1, 2, 2)  # G = 4, C = 1, M = 4
    assert float(layer_style_loss(f, gram(f))[0]) == 0.0
    # (4 - 0)^2 / (4 * 1^2 * 4^2) = 0.25
    assert math.isclose(float(layer_style_loss(f, torch.zeros(1, 1, 1))[0]), 0.25)
    total, per = style_loss({"a": f, "b": 2 * f}, {"a": torch.zeros(1, 1, 1),
                                                  "b": torch.zeros(1, 1, 1)}, {"a": 1.0, "b": 0.5})
    # layer b: G = 16 -> 256 / 64 = 4; total = 0.25 + 0.5 * 4
    assert math.isclose(float(per["b"]), 4.0) and math.isclose(float(total), 2.25)


def test_kl_known_values():
    assert float(kl_divergence(torch.zeros(1, 3), torch.zeros(1, 3))[0]) == 0.0
    # 0.5 * (mu^2 + e^lv - 1 - lv) summed: mu = 1, lv = 0 -> 0.5 per dim
    assert math.isclose(float(kl_divergence(torch.ones(1, 2), torch.zeros(1, 2))[0]), 1.0)
    lv = torch.tensor([[math.log(2.0)]])
    assert math.isclose(float(kl_divergence(torch.zeros(1, 1), lv)[0]),
                        0.5 * (2.0 - 1.0 - math.log(2.0)), rel_tol=1e-6)


def test_sliding_patches_cover_the_tile():
    x = torch.arange(64 * 64, dtype=torch.float32).view(1, 1, 64, 64)
    p = sliding_patches(x, 32, 20)  # windows at 0, 20 and the border 32 -> 3 x 3
    assert p.shape == (9, 1, 32, 32)
    assert torch.equal(p[0], x[0, :, :32, :32]) and torch.equal(p[-1], x[0, :, 32:, 32:])
    assert sliding_patches(x, 64, 50).shape == (1, 1, 64, 64)


def test_decoder_shapes_and_range():
    torch.manual_seed(0)
    dec = Decoder(latent_dim=5, out_size=32, dec_dim=2)
    z = torch.randn(3, 5) * 10
    y = dec(z)
    assert y.shape == (3, 1, 32, 32) and y.min() >= 0 and y.max() <= 1
    assert dec(z, size=64).shape == (3, 1, 64, 64)
    # four upsampling blocks, each conv 3x3 then nearest x2 then LeakyReLU(0.3)
    ups = [m for m in dec.blocks if isinstance(m, torch.nn.Upsample)]
    acts = [m for m in dec.blocks if isinstance(m, torch.nn.LeakyReLU)]
    assert len(ups) == 4 and all(a.negative_slope == 0.3 for a in acts)


# ---- the trained editor -------------------------------------------------------------------------
def test_training_lowers_loss(fitted):
    ed, metrics = fitted
    assert len(ed.history_["loss"]) == 4
    # deterministic loss (z = mu) on the same 16 patches before and after training
    assert metrics["eval_loss_final"]["loss"] < 0.85 * metrics["eval_loss_initial"]["loss"]
    assert metrics["patches"] == 18 and metrics["vgg"].startswith("random:")


def test_encode_decode_shapes_and_determinism(fitted, store):
    ed, _ = fitted
    lot = store.lot(2)
    x = lot.tiles[:3]
    a = torch.as_tensor(np.tile(lot.attributes, (3, 1)))
    with torch.no_grad():
        z = ed.encode(x)
        assert z.shape == (3, 8)
        y = ed.decode(z, a)
        assert y.shape == x.shape and y.dtype == torch.float32
        assert y.min() >= 0 and y.max() <= 1
        assert torch.equal(y, ed.edit(x, a)) and torch.equal(z, ed.encode(x))


def test_probe_edit_reaches_requested_attributes(fitted, store):
    ed, metrics = fitted
    assert metrics["probe"]["rank"] == 4
    x = torch.cat([store.lot(0).tiles, store.lot(1).tiles[:1]])
    target = torch.tensor([[0.0, 1.0, 0.5, 0.2], [1.0, 0.0, 0.3, 0.9],
                           [0.5, 0.5, 0.5, 0.5], [0.1, 0.8, 1.0, 0.0]])
    with torch.no_grad():
        z = ed.encode(x)
        z2 = ed.shift(z, target)
        assert torch.allclose(ed.probe_attributes(z2), target, atol=1e-4)
        # minimum norm: the move lies in the row space of W (orthogonal to its null space)
        null = torch.linalg.svd(ed.probe_w_, full_matrices=True).Vh[4:]
        assert torch.allclose((z2 - z) @ null.T, torch.zeros(4, 4), atol=1e-4)


def test_differentiable_wrt_attributes(fitted, store):
    ed, _ = fitted
    x = store.lot(1).tiles[:2]
    a = torch.full((2, 4), 0.5, requires_grad=True)
    ed.decode(ed.encode(x), a).mean().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_save_load_exact(fitted, store, tmp_path):
    ed, _ = fitted
    ed.save(tmp_path / "e.pt")
    state = torch.load(tmp_path / "e.pt", weights_only=True)
    assert "vgg" not in state["state"]  # random-filter VGG is re-created from its seed
    f = TextureVAEEditor.load(tmp_path / "e.pt")
    x = store.lot(3).tiles[:2]
    a = torch.rand(2, 4)
    with torch.no_grad():
        assert torch.equal(f.edit(x, a), ed.edit(x, a))
        assert torch.equal(f.sample(3, seed=1), ed.sample(3, seed=1))


def test_traversal_sets_one_dimension(fitted, store):
    ed, _ = fitted
    tile = store.lot(0).tiles[0]
    vals = np.linspace(-4, 4, 10)
    imgs = traversal(ed, tile, 3, vals)
    assert imgs.shape == (10, 1, 32, 32)
    with torch.no_grad():
        z = ed.encode(tile[None]).repeat(10, 1)
        z[:, 3] = torch.as_tensor(vals, dtype=torch.float32)
        assert torch.allclose(imgs, ed.generate(z))
    assert not torch.allclose(imgs[0], imgs[-1])


def test_gram_similarity_and_scores(fitted, store):
    ed, metrics = fitted
    x = store.lot(0).tiles[:2]
    s = gram_similarity(ed.vgg_, x, x)
    assert torch.allclose(s, torch.ones(2), atol=1e-6)
    assert float(gram_similarity(ed.vgg_, x, torch.zeros_like(x) + 0.5)[0]) < 0.9
    t = metrics["texture"]
    assert 0 <= t["reconstruction"] <= 1 and t["tiles"] == 18
    xs = torch.cat([store.lot(i).tiles for i in range(6)])
    again = texture_scores(ed, xs, n_tiles=18, seed=ed.seed, lots=np.repeat(np.arange(6), 3))
    assert math.isclose(again["reconstruction"], t["reconstruction"], rel_tol=1e-5)


def test_structure_property_tables_from_an_editor(fitted, store):
    from mxplain_texturevae.study import structure_property

    ed, _ = fitted
    sp = structure_property(store, editor=ed, max_tiles_per_lot=3, cv_folds=2,
                            alphas=[0.1, 1.0], gammas=[1.0], svr_c=[1.0])
    assert sp["tiles"] == 18 and sp["n_train"] + sp["n_val"] == 18
    rows = {(r["features"], r["regression"]): r for r in sp["rows"]}
    assert rows[("texturevae", "rbf")]["n_features"] == ed.latent_dim
    assert rows[("vgg19", "svr")]["n_features"] == 512
    assert all(r["leave_one_lot_out"]["lot_mape"] >= 0 for r in sp["rows"])


def test_bad_parameters_are_user_errors(store):
    ctx = RunContext(progress=False)
    for bad in ({"latent_dim": 0}, {"probe": "lasso"}, {"patch_size": 40},
                {"style_weights": [1.0, 2.0]}, {"style_weights": {"pool9": 1.0}}):
        with pytest.raises(UserError):
            TextureVAEEditor(**{**TINY, **bad}).fit(store, ctx)


def test_untrained_editor_is_a_user_error():
    with pytest.raises(UserError, match="not trained"):
        TextureVAEEditor().encode(torch.zeros(1, 1, 32, 32))


def test_figures_written(fitted, store, tmp_path):
    from mxplain_texturevae.quality import save_figures

    ed, _ = fitted
    xs = torch.cat([store.lot(i).tiles for i in range(6)])
    paths = save_figures(ed, xs, tmp_path, n=4)
    assert all(Path(p).is_file() for p in paths) and len(paths) == 5


# ---- per-epoch training checkpoints -------------------------------------------------------------
class _Interrupt(Exception):
    pass


@pytest.fixture
def one_thread():
    """Tiny convolutions gain nothing from more threads, and crawl with them on a busy CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_killed_training_resumes_bit_identically(store, tmp_path, monkeypatch, one_thread):
    from mxplain.training import TrainingCheckpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = TextureVAEEditor(epochs=2, **TINY)
        ref_m = ref.fit(store, RunContext(progress=False))
        ctx = RunContext(progress=False, training_state_path=tmp_path / "e.training.pt")
        save, saved = TrainingCheckpoint.save, []

        def save_then_stop(self, e, extra=None):
            save(self, e, extra)
            saved.append(e)
            if e == 1:
                raise _Interrupt

        with monkeypatch.context() as mp:
            mp.setattr(TrainingCheckpoint, "save", save_then_stop)
            with pytest.raises(_Interrupt):
                TextureVAEEditor(epochs=2, **TINY).fit(store, ctx)
            torch.manual_seed(42)  # a new process: other global random states
            got = TextureVAEEditor(epochs=2, **TINY)
            got_m = got.fit(store, ctx)
    assert saved == [1, 2]  # the resumed fit ran epoch 2 only
    a, b = ref.state_dict(), got.state_dict()
    for part in ("heads", "decoder"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert torch.equal(a["probe_w"], b["probe_w"])
    assert ref.history_ == got.history_ and ref_m["eval_loss_final"] == got_m["eval_loss_final"]


def test_nan_loss_is_a_one_line_user_error(store, tmp_path, monkeypatch, one_thread):
    import mxplain_texturevae.train as tv

    real = tv.style_loss
    monkeypatch.setattr(tv, "style_loss", lambda *a: (real(*a)[0] * float("nan"), None))
    ctx = RunContext(progress=False, training_state_path=tmp_path / "e.training.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match=r"^texturevae: training loss is NaN at epoch 1, step 1; "
                                            r"lower \[editor\] lr .*no good checkpoint yet"):
            TextureVAEEditor(epochs=2, **TINY).fit(store, ctx)
