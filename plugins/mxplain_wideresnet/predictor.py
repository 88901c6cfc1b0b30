"""The WideResNet peak-stress regressor as an mxplain Predictor (seed 000, supplement B).

Training follows the paper: per-image standardization, horizontal flips, MSE loss (here on the
tanh-scaled target), Adam with learning rate 1e-3, minibatches of 64, 10 % of the tiles held out for
validation and early stopping on the validation loss (best weights restored). ``split = "lots"``
holds whole lots out instead (leave-lots-out), which measures generalisation to unseen lots.
"""

from __future__ import annotations

import math
import time
from typing import ClassVar

import numpy as np
import torch

from mxplain.errors import UserError
from mxplain.interfaces import Predictor, RunContext
from mxplain.store import train_val_split
from mxplain.training import TrainingCheckpoint

from .fit_steps import (  # noqa: F401  (augment_batch, MARGIN: the names tests import here)
    MARGIN,
    Progress,
    Trainer,
    augment_batch,
    fit_metrics,
    record_epoch,
    target_range,
)
from .model import WideResNet, check_depth

SPLITS = ("tile", "lots")
AUGMENTS = ("none", "hflip", "dihedral")
SCHEDULES = ("constant", "cosine")
# On a CPU, large batches of 64 px tiles fall out of cache: batches of 256 ran 4x slower per image
# than batches of 32-64 (benchmarks/wideresnet_throughput.py), so forward passes are chunked.
CPU_CHUNK = 64


def _is_cuda(device: torch.device) -> bool:
    return torch.device(device).type == "cuda"


def _metrics(pred: np.ndarray, y: np.ndarray, lots: np.ndarray, prefix: str) -> dict:
    """Per-tile RMSE and MAPE (%) plus the lot-level MAPE of the mean tile prediction."""
    if len(pred) == 0:
        return {}
    err = pred - y
    out = {
        f"{prefix}_rmse": float(np.sqrt(np.mean(err**2))),
        f"{prefix}_mape": float(100.0 * np.mean(np.abs(err) / np.abs(y))),
    }
    lot_err = []
    for lot in np.unique(lots):
        m = lots == lot
        lot_err.append(abs(pred[m].mean() - y[m][0]) / abs(y[m][0]))
    out[f"{prefix}_lot_mape"] = float(100.0 * np.mean(lot_err))
    out[f"{prefix}_tiles"] = int(len(pred))
    return out


class WideResNetPredictor(Predictor):
    """WideResNet-d-k regressor: tiles ``(N, 1, H, W)`` in [0, 1] -> property per tile (psi).

    Parameters (config keys of ``[predictor]``)
    ----------
    depth, widen, dropout : the WRN-d-k architecture (depth = 6n + 4; the paper: 28, 1, 0).
    epochs, batch_size, lr, patience : Adam training with early stopping on the validation loss.
    val_fraction : share of tiles (``split="tile"``) or lots (``split="lots"``) held out.
    split : ``"tile"`` (the paper) or ``"lots"`` (leave-lots-out: whole lots held out).
    augment : ``"hflip"`` (the paper), ``"dihedral"`` (flips and 90 degree rotations) or ``"none"``.
    leave_lots_out_eval : also train a second model with ``split="lots"`` only to report its
        validation metrics (``lots_val_*``); the kept model is the one of ``split``.
    seed : seeds weights, split, batch order and augmentation.
    max_tiles_per_lot : use at most this many tiles of each lot (0, the default, or ``None``: all;
        0 rather than ``None`` so the resolved config can be written as TOML).
    lr_schedule : ``"constant"`` (the paper) or ``"cosine"`` (per-step cosine decay from ``lr`` to
        ``lr / 100`` over ``epochs``; steadier validation loss for short CPU budgets).
    """

    name: ClassVar[str] = "wideresnet"
    differentiable: ClassVar[bool] = True
    gradcam_layer: ClassVar[str] = "block3"
    test_params: ClassVar[dict] = {"depth": 10, "widen": 1, "epochs": 2, "batch_size": 8,
                                   "patience": 2, "seed": 0}
    #: the size of the tiles it was trained on (set by ``fit`` and ``load_state_dict``)
    tile_size_: int | None = None

    def __init__(self, depth: int = 28, widen: int = 1, dropout: float = 0.0, epochs: int = 30,
                 batch_size: int = 64, lr: float = 1e-3, val_fraction: float = 0.1,
                 patience: int = 5, split: str = "tile", augment: str = "hflip",
                 leave_lots_out_eval: bool = False, seed: int = 0,
                 max_tiles_per_lot: int | None = 0, lr_schedule: str = "constant"):
        self.depth = depth
        self.widen = widen
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.val_fraction = val_fraction
        self.patience = patience
        self.split = split
        self.augment = augment
        self.leave_lots_out_eval = leave_lots_out_eval
        self.seed = seed
        self.max_tiles_per_lot = max_tiles_per_lot
        self.lr_schedule = lr_schedule
        self._module: WideResNet | None = None

    # ---- parameters ---------------------------------------------------------------------------
    @classmethod
    def check_params(cls, params: dict) -> None:
        """Ranges of every ``[predictor]`` key (types were checked against the signature)."""
        p = {**cls.param_defaults(), **params}

        def bad(key, why):
            raise UserError(f"[predictor] {key} {why}, got {p[key]!r}")

        try:
            check_depth(p["depth"])
        except ValueError as exc:
            raise UserError(f"[predictor] depth: {exc}") from None
        for key, low in (("widen", 1), ("epochs", 1), ("batch_size", 2), ("patience", 1)):
            if int(p[key]) < low:
                bad(key, f"must be an integer >= {low}")
        if not 0.0 <= float(p["dropout"]) < 1.0:
            bad("dropout", "must be in [0, 1)")
        if not float(p["lr"]) > 0:
            bad("lr", "must be > 0")
        if not 0.0 < float(p["val_fraction"]) < 1.0:
            bad("val_fraction", "must be in (0, 1)")
        for key, choices in (("split", SPLITS), ("augment", AUGMENTS),
                             ("lr_schedule", SCHEDULES)):
            if p[key] not in choices:
                bad(key, f"must be one of {', '.join(choices)}")
        if p["max_tiles_per_lot"] is not None and int(p["max_tiles_per_lot"]) < 0:
            bad("max_tiles_per_lot", "must be >= 1 (or 0 for all)")

    def _check_params(self) -> None:
        self.check_params(self.get_params())

    @staticmethod
    def n_weights(depth: int, widen: int) -> int:
        """The network's number of weights (convolutions and the regression layer)."""
        n, ch = check_depth(depth), [16, 16 * int(widen), 32 * int(widen), 64 * int(widen)]
        total = 9 * ch[0] + ch[3] + 1
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            total += 9 * c_in * c_out + (c_in * c_out if c_in != c_out else 0)
            total += 9 * c_out * c_out + (n - 1) * 18 * c_out * c_out
        return total

    @classmethod
    def footprint(cls, params: dict, data) -> list:
        """Weights with gradients, Adam moments and the best-epoch copy (x6, float32); one
        training batch's saved activations (~6 tensors per block); every training tile (uint8)."""
        from mxplain.interfaces import Footprint

        p = {**cls.param_defaults(), **params}
        depth, widen, bs = int(p["depth"]), int(p["widen"]), int(p["batch_size"])
        out = [Footprint("the network's weights, gradients and Adam state", ("depth", "widen"),
                         memory=24 * cls.n_weights(depth, widen), on_device=True)]
        if data is not None:
            n, s2 = check_depth(depth), data.tile_size ** 2
            per_tile = 4 * 6 * n * widen * s2 * (16 + 8 + 4)
            out.append(Footprint("one training batch's activations", ("batch_size", "widen"),
                                 memory=bs * per_tile, on_device=True))
            limit = int(p["max_tiles_per_lot"] or 0)
            n_tiles = min(data.n_tiles, limit * data.n_lots) if limit else data.n_tiles
            out.append(Footprint("every training tile in memory", ("max_tiles_per_lot",),
                                 memory=n_tiles * s2))
        return out

    # ---- data ---------------------------------------------------------------------------------
    def _load_data(self, store) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """uint8 tiles ``(N, H, W)``, float64 targets ``(N,)`` and lot indices ``(N,)``."""
        tiles, lots = store.all_tiles(max_per_lot=int(self.max_tiles_per_lot or 0),
                                      seed=int(self.seed))
        if len(tiles) == 0:
            raise UserError(f"tile store {str(store.path)!r} holds no tiles to train on")
        y = np.asarray(store.properties, dtype=np.float64)[lots]
        return torch.from_numpy(tiles), y, lots

    def split_indices(self, lot_idx: np.ndarray, split: str | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Train and validation positions (see :func:`mxplain.store.train_val_split`)."""
        return train_val_split(lot_idx, float(self.val_fraction),
                               self.split if split is None else split, int(self.seed) + 1)

    # ---- training -----------------------------------------------------------------------------
    def fit(self, store, ctx: RunContext | None = None) -> dict:
        ctx = ctx or RunContext()
        self._check_params()
        x, y, lot_idx = self._load_data(store)
        metrics = self._fit_arrays(x, y, lot_idx, ctx, self.split)
        if self.leave_lots_out_eval:
            other = type(self)(**{**self.get_params(), "split": "lots",
                                  "leave_lots_out_eval": False})
            m = other._fit_arrays(x, y, lot_idx, ctx, "lots", desc="wideresnet (leave-lots-out)",
                                  key="lots")
            for k in ("val_rmse", "val_mape", "val_lot_mape", "best_epoch", "epochs_run",
                      "train_seconds"):
                if k in m:
                    metrics[f"lots_{k}"] = m[k]
        return metrics

    def _fit_arrays(self, x: torch.Tensor, y: np.ndarray, lot_idx: np.ndarray, ctx: RunContext,
                    split: str, desc: str = "wideresnet", key: str = "") -> dict:
        """Train one model; a per-epoch checkpoint (``ctx.training_state_path``, one file per
        ``key``) lets a killed training continue from its last finished epoch, bit-identically."""
        from tqdm.auto import tqdm

        from mxplain import ddp as ddp_mod

        t_start = time.perf_counter()
        # under torchrun: DistributedDataParallel, each rank a share of every global batch
        ddp = ddp_mod.setup(ctx.device)
        device = ddp.device
        torch.manual_seed(int(self.seed))
        g = torch.Generator().manual_seed(int(self.seed))
        tr, va = self.split_indices(lot_idx, split)
        center, half = target_range(y[tr])
        z = torch.from_numpy(((y - center) / half).astype(np.float32))
        trainer = self._trainer(x, z, tr, center, half, ddp, g)
        self.tile_size_ = int(x.shape[-1])
        ckpt = TrainingCheckpoint.for_run(
            ctx, self.name if not key else f"{self.name} ({key})", key=key,
            signature={**self.get_params(), "split": split, "n": int(len(x)),
                       "tile_size": int(x.shape[-1])})
        ckpt.bind(modules={"model": trainer.module}, optimizers={"adam": trainer.opt},
                  schedulers={"lr": trainer.sched}, generators={"shuffle": g})
        p = Progress.restored(ckpt.restore(map_location=device))
        bar = tqdm(total=int(self.epochs) * trainer.n_batches,
                   initial=p.epochs_run * trainer.n_batches, desc=desc,
                   disable=not ctx.progress or not ddp.is_main, leave=False)
        try:
            for epoch in range(p.epochs_run + 1, int(self.epochs) + 1):
                if p.stopped:
                    break
                self._run_epoch(trainer, p, epoch, x[va], z[va], ckpt, bar, ctx)
        finally:
            bar.close()
        if p.best_state is None:
            raise UserError(f"{self.name}: training diverged (validation loss is not finite); "
                            f"lower [predictor] lr (now {self.lr})")
        module = trainer.module
        module.load_state_dict(p.best_state)
        module.eval()
        self._module = module
        self.device = device
        pred = center + half * self._scaled(module, x, device, ctx).astype(np.float64)
        metrics = fit_metrics(p, t_start, tr, va, split, lot_idx, center, half)
        metrics.update(_metrics(pred[tr], y[tr], lot_idx[tr], "train"))
        metrics.update(_metrics(pred[va], y[va], lot_idx[va], "val"))
        return metrics

    def _trainer(self, x: torch.Tensor, z: torch.Tensor, tr: np.ndarray, center: float,
                 half: float, ddp, g: torch.Generator) -> Trainer:
        """A fresh network (its initial weights drawn now), Adam and the optional cosine
        schedule, and the tiles and targets on the device."""
        from mxplain import ddp as ddp_mod

        device, cuda = ddp.device, _is_cuda(ddp.device)
        module = WideResNet(int(self.depth), int(self.widen), float(self.dropout))
        module.set_target_range(center, half)
        module = module.to(device)
        if cuda:
            module = module.to(memory_format=torch.channels_last)
        step_forward = ddp_mod.wrap(module, ddp)  # module.scaled, or its DDP wrapper
        opt = torch.optim.Adam(module.parameters(), lr=float(self.lr))
        n_batches = math.ceil(len(tr) / int(self.batch_size))
        sched = None
        if self.lr_schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=int(self.epochs) * n_batches, eta_min=float(self.lr) / 100)
        # on a GPU the uint8 tiles move once (N x H x W bytes), batches are gathered there
        return Trainer(module, step_forward, opt, sched, ddp, g, x.to(device) if cuda else x,
                       z.to(device), torch.from_numpy(tr), int(self.batch_size), self.augment,
                       self._to_device)

    def _run_epoch(self, trainer: Trainer, p: Progress, epoch: int, x_va: torch.Tensor,
                   z_va: torch.Tensor, ckpt: TrainingCheckpoint, bar, ctx: RunContext) -> None:
        """One epoch: the optimiser steps, a NaN/Inf check, the validation loss, early stopping
        and the epoch's checkpoint."""
        from mxplain import ddp as ddp_mod

        device = trainer.ddp.device

        def report(train):
            bar.set_postfix(epoch=epoch, train=f"{train:.4f}",
                            val=f"{p.best_loss:.4f}" if p.best_epoch else "-")

        t0 = time.perf_counter()
        run_loss, run_n, step_loss = trainer.epoch(bar, report if ctx.progress else None)
        ckpt.check_losses(step_loss, epoch, f"lower [predictor] lr (now {self.lr})")
        ddp_mod.sync_buffers(trainer.module, trainer.ddp)  # BatchNorm statistics: rank 0's
        if _is_cuda(device):
            torch.cuda.synchronize(device)
        p.train_time += time.perf_counter() - t0
        p.seen += run_n
        val_loss = float(np.mean((self._scaled(trainer.module, x_va, device, ctx) -
                                  z_va.numpy()) ** 2))
        record_epoch(p, trainer.module, epoch, run_loss / max(run_n, 1), val_loss,
                     int(self.patience))
        bar.set_postfix(epoch=epoch, train=f"{run_loss / max(run_n, 1):.4f}",
                        val=f"{val_loss:.4f}")
        if trainer.ddp.is_main:  # rank 0 writes; every rank restores the same file on resume
            ckpt.save(epoch, extra=p.extra())

    @staticmethod
    def _to_device(xb: torch.Tensor, device: torch.device) -> torch.Tensor:
        xb = xb.to(device, dtype=torch.float32, non_blocking=True)
        if _is_cuda(device):
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def _scaled(self, module: WideResNet, x_u8: torch.Tensor, device: torch.device,
                ctx: RunContext) -> np.ndarray:
        """The tanh output of ``module`` in evaluation mode for uint8 tiles ``(N, H, W)``."""
        module.eval()
        out = []
        bs = max(int(getattr(ctx, "batch_size", 256) or 256), 1)
        if not _is_cuda(device):
            bs = min(bs, CPU_CHUNK)
        with torch.no_grad():
            for i in range(0, len(x_u8), bs):
                xb = self._to_device(x_u8[i: i + bs].float().div_(255.0).unsqueeze(1), device)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=_is_cuda(device)):
                    out.append(module.scaled(xb).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    # ---- inference ----------------------------------------------------------------------------
    def _require(self) -> WideResNet:
        if self._module is None:
            raise UserError("the wideresnet predictor is not trained: fit it or load a checkpoint "
                            "([predictor] checkpoint = \"PATH\")")
        return self._module

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        module = self._require()
        if module.training:  # eval() walks every layer: once, not on every call
            module.eval()
        if tiles.ndim == 3:
            tiles = tiles.unsqueeze(1)
        if tiles.dtype == torch.uint8:
            tiles = tiles.float() / 255.0
        xb = self._to_device(tiles, self.device)
        if _is_cuda(self.device):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return module(xb).float()
        if len(xb) <= CPU_CHUNK:
            return module(xb)
        return torch.cat([module(c) for c in torch.split(xb, CPU_CHUNK)])

    def torch_module(self) -> WideResNet | None:
        return self._module

    def compile(self) -> list[str]:
        """``torch.compile`` the network's forward (the weights and the state dict are untouched)."""
        module = self._require()
        module.forward = torch.compile(module.forward)
        return ["wideresnet.forward"]

    def to(self, device):
        super().to(device)
        if self._module is not None:
            self._module.to(self.device)
            if _is_cuda(self.device):
                self._module.to(memory_format=torch.channels_last)
        return self

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        module = self._require()
        return {
            "model": {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
            "center": float(module.center),
            "half_range": float(module.half_range),
            "depth": int(module.depth),
            "widen": int(module.widen),
            "tile_size": int(self.tile_size_) if self.tile_size_ is not None else 0,
        }

    def load_state_dict(self, state: dict) -> None:
        depth, widen = int(state["depth"]), int(state["widen"])
        if (depth, widen) != (int(self.depth), int(self.widen)):
            raise RuntimeError(
                f"checkpoint holds a WideResNet-{depth}-{widen} but the predictor is configured "
                f"as WideResNet-{int(self.depth)}-{int(self.widen)} (depth/widen differ)")
        module = WideResNet(depth, widen, float(self.dropout))
        module.load_state_dict(state["model"])  # strict: RuntimeError on any other layout
        module.set_target_range(float(state["center"]), float(state["half_range"]))
        module.eval()
        self._module = module
        self.tile_size_ = int(state.get("tile_size", 0)) or None
        self.to(self.device)
