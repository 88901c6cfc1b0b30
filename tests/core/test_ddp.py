"""WideResNet training under torchrun (DistributedDataParallel, gloo on the CPU): two ranks train,
hold the same weights at the end, and only rank 0 writes the training checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "plugins" / "wideresnet"))  # blobs.py
from blobs import make_store  # noqa: E402
from tiny_run import DATA  # noqa: E402

from mxplain import ddp  # noqa: E402
from mxplain_wideresnet.predictor import augment_batch  # noqa: E402

RANK_SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
from mxplain import RunContext
from mxplain.store import TileStore
from mxplain_wideresnet.predictor import WideResNetPredictor

out = sys.argv[2]
rank = int(os.environ["RANK"])
ctx = RunContext(progress=False, batch_size=64)
ctx.training_state_path = os.path.join(out, f"training-seen-by-{rank}.pt") if rank else \\
    os.path.join(out, "training.pt")
p = WideResNetPredictor(depth=10, widen=1, batch_size=8, epochs=2, patience=5, lr=2e-3, seed=0,
                        augment="dihedral")
m = p.fit(TileStore.open(sys.argv[1]), ctx)
torch.save({k: v for k, v in p.state_dict()["model"].items()}, os.path.join(out, f"rank{rank}.pt"))
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump({"world": int(os.environ["WORLD_SIZE"]), "epochs_run": m["epochs_run"],
               "val_loss_history": m["val_loss_history"],
               "train_loss_history": m["train_loss_history"]}, f)
"""


@pytest.mark.slow
def test_torchrun_two_ranks_train_with_ddp_and_agree(tmp_path):
    store = make_store(tmp_path / "tiles.zarr", n_lots=4, tiles_per_lot=10, tile_size=32, seed=1)
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(script), str(store.path), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["epochs_run"] == 2
    assert all(np.isfinite(r0["train_loss_history"])) and all(np.isfinite(r0["val_loss_history"]))
    # same validation losses (same weights and BatchNorm statistics) on both ranks, every epoch
    assert r0["val_loss_history"] == r1["val_loss_history"]
    # each rank trained on its own half of every batch: their running train losses differ
    assert r0["train_loss_history"] != r1["train_loss_history"]
    w0 = torch.load(out / "rank0.pt", weights_only=True)
    w1 = torch.load(out / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    init = {k: v for k, v in __import__("mxplain_wideresnet.model", fromlist=["WideResNet"])
            .WideResNet(10, 1, 0.0).state_dict().items()}
    assert any(not torch.equal(w0[k], init[k]) for k in w0 if w0[k].is_floating_point())
    # rank 0 alone writes the per-epoch training checkpoint
    assert (out / "training.pt").exists()
    assert not (out / "training-seen-by-1.pt").exists()


def test_augment_shard_draws_the_global_batch():
    """A rank's share of a global batch is flipped exactly as in the whole batch, and the generator
    advances alike on every rank."""
    x = torch.rand(6, 1, 8, 8)
    g = torch.Generator().manual_seed(3)
    whole = augment_batch(x.clone(), "dihedral", g)
    states = []
    for rank in (0, 1):
        gr = torch.Generator().manual_seed(3)
        part = augment_batch(x[rank::2].clone(), "dihedral", gr, n=6, rows=slice(rank, None, 2))
        assert torch.equal(part, whole[rank::2])
        states.append(gr.get_state())
    assert torch.equal(states[0], states[1]) and torch.equal(states[0], g.get_state())


@pytest.mark.parametrize("env,expected", [
    ({}, False), ({"RANK": "0"}, False), ({"RANK": "0", "WORLD_SIZE": "1"}, False),
    ({"WORLD_SIZE": "2"}, False), ({"RANK": "1", "WORLD_SIZE": "2"}, True),
])
def test_launched_only_under_torchrun_with_more_than_one_process(monkeypatch, env, expected):
    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert ddp.launched() is expected


def test_one_process_trains_alone_unchanged(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    state = ddp.setup("cpu")
    assert state == ddp.DDPState(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    assert not state.active and state.is_main
    batch = torch.arange(7)
    assert ddp.shard(batch, state) is batch
    net = torch.nn.BatchNorm1d(2)
    net.running_mean += 3
    ddp.barrier(state)
    ddp.sync_buffers(net, state)
    assert net.running_mean.tolist() == [3.0, 3.0]


def test_a_ranks_share_of_a_global_batch_is_strided():
    batch = torch.arange(10)
    shares = [ddp.shard(batch, ddp.DDPState(rank=r, world=3)).tolist() for r in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert not ddp.DDPState(rank=2, world=3).is_main and ddp.DDPState(world=3).active


def test_wrap_gives_the_models_scaled_output():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 1)

        def scaled(self, x):
            return 10 * self.lin(x)

    model, x = Scaled(), torch.ones(3, 2)
    call = ddp.wrap(model, ddp.DDPState())
    assert call == model.scaled and torch.equal(call(x), model.scaled(x))
    assert torch.equal(ddp.ScaledForward(model)(x), model.scaled(x))


def test_main_without_a_predictor_to_train_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    config = tmp_path / "c.toml"
    config.write_text(DATA)
    assert ddp.main([str(config), "--out", str(tmp_path / "run")]) == 2
    said = capsys.readouterr()
    assert said.out + said.err == \
        "error: mxplain.ddp trains the [predictor]; the config has none to train\n"
    assert not (tmp_path / "run").exists()
