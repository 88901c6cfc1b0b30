"""Tests of the WideResNet regressor plugin (tiny models, 32-64 px tiles, fixed seeds)."""

from __future__ import annotations

import pathlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mxplain import RunContext, plugins
from mxplain.checkpoint import read_checkpoint, save_component
from mxplain.errors import UserError
from mxplain_wideresnet.model import WideResNet
from mxplain_wideresnet.predictor import WideResNetPredictor, augment_batch

sys.path.insert(0, str(Path(__file__).parent))
from blobs import make_store  # noqa: E402

CTX = RunContext(progress=False, batch_size=64)
TINY = dict(depth=10, widen=1, batch_size=16, lr=2e-3, seed=0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny convolutions gain nothing from more and suffer on a busy CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("wrn") / "tiles.zarr", n_lots=6, tiles_per_lot=16,
                      tile_size=32, seed=0, ragged=True)


@pytest.fixture(scope="module")
def fitted(store):
    p = WideResNetPredictor(epochs=10, patience=10, **TINY)
    metrics = p.fit(store, CTX)
    return p, metrics


def all_tiles(store):
    from mxplain.store import to_tensor

    tiles, lots = store.all_tiles()
    return to_tensor(tiles), store.properties[lots]


# ---- architecture -------------------------------------------------------------------------------
@pytest.mark.parametrize("depth,widen,n_params", [(10, 1, 76977), (16, 2, 690225)])
@pytest.mark.parametrize("size", [32, 48, 64])
def test_shapes_for_tile_sizes_and_depths(depth, widen, n_params, size):
    torch.manual_seed(0)
    m = WideResNet(depth, widen).eval()
    assert sum(p.numel() for p in m.parameters()) == n_params
    assert len(m.block3) == (depth - 4) // 6
    assert m.block3[-1].conv2.out_channels == 64 * widen
    out = m(torch.rand(3, 1, size, size))
    assert out.shape == (3,) and out.dtype == torch.float32


def test_wrn_28_1_is_the_papers_size():
    m = WideResNet(28, 1)
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d) and c.kernel_size == (3, 3)]
    assert len(convs) == 25  # 1 stem + 3 groups x 4 blocks x 2 (+ 3 shortcuts = 28 layers)
    assert sum(p.numel() for p in m.parameters()) == 368625


def test_bad_depth_is_a_user_error(store):
    with pytest.raises(ValueError, match="6n\\+4"):
        WideResNet(12, 1)
    with pytest.raises(UserError, match="depth"):
        WideResNetPredictor(depth=12).fit(store, CTX)
    with pytest.raises(UserError, match="split must be one of tile, lots"):
        WideResNetPredictor(split="lot").fit(store, CTX)
    with pytest.raises(UserError, match="lr_schedule"):
        WideResNetPredictor(lr_schedule="step").fit(store, CTX)


def test_output_in_physical_range_and_standardization():
    m = WideResNet(10, 1).eval()
    m.set_target_range(2150.0, 300.0)
    with torch.no_grad():
        m.fc.weight.mul_(1e4)  # drive tanh into saturation
        x = torch.cat([torch.rand(4, 1, 32, 32), torch.zeros(1, 1, 32, 32),
                       torch.ones(1, 1, 32, 32)])
        out = m(x)
        assert torch.isfinite(out).all()
        assert ((out >= 1850.0) & (out <= 2450.0)).all()
        assert (out - 2150.0).abs().max() > 200  # saturated outputs reach the margin
        # per-tile standardization: brightness and contrast changes do not change the output
        assert torch.allclose(m(x[:4]), m(0.5 * x[:4] + 0.2), atol=1e-2)


def test_augment_is_a_permutation_and_deterministic():
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4).repeat(8, 1, 1, 1)
    a = augment_batch(x, "dihedral", torch.Generator().manual_seed(1))
    b = augment_batch(x, "dihedral", torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.equal(a.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert not torch.equal(a, x)
    h = augment_batch(x, "hflip", torch.Generator().manual_seed(1))
    assert all(torch.equal(h[i], x[i]) or torch.equal(h[i], x[i].flip(-1)) for i in range(16))


# ---- training -----------------------------------------------------------------------------------
def test_training_reduces_loss_and_beats_the_mean(fitted, store):
    p, m = fitted
    assert m["epochs_run"] == 10 and 1 <= m["best_epoch"] <= 10
    assert m["train_loss_history"][-1] < 0.5 * m["train_loss_history"][0]
    assert m["n_train"] + m["n_val"] == store.n_tiles == 90
    assert m["n_val"] == 9  # 10 % of the tiles
    x, y = all_tiles(store)
    pred = p.predict(x)
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    assert rmse < 0.6 * float(np.std(y))  # predicting the mean would give std(y)
    assert m["val_rmse"] < 0.8 * float(np.std(y))
    for k in ("train_rmse", "train_mape", "val_rmse", "val_mape", "train_seconds", "images_per_s"):
        assert np.isfinite(m[k]) and m[k] > 0
    # center/half_range from the training targets, with a 1.5 margin
    assert abs(m["center"] - y.mean()) < 30
    assert m["half_range"] == pytest.approx(1.5 * np.max(np.abs(y - m["center"])), rel=0.1)
    assert pred.min() >= m["center"] - m["half_range"] and pred.max() <= m["center"] + m[
        "half_range"]


def test_split_lots_holds_whole_lots_out(store):
    _, lots = store.all_tiles()
    p = WideResNetPredictor(split="lots", val_fraction=0.34, seed=3)
    tr, va = p.split_indices(lots)
    assert len(set(lots[tr]) & set(lots[va])) == 0
    assert len(set(lots[va])) == 2 and len(tr) + len(va) == len(lots)
    tile_tr, tile_va = p.split_indices(lots, "tile")
    assert len(set(lots[tile_tr]) & set(lots[tile_va])) > 0  # the tile split mixes lots
    m = WideResNetPredictor(split="lots", epochs=1, **TINY).fit(store, CTX)
    assert len(m["val_lots"]) == 1
    assert m["n_val"] == int(store.counts[m["val_lots"][0]])


def test_leave_lots_out_eval_reports_both(store):
    p = WideResNetPredictor(epochs=1, leave_lots_out_eval=True, **TINY)
    m = p.fit(store, CTX)
    assert m["split"] == "tile" and m["n_val"] == 9
    assert np.isfinite(m["lots_val_mape"]) and m["lots_val_mape"] > 0
    assert "lots_val_rmse" in m


def test_determinism_same_seed_same_predictions(store):
    x, _ = all_tiles(store)
    preds = []
    for _ in range(2):
        p = WideResNetPredictor(epochs=2, max_tiles_per_lot=8, augment="dihedral", **TINY)
        m = p.fit(store, CTX)
        preds.append(p.forward(x))
    assert m["n_train"] + m["n_val"] == 48
    assert torch.equal(preds[0], preds[1])


# ---- inference, checkpoints ---------------------------------------------------------------------
def test_forward_is_differentiable_and_layer_is_named(fitted):
    p, _ = fitted
    x = torch.rand(2, 1, 48, 48, requires_grad=True)
    out = p.forward(x)
    assert out.shape == (2,)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    layers = dict(p.torch_module().named_modules())
    assert WideResNetPredictor.gradcam_layer in layers
    assert plugins.get("predictor", "wideresnet") is WideResNetPredictor


def test_untrained_forward_is_a_user_error():
    with pytest.raises(UserError, match="not trained"):
        WideResNetPredictor().predict(torch.rand(1, 1, 32, 32))


def test_save_load_reproduces_predictions_exactly(fitted, store, tmp_path):
    p, _ = fitted
    x, _ = all_tiles(store)
    path = tmp_path / "predictor.pt"
    p.save(path)
    q = WideResNetPredictor.load(path)
    assert q.get_params() == p.get_params()
    assert torch.equal(p.forward(x), q.forward(x))
    # forward chunks large CPU batches; results do not depend on the batch size (eval mode)
    assert len(x) > 64
    parts = torch.cat([q.forward(x[i: i + 7]) for i in range(0, len(x), 7)])
    assert torch.allclose(parts, q.forward(x), atol=1e-3)
    assert np.allclose(q.predict(x, batch_size=256), parts.detach().numpy(), atol=1e-3)
    state = torch.load(path, weights_only=True)["state"]
    assert isinstance(state["center"], float) and state["depth"] == 10


def test_checkpoint_of_another_depth_is_a_clear_error(fitted, tmp_path):
    p, _ = fitted
    with pytest.raises(RuntimeError, match="WideResNet-10-1 .* WideResNet-16-1"):
        WideResNetPredictor(depth=16).load_state_dict(p.state_dict())
    # a tampered checkpoint (params of depth 16, weights of depth 10) via the core loader
    path = tmp_path / "other.pt"
    save_component(p, path)
    payload = torch.load(path, weights_only=True)
    payload["params"]["depth"] = 16
    torch.save(payload, path)
    with pytest.raises(UserError, match="does not fit 'wideresnet'.*WideResNet-10-1"):
        WideResNetPredictor.load(path)
    # weights of another width under matching depth/widen labels: strict loading refuses
    state = WideResNetPredictor(depth=10, widen=2)
    state._module = WideResNet(10, 2)
    bad = state.state_dict()
    bad["widen"] = 1
    with pytest.raises(RuntimeError, match="size mismatch"):
        WideResNetPredictor(depth=10, widen=1).load_state_dict(bad)


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickled_object_checkpoint_is_refused(fitted, tmp_path):
    p, _ = fitted
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"format": "mxplain-checkpoint-1", "kind": "predictor", "name": "wideresnet",
               "params": p.get_params(), "state": {**p.state_dict(), "x": Evil(marker)}}
    torch.save(payload, path)
    assert not marker.exists()
    with pytest.raises(UserError, match="refused"):
        read_checkpoint(path)
    with pytest.raises(UserError, match="refused"):
        WideResNetPredictor.load(path)
    assert not marker.exists()


def test_cosine_schedule_trains_and_decays(store):
    p = WideResNetPredictor(epochs=2, lr_schedule="cosine", **TINY)
    m = p.fit(store, CTX)
    assert m["epochs_run"] == 2 and np.isfinite(m["val_mape"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_channels_last_matches_cpu(fitted, store):
    p, _ = fitted
    x, _ = all_tiles(store)
    cpu = p.forward(x)
    p.to("cuda")
    try:
        gpu = p.forward(x)
        assert gpu.dtype == torch.float32 and gpu.device.type == "cuda"
        assert torch.allclose(gpu.cpu(), cpu, atol=0.02 * float(p.torch_module().half_range))
        q = WideResNetPredictor(epochs=1, **TINY)
        m = q.fit(store, RunContext(device=torch.device("cuda"), progress=False))
        assert np.isfinite(m["val_rmse"]) and q.torch_module().fc.weight.device.type == "cuda"
    finally:
        p.to("cpu")


# ---- per-epoch training checkpoints, resume, numerical faults ---------------------------------------
class _Interrupt(Exception):
    """Stands for a kill: raised right after a chosen epoch's checkpoint is written."""


def _record_saves(monkeypatch):
    """Epochs saved from now on (a resumed training saves only the epochs it ran)."""
    from mxplain.training import TrainingCheckpoint

    saved, save = [], TrainingCheckpoint.save

    def record(self, e, extra=None):
        saved.append((self.path.name, e))
        save(self, e, extra)

    monkeypatch.setattr(TrainingCheckpoint, "save", record)
    return saved


def _interrupt_after(monkeypatch, epoch, key_part=""):
    from mxplain.training import TrainingCheckpoint

    save = TrainingCheckpoint.save

    def save_then_stop(self, e, extra=None):
        save(self, e, extra)
        if e == epoch and key_part in str(self.path):
            raise _Interrupt(f"killed after epoch {e}")

    monkeypatch.setattr(TrainingCheckpoint, "save", save_then_stop)


# dropout (global torch RNG), dihedral flips (the shuffle generator) and a cosine schedule: every
# piece of state a resumed training must restore
RESUME = dict(epochs=3, patience=3, dropout=0.2, augment="dihedral", lr_schedule="cosine",
              max_tiles_per_lot=8, **TINY)


def test_killed_training_resumes_bit_identically(store, tmp_path, monkeypatch):
    ref = WideResNetPredictor(**RESUME)
    ref_m = ref.fit(store, CTX)
    ctx = RunContext(progress=False, batch_size=64, training_state_path=tmp_path / "p.training.pt")
    with monkeypatch.context() as mp:
        _interrupt_after(mp, 1)
        with pytest.raises(_Interrupt):
            WideResNetPredictor(**RESUME).fit(store, ctx)
    assert (tmp_path / "p.training.pt").exists()
    torch.manual_seed(99)  # a new process: other global random states
    np.random.seed(99)
    got = WideResNetPredictor(**RESUME)
    saved = _record_saves(monkeypatch)
    got_m = got.fit(store, ctx)
    assert saved == [("p.training.pt", 2), ("p.training.pt", 3)]  # epoch 1 was not run again
    a, b = ref.state_dict()["model"], got.state_dict()["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for k in ("train_loss_history", "val_loss_history", "best_epoch", "epochs_run", "val_rmse"):
        assert ref_m[k] == got_m[k], k


def test_both_trainings_of_leave_lots_out_eval_resume(store, tmp_path, monkeypatch):
    params = dict(RESUME, epochs=2, leave_lots_out_eval=True)
    ref_m = WideResNetPredictor(**params).fit(store, CTX)
    base = tmp_path / "p.training.pt"
    ctx = RunContext(progress=False, batch_size=64, training_state_path=base)
    with monkeypatch.context() as mp:
        _interrupt_after(mp, 1, key_part="-lots")  # the second training, the first one finished
        with pytest.raises(_Interrupt):
            WideResNetPredictor(**params).fit(store, ctx)
    assert base.exists() and (tmp_path / "p.training-lots.pt").exists()
    saved = _record_saves(monkeypatch)
    got_m = WideResNetPredictor(**params).fit(store, ctx)
    assert saved == [("p.training-lots.pt", 2)]  # the finished first training was not rerun
    for k in ("val_loss_history", "lots_val_rmse", "lots_best_epoch", "val_rmse"):
        assert ref_m[k] == got_m[k], k


def test_nan_loss_stops_with_one_line_and_keeps_the_last_checkpoint(store, tmp_path, monkeypatch):
    calls = {"validated": False, "n": 0}
    scaled = WideResNet.scaled

    def nan_in_epoch_2(self, x):
        out = scaled(self, x)
        if not self.training:
            calls["validated"] = True  # epoch 1 is over
        elif calls["validated"]:
            calls["n"] += 1
            if calls["n"] >= 3:  # epoch 2, from its third step on
                out = out * float("nan")
        return out

    monkeypatch.setattr(WideResNet, "scaled", nan_in_epoch_2)
    path = tmp_path / "p.training.pt"
    ctx = RunContext(progress=False, batch_size=64, training_state_path=path)
    with pytest.raises(UserError) as exc:
        WideResNetPredictor(epochs=3, patience=3, **TINY).fit(store, ctx)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("wideresnet: training loss is NaN at epoch 2, step 3;")
    assert f"last good checkpoint kept at {str(path)!r} (epoch 1)" in msg and "lr" in msg
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["modules"]["model"].values()
               if v.is_floating_point())


def test_huge_learning_rate_is_a_clear_error(store):
    with pytest.raises(UserError, match=r"wideresnet: .*(NaN|infinite|diverged)"):
        WideResNetPredictor(epochs=2, patience=2, **{**TINY, "lr": 1e30}).fit(store, CTX)
