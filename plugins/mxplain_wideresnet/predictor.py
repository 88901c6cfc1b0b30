"""The WideResNet peak-stress regressor as an mxplain Predictor (seed 000, supplement B).

Training follows the paper: per-image standardization, horizontal flips, MSE loss (here on the
tanh-scaled target), Adam with learning rate 1e-3, minibatches of 64, 10 % of the tiles held out for
validation and early stopping on the validation loss (best weights restored). ``split = "lots"``
holds whole lots out instead (leave-lots-out), which measures generalisation to unseen lots.
"""

from __future__ import annotations

import copy
import math
import time
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from mxplain.errors import UserError
from mxplain.interfaces import Predictor, RunContext
from mxplain.store import train_val_split
from mxplain.training import TrainingCheckpoint

from .model import WideResNet, check_depth

SPLITS = ("tile", "lots")
AUGMENTS = ("none", "hflip", "dihedral")
SCHEDULES = ("constant", "cosine")
# On a CPU, large batches of 64 px tiles fall out of cache: batches of 256 ran 4x slower per image
# than batches of 32-64 (benchmarks/wideresnet_throughput.py), so forward passes are chunked.
CPU_CHUNK = 64
MARGIN = 1.5  # half_range = MARGIN * max |y - center| over the training targets


def _is_cuda(device: torch.device) -> bool:
    return torch.device(device).type == "cuda"


def augment_batch(x: torch.Tensor, mode: str, g: torch.Generator, n: int | None = None,
                  rows: slice = slice(None)) -> torch.Tensor:
    """Random per-tile flips (``hflip``) or the 8 dihedral transforms (``dihedral``) of a
    ``(B, 1, H, W)`` batch; random draws come from the CPU generator ``g`` (deterministic). With
    ``n`` and ``rows`` (DDP), ``x`` is rows ``rows`` of a global batch of ``n``: the draws are the
    global batch's, so every rank's generator stays in step."""
    if mode == "none" or len(x) == 0:
        return x
    b, m = len(x), (len(x) if n is None else n)
    flip = (torch.rand(m, generator=g) < 0.5)[rows]
    x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    if mode == "dihedral":
        vflip = (torch.rand(m, generator=g) < 0.5)[rows]
        x = torch.where(vflip.view(b, 1, 1, 1).to(x.device), x.flip(-2), x)
        if x.shape[-1] == x.shape[-2]:
            rot = (torch.rand(m, generator=g) < 0.5)[rows].view(b, 1, 1, 1).to(x.device)
            x = torch.where(rot, x.transpose(-1, -2), x)  # with the flips: all 8 symmetries
    return x


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
        self.device = torch.device("cpu")
        self.tile_size: int | None = None

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
        cuda = _is_cuda(device)
        seed = int(self.seed)
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)

        tr, va = self.split_indices(lot_idx, split)
        y_tr = y[tr]
        center = float(y_tr.mean())
        half = MARGIN * float(np.max(np.abs(y_tr - center)))
        if not half > 1e-9 * max(1.0, abs(center)):
            half = max(1.0, 0.05 * abs(center))  # a single training target: a fixed margin
        z = torch.from_numpy(((y - center) / half).astype(np.float32))

        module = WideResNet(int(self.depth), int(self.widen), float(self.dropout))
        module.set_target_range(center, half)
        module = module.to(device)
        if cuda:
            module = module.to(memory_format=torch.channels_last)
        step_forward = ddp_mod.wrap(module, ddp)  # module.scaled, or its DDP wrapper
        opt = torch.optim.Adam(module.parameters(), lr=float(self.lr))
        self.tile_size = int(x.shape[-1])

        bs = int(self.batch_size)
        n_batches = math.ceil(len(tr) / bs)
        epochs = int(self.epochs)
        sched = None
        if self.lr_schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, T_max=epochs * n_batches, eta_min=float(self.lr) / 100)
        ckpt = TrainingCheckpoint.for_run(
            ctx, self.name if not key else f"{self.name} ({key})", key=key,
            signature={**self.get_params(), "split": split, "n": int(len(x)),
                       "tile_size": int(x.shape[-1])})
        ckpt.bind(modules={"model": module}, optimizers={"adam": opt},
                  schedulers={"lr": sched}, generators={"shuffle": g})
        best_loss, best_epoch, best_state, wait = math.inf, 0, None, 0
        train_time, seen, epochs_run, stopped = 0.0, 0, 0, False
        history = []
        resumed = ckpt.restore(map_location=device)
        if resumed is not None:
            e = resumed.extra
            best_loss, best_epoch, wait = float(e["best_loss"]), int(e["best_epoch"]), int(e["wait"])
            best_state = e["best_state"] or None
            train_time, seen, stopped = float(e["train_time"]), int(e["seen"]), bool(e["stopped"])
            epochs_run = resumed.epoch
            history = [(float(a), float(b)) for a, b in e["history"]]
        hint = f"lower [predictor] lr (now {self.lr})"
        tr_t = torch.from_numpy(tr)
        # on a GPU the uint8 tiles move once (N x H x W bytes), batches are gathered there
        x_dev = x.to(device) if cuda else x
        z_dev = z.to(device)
        bar = tqdm(total=epochs * n_batches, initial=epochs_run * n_batches, desc=desc,
                   disable=not ctx.progress or not ddp.is_main, leave=False)
        try:
            for epoch in range(epochs_run + 1, epochs + 1):
                if stopped:
                    break
                module.train()
                t0 = time.perf_counter()
                order = tr_t[torch.randperm(len(tr), generator=g)]
                run_loss, run_n = torch.zeros((), device=device), 0
                # per-step losses stay on the device: one NaN/Inf check per epoch, no extra syncs
                step_loss = torch.zeros(n_batches, device=device)
                for b in range(n_batches):
                    idx = order[b * bs: (b + 1) * bs]
                    if len(idx) < 2 * ddp.world and (run_n > 0 or ddp.active):
                        continue  # BatchNorm needs 2 samples (per rank); a leftover is skipped
                    n_global, rows = len(idx), slice(ddp.rank, None, ddp.world)
                    idx = ddp_mod.shard(idx, ddp)
                    idx_d = idx.to(device)
                    xb = x_dev[idx_d].float().div_(255.0).unsqueeze(1)
                    xb = self._to_device(augment_batch(xb, self.augment, g, n_global, rows),
                                         device)
                    zb = z_dev[idx_d]
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                        s = step_forward(xb)
                    loss = F.mse_loss(s.float(), zb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if sched is not None:
                        sched.step()
                    step_loss[b] = loss.detach()
                    run_loss += loss.detach() * len(idx)
                    run_n += len(idx)
                    bar.update(1)
                    if ctx.progress and (b % 10 == 0 or b == n_batches - 1):
                        bar.set_postfix(epoch=epoch, train=f"{float(run_loss) / run_n:.4f}",
                                        val=f"{best_loss:.4f}" if best_epoch else "-")
                ckpt.check_losses(step_loss, epoch, hint)
                ddp_mod.sync_buffers(module, ddp)  # BatchNorm statistics: rank 0's everywhere
                if cuda:
                    torch.cuda.synchronize(device)
                run_loss = float(run_loss)
                train_time += time.perf_counter() - t0
                seen += run_n
                epochs_run = epoch
                val_loss = float(np.mean((self._scaled(module, x[va], device, ctx) -
                                          z[va].numpy()) ** 2))
                history.append((run_loss / max(run_n, 1), val_loss))
                if val_loss < best_loss:
                    best_loss, best_epoch, wait = val_loss, epoch, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    wait += 1
                bar.set_postfix(epoch=epoch, train=f"{run_loss / max(run_n, 1):.4f}",
                                val=f"{val_loss:.4f}")
                stopped = wait >= int(self.patience)
                if ddp.is_main:  # rank 0 writes; every rank restores the same file on resume
                    ckpt.save(epoch, extra={
                        "best_loss": best_loss, "best_epoch": best_epoch, "wait": wait,
                        "best_state": best_state or {}, "train_time": train_time, "seen": seen,
                        "stopped": stopped, "history": [list(h) for h in history]})
        finally:
            bar.close()
        if best_state is None:
            raise UserError(f"{self.name}: training diverged (validation loss is not finite); "
                            f"lower [predictor] lr (now {self.lr})")
        module.load_state_dict(best_state)
        module.eval()
        self._module = module
        self.device = device

        pred = center + half * self._scaled(module, x, device, ctx).astype(np.float64)
        metrics = {
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "best_val_loss": float(best_loss),
            "train_seconds": float(time.perf_counter() - t_start),
            "images_per_s": float(seen / train_time) if train_time > 0 else float("nan"),
            "train_loss_history": [float(a) for a, _ in history],
            "val_loss_history": [float(b) for _, b in history],
            "n_train": int(len(tr)),
            "n_val": int(len(va)),
            "split": split,
            "val_lots": [int(i) for i in np.unique(lot_idx[va])] if split == "lots" else [],
            "center": center,
            "half_range": half,
        }
        metrics.update(_metrics(pred[tr], y[tr], lot_idx[tr], "train"))
        metrics.update(_metrics(pred[va], y[va], lot_idx[va], "val"))
        return metrics

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
        self.device = torch.device(device)
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
            "tile_size": int(self.tile_size) if self.tile_size is not None else 0,
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
        self.tile_size = int(state.get("tile_size", 0)) or None
        self.to(self.device)
