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
