"""Training on several GPUs (or CPU processes) with ``torchrun`` and DistributedDataParallel.

Under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` in the environment, ``WORLD_SIZE`` > 1) a predictor
that supports it (the WideResNet) trains with DDP: the process group uses NCCL on CUDA (one GPU per
process, ``cuda:LOCAL_RANK``) and gloo on the CPU. Every rank draws the same epoch permutation and
the same augmentation draws from the same seeded generator, and takes a strided share of each
global batch of ``batch_size`` tiles (``batch[rank::world]``, as ``DistributedSampler`` shards an
epoch), so a global step sees ``batch_size`` tiles whatever the number of processes and the
gradient DDP averages is the global batch's. Ranks hold identical weights after every step; rank 0
alone writes the training checkpoint and the outputs.

The predictor stage of a run, on 4 GPUs, then the rest of the run (predictor reloaded)::

    torchrun --nproc_per_node 4 -m mxplain.ddp CONFIG --out RUN
    mxplain run CONFIG --out RUN --resume
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class DDPState:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True under ``torchrun`` with more than one process."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device | str) -> DDPState:
    """Join (or reuse) the process group when launched by torchrun; else a one-process state.
    On CUDA each process takes ``cuda:LOCAL_RANK``."""
    device = torch.device(device)
    if not launched():
        return DDPState(device=device)
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device(f"cuda:{local}")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DDPState(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local,
                    device=device)


def shard(batch: torch.Tensor, state: DDPState) -> torch.Tensor:
    """This rank's share of a global batch (strided, like ``DistributedSampler``)."""
    return batch[state.rank :: state.world] if state.active else batch


def barrier(state: DDPState) -> None:
    if state.active:
        import torch.distributed as dist

        dist.barrier()


def sync_buffers(module: torch.nn.Module, state: DDPState) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: after an epoch each rank's
    last forward updated them from its own share, and validation must agree across ranks."""
    if state.active:
        import torch.distributed as dist

        for b in module.buffers():
            dist.broadcast(b.data, src=0)


class ScaledForward(torch.nn.Module):
    """Wraps a model so that DDP's forward is its ``scaled`` output (DDP syncs through forward)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.scaled(x)


def wrap(module: torch.nn.Module, state: DDPState) -> torch.nn.Module:
    """``module.scaled`` as a callable: DDP-wrapped when active, the bound method otherwise."""
    if not state.active:
        return module.scaled
    from torch.nn.parallel import DistributedDataParallel

    ids = [state.device.index] if state.device is not None and state.device.type == "cuda" else None
    return DistributedDataParallel(ScaledForward(module), device_ids=ids)


def main(argv=None) -> int:
    """``torchrun ... -m mxplain.ddp CONFIG --out RUN``: the data and predictor stages of a run
    (rank 0 writes the tile store first, then every rank trains; rank 0 saves the predictor so
    that ``mxplain run CONFIG --out RUN --resume`` reloads it)."""
    import argparse
    import json
    from pathlib import Path

    from mxplain import config as config_mod
    from mxplain import pipeline, plugins
    from mxplain.device import resolve_device
    from mxplain.errors import UserError
    from mxplain.interfaces import RunContext
    from mxplain.runfolder import RunFolder, write_atomic
    from mxplain.store import TileStore
    from mxplain.training import remove_training_states, seed_everything

    ap = argparse.ArgumentParser(prog="python -m mxplain.ddp", description=main.__doc__)
    ap.add_argument("config")
    ap.add_argument("--out", default="mxplain-run")
    ap.add_argument("--device", default=None)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
        if "predictor" not in cfg or "checkpoint" in cfg["predictor"]:
            raise UserError("mxplain.ddp trains the [predictor]; the config has none to train")
        state = setup(resolve_device(args.device or cfg["run"]["device"]))
        out = Path(args.out)
        folder = None
        ctx = RunContext(device=state.device, out_dir=out, seed=int(cfg["run"]["seed"]),
                         progress=state.is_main,
                         batch_size=config_mod.fixed_batch_size(cfg["run"]))
        if state.is_main:
            folder = RunFolder(out, resume=args.resume, overwrite=False,
                               config_hash=pipeline.config_hash(cfg))
        try:
            if state.is_main:
                write_atomic(out / "config.toml", config_mod.to_toml(cfg))
                data_params = {k: v for k, v in cfg["data"].items() if k != "name"}
                dataset = plugins.get("dataset", cfg["data"]["name"])(**data_params)
                folder.claim("tiles.zarr")
                store_path = dataset.build(out / "tiles.zarr", ctx, resume=args.resume).path
                (out / "models").mkdir(parents=True, exist_ok=True)
                paths = [str(store_path)]
            else:
                paths = [None]
            if state.active:
                import torch.distributed as dist

                dist.broadcast_object_list(paths, src=0)
            store = TileStore.open(paths[0])
            pcfg = cfg["predictor"]
            model = plugins.get("predictor", pcfg["name"])(
                **{k: v for k, v in pcfg.items() if k != "name"})
            model.to(state.device)
            train_state = out / "models" / "predictor.training.pt"
            seed_everything(pipeline._stage_seed(ctx.seed, "predictor"))
            ctx.training_state_path = train_state
            metrics = model.fit(store, ctx)
            if state.is_main:
                model.save(out / "models" / "predictor.pt")
                write_atomic(out / "models" / "predictor_fit.json", json.dumps(metrics))
                folder.mark("predictor")
                remove_training_states(train_state)
                print(f"predictor trained on {state.world} process(es): {out / 'models'}")
            barrier(state)
        finally:
            if folder is not None:
                folder.release()
    except UserError as exc:
        print(f"error: {exc}", flush=True)
        return 2
    finally:
        if launched():
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
