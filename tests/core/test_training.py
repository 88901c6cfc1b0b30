"""mxplain.training: per-epoch checkpoints are plain data, restore every random state, refuse a
checkpoint of another training, and report a NaN loss with the last good checkpoint's path."""

import random

import numpy as np
import pytest
import torch

from mxplain.errors import UserError
from mxplain.interfaces import RunContext
from mxplain.training import (
    TrainingCheckpoint,
    remove_training_states,
    rng_state,
    seed_everything,
    set_rng_state,
    training_path,
)


def _draws(g):
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
            torch.rand(3, generator=g).tolist())


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    g = torch.Generator().manual_seed(7)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = rng_state({"g": g})
    torch.save(state, tmp_path / "rng.pt")
    expected = _draws(g)
    _draws(g)  # move everything on
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), {"g": g})
    assert _draws(g) == expected


def _loop(ckpt_path, epochs, stop_after=None):
    seed_everything(0)
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    ckpt = TrainingCheckpoint(ckpt_path, "toy", signature={"epochs": epochs})
    ckpt.bind(modules={"net": net}, optimizers={"opt": opt}, schedulers={"s": sched},
              generators={"g": g})
    state = ckpt.restore()
    start, hist = (state.epoch, state.extra["hist"]) if state else (0, [])
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    for epoch in range(start + 1, epochs + 1):
        for step in range(4):
            idx = torch.randperm(32, generator=g)[:8]
            # every random source counts: torch (dropout, g), numpy and Python's random
            noise = torch.from_numpy(np.random.randn(8, 4)).float() * 0.01
            loss = (net(x[idx] + noise) ** 2).mean() * (1 + random.random())
            ckpt.check_loss(loss, epoch, step + 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        hist.append(float(loss.detach()))
        ckpt.save(epoch, extra={"hist": hist})
        if stop_after == epoch:
            return None
    return net.state_dict(), hist


def test_interrupted_loop_resumes_bit_identically(tmp_path):
    ref, ref_hist = _loop(None, 3)
    path = tmp_path / "toy.training.pt"
    assert _loop(path, 3, stop_after=1) is None
    torch.manual_seed(123)  # the resumed process starts from other global random states
    np.random.seed(5)
    got, hist = _loop(path, 3)
    assert hist == ref_hist
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_checkpoint_of_another_training_is_refused(tmp_path):
    path = tmp_path / "x.training.pt"
    _loop(path, 3, stop_after=1)
    ckpt = TrainingCheckpoint(path, "toy", signature={"epochs": 4})
    with pytest.raises(UserError, match="belongs to another training"):
        ckpt.restore()
    path.write_bytes(b"garbage")
    with pytest.raises(UserError, match="not readable"):
        TrainingCheckpoint(path, "toy", signature={"epochs": 3}).restore()


def test_nan_loss_names_component_epoch_step_and_kept_checkpoint(tmp_path):
    path = tmp_path / "m.training.pt"
    ckpt = TrainingCheckpoint(path, "toy")
    with pytest.raises(UserError, match="no good checkpoint yet"):
        ckpt.check_loss(torch.tensor(float("nan")), 1, 0)
    ckpt.save(1)
    with pytest.raises(UserError) as exc:
        ckpt.check_losses(torch.tensor([0.5, float("inf"), float("nan")]), 2, hint="lower lr")
    msg = str(exc.value)
    assert "toy: training loss is infinite at epoch 2, step 2; lower lr;" in msg
    assert f"last good checkpoint kept at {str(path)!r} (epoch 1)" in msg and "\n" not in msg
    assert path.exists()
    ckpt.check_loss(1.0, 3, 0)  # finite: nothing happens


def test_paths_from_the_run_context_and_cleanup(tmp_path):
    base = tmp_path / "predictor.training.pt"
    assert TrainingCheckpoint.for_run(RunContext(), "x").path is None
    ctx = RunContext(training_state_path=base)
    assert TrainingCheckpoint.for_run(ctx, "x").path == base
    lots = TrainingCheckpoint.for_run(ctx, "x", key="lots").path
    assert lots == training_path(base, "lots") == tmp_path / "predictor.training-lots.pt"
    for p in (base, lots, tmp_path / "predictor.training.pt.tmp", tmp_path / "predictor.pt",
              tmp_path / "editor.training.pt"):
        p.write_bytes(b"x")
    remove_training_states(base)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["editor.training.pt", "predictor.pt"]


def test_state_differences_names_every_differing_key():
    from mxplain.checkpoint import state_differences

    a = {"net": {"w": torch.ones(2), "b": torch.zeros(1)}, "epoch": 3, "seed": None}
    assert state_differences(a, {"net": {"w": torch.ones(2), "b": torch.zeros(1)}, "epoch": 3,
                                 "seed": None}) == []
    b = {"net": {"w": torch.tensor([1.0, 2.0]), "b": torch.zeros(2)}, "epoch": 4, "extra": 1}
    assert state_differences(a, b) == ["epoch", "extra", "net.b", "net.w", "seed"]
    assert state_differences({"x": torch.ones(1)}, {"x": 1.0}) == ["x"]
